"""Config validation: every mistake is caught before any party starts, with a clear message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from launcher.config import ConfigError, load_config

DEFAULT = Path(__file__).resolve().parents[2] / "launcher" / "configs" / "default.yaml"


def test_default_config_loads_and_overrides_apply():
    cfg = load_config(DEFAULT, ["rounds=2", "mpc.k_max=3", "train.lr=0.01", "model.pretrained=null"])
    assert (cfg.rounds, cfg.mpc.k_max, cfg.train.lr, cfg.model.pretrained) == (2, 3, 0.01, None)
    assert cfg.n_clients == cfg.data.n_domains * cfg.data.clients_per_domain


@pytest.mark.parametrize(
    "override, message",
    [
        ("mpc.kmax=3", r"unknown key\(s\) mpc\.kmax.*valid keys here:.*k_max"),
        ("colour=red", r"unknown key\(s\) colour"),
        ("rounds=two", r"rounds: expected int, got 'two'"),
        ("rounds=0", r"rounds: must be >= 1"),
        ("data.alpha=-1", r"data.alpha: Dirichlet concentration must be > 0"),
        ("mpc.k_max=99", r"mpc.k_max=99 exceeds the number of clients"),
        ("mpc.dealer=server", r"mpc.dealer: ttp or tfp"),
        ("mpc.dealer=tfp", r"mpc.dealer=tfp lets party 0 .*mpc.allow_insecure=true"),
        ("method=fedprox", r"method: must be one of"),
        ("data.name=domainnet", r"data.root: required"),
        ("rounds", r"not of the form key=value"),
        ("mpc=3", r"mpc: expected a mapping"),
        ("dp.delta=1.5", r"dp.delta: must be in \(0, 1\)"),
        ("data.domains=[clean,bogus,striped]", r"data.domains: unknown style\(s\) \['bogus'\]"),
        ("data.domains=[clean,striped]", r"data.domains lists 2 styles but data.n_domains=3"),
        ("data.domains=[clean,clean,striped]", r"data.domains: repeated style"),
        ("data.domains=clean", r"data.domains: expected"),
        ("data.shots=0", r"data.shots: must be >= 1"),
        ("mpc.features=gradients", r"mpc.features: drift or prompt"),
        ("data.root=/nonexistent/office", r"data.root: no such directory '/nonexistent/office'"),
        ("data.min_samples=0", r"data.min_samples: must be >= 1"),
        ("train.device=tpu", r"train.device: auto, cpu or cuda"),
        ("mpc.timeout_s=2", r"mpc.timeout_s: must be >= 10 s .*set-up does not count against it"),
        ("mpc.timeout_s=-1", r"mpc.timeout_s: must be >= 10"),
        ("mpc.address=' '", r"mpc.address: empty"),
        ("mpc.topology=ring", r"mpc.topology: peer or servers"),
        ("mpc.servers=1", r"mpc.servers: must be >= 2"),
        ("mpc.deadline_s=0", r"mpc.deadline_s: must be > 0"),
    ],
)
def test_bad_configs_are_rejected_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEFAULT, [override])


def test_list_values_are_typed():
    cfg = load_config(DEFAULT, ["data.domains=[striped, clean, noisy-thick]", "model.ctx_init=null", "model.n_ctx=8"])
    assert cfg.data.domains == ["striped", "clean", "noisy-thick"]
    assert cfg.model.ctx_init is None
    with pytest.raises(ConfigError, match=r"data.domains: unknown style\(s\) \['1', '2', '3'\]"):
        load_config(DEFAULT, ["data.domains=[1, 2, 3]"])  # OmegaConf reads 1 as the string '1' for list[str]


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_cli_reports_config_errors_and_world_size():
    env_cmd = [sys.executable, "-m", "launcher"]
    bad = subprocess.run(env_cmd + ["ranks", "--config", str(DEFAULT), "mpc.kmax=3"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown key(s) mpc.kmax" in bad.stderr
    good = subprocess.run(env_cmd + ["ranks", "--config", str(DEFAULT)], capture_output=True, text=True)
    cfg = load_config(DEFAULT)
    assert good.returncode == 0 and int(good.stdout) == cfg.n_clients + 1  # + TTP dealer
    # SecFPP outside mpirun says which mpirun line to use
    run = subprocess.run(env_cmd + ["run", "--config", str(DEFAULT)], capture_output=True, text=True)
    assert run.returncode == 2 and f"mpirun -np {cfg.n_clients + 1}" in run.stderr


def test_servers_topology_is_secfpps_and_its_world_is_client_ranks_plus_compute_parties_plus_dealer():
    with pytest.raises(ConfigError, match="mpc.topology=servers is secfpp's; method=clustered"):
        load_config(DEFAULT, ["mpc.topology=servers", "method=clustered"])
    with pytest.raises(ConfigError, match=r"mpc.client_ranks=10 exceeds the number of clients \(9\)"):
        load_config(DEFAULT, ["mpc.topology=servers", "mpc.client_ranks=10"])
    from launcher.ranks import world_size

    assert world_size(load_config(DEFAULT, ["mpc.topology=servers", "mpc.client_ranks=4"])) == 4 + 3 + 1
    assert world_size(load_config(DEFAULT, ["mpc.topology=servers", "mpc.servers=2", "mpc.dealer=tfp",
                                                  "mpc.allow_insecure=true"])) == 1 + 2
    scale = load_config(DEFAULT.parent / "scale.yaml")
    assert scale.n_clients == 100 and world_size(scale) == 6
    run = subprocess.run([sys.executable, "-m", "launcher", "run", "--config", str(DEFAULT), "mpc.topology=servers"],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "mpirun -np 5 python -m launcher run" in run.stderr, run.stderr


def test_train_device_resolves_and_cuda_without_a_gpu_is_an_error(monkeypatch):
    import torch

    from prompts.backbone import resolve_device

    assert load_config(DEFAULT).train.device == "auto"
    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ValueError, match="train.device=cuda but torch .* sees no GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


def test_an_empty_client_stops_the_run_before_it_starts(tmp_path):
    """With 10 clients per domain and a 2% test split, some clients get no test image."""
    run = subprocess.run(
        [sys.executable, "-m", "launcher", "run", "--config", str(DEFAULT), "method=local", "rounds=1",
         "data.clients_per_domain=10", "data.min_samples=1", "data.test_fraction=0.02", "--run-dir", str(tmp_path / "r")],
        capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "set-up failed on 1 rank(s), stopping before any MPC starts" in run.stderr
    assert "client 0 (clean) has no test images" in run.stderr
    assert not (tmp_path / "r" / "metrics.jsonl").exists()


def test_setup_verdict_names_every_failed_rank_and_differing_class_lists():
    from launcher.run import verdict

    ok = {"error": None, "classnames": ["cat", "dog"], "device": "cpu"}
    dealer = {"error": None, "classnames": None, "device": None}
    verdict([ok, ok, dealer])
    with pytest.raises(ConfigError, match=r"set-up failed on 2 rank\(s\).*\n  rank 1: no data\n  rank 2: boom"):
        verdict([ok, {**ok, "error": "no data"}, {**dealer, "error": "boom"}])
    with pytest.raises(ConfigError, match=r"class lists differ \(rank 0: \['cat', 'dog'\]; rank 2: \['cat', 'emu'\]\)"):
        verdict([ok, ok, {**ok, "classnames": ["cat", "emu"]}, dealer])


def test_ranks_prints_the_one_host_mpirun_line_with_tcp_on_loopback(capsys):
    from launcher.ranks import main

    assert main(["--config", str(DEFAULT), "--command", "rounds=2"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("mpirun --oversubscribe --mca btl_tcp_if_include lo -np 10 python -m launcher run")
    assert line.endswith("rounds=2")


def test_topology_names_every_rank_of_both_layouts():
    from launcher.topology import roles

    assert roles(6, 2, 9, 3) == ["clients 0,2,4,6,8", "clients 1,3,5,7", "compute party 0", "compute party 1",
                                 "compute party 2", "TTP dealer"]
    assert roles(4, 3, 3) == ["client 0", "client 1", "client 2", "TTP dealer"]


def test_tolerating_a_lost_client_rank_is_the_servers_topologys_and_its_line_asks_for_recovery(capsys):
    from launcher.ranks import main

    with pytest.raises(ConfigError, match="only the servers topology"):
        load_config(DEFAULT, ["mpc.tolerate_rank_loss=true"])
    with pytest.raises(ConfigError, match="must exceed twice mpc.deadline_s"):
        load_config(DEFAULT, ["mpc.topology=servers", "mpc.tolerate_rank_loss=true", "mpc.timeout_s=100"])
    assert main(["--config", str(DEFAULT), "--command", "mpc.topology=servers", "mpc.tolerate_rank_loss=true",
                 "mpc.timeout_s=200"]) == 0
    assert "--enable-recovery -np 5 python -m launcher run" in capsys.readouterr().out
    assert main(["--config", str(DEFAULT), "--command", "mpc.topology=servers"]) == 0
    assert "--enable-recovery" not in capsys.readouterr().out  # main.sh-style lines stay as they were
