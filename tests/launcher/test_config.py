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
    ],
)
def test_bad_configs_are_rejected_with_the_key_named(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(DEFAULT, [override])


def test_list_values_are_typed():
    cfg = load_config(DEFAULT, ["data.domains=[striped, clean, noisy-thick]", "model.ctx_init=null", "model.n_ctx=8"])
    assert cfg.data.domains == ["striped", "clean", "noisy-thick"]
    assert cfg.model.ctx_init is None
    with pytest.raises(ConfigError, match=r"data.domains: expected"):
        load_config(DEFAULT, ["data.domains=[1, 2, 3]"])


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
