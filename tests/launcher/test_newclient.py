"""Issue 21's metrics: ``acc_seen``/``acc_unseen`` partition the domain split, and a held-out
client never trains or shares (real fonts, real tiny CLIP, a real one-round run)."""

from __future__ import annotations

import json

import pytest
import torch

from launcher.config import load_config
from launcher.run import build_clients, client_metrics

SMALL = ["data.n_domains=2", "data.domains=[serif,handwriting]", "data.clients_per_domain=3", "mpc.k_max=3",
         "rounds=1", "train.epochs=1"]


def test_seen_and_unseen_partition_the_domain_split():
    cfg = load_config("launcher/configs/default.yaml", [])
    (c,), backbone, classnames = build_clients(cfg, [0])
    keep = c.train_y >= 4  # classes 0-3 become absent from the training split
    c.train_x, c.train_y = c.train_x[keep], c.train_y[keep]
    c.extra["acc_domain"] = (c.test_x, c.test_y)  # a split with every class
    for zero_shot in (True, False):
        m = client_metrics(c, backbone, classnames, zero_shot, cfg)
        n_unseen = int((c.test_y < 4).sum())
        n = len(c.test_y)
        assert 0 < n_unseen < n
        assert m["acc_seen"] * (n - n_unseen) + m["acc_unseen"] * n_unseen == pytest.approx(m["acc_domain"] * n)


def test_a_held_out_client_never_trains_or_shares(tmp_path):
    from launcher.run import run
    from launcher.world import World
    from prompts.data.federation import from_config, holdout_ids

    with_h = load_config("launcher/configs/benchmark.yaml", [*SMALL, "data.holdout_clients_per_domain=1",
                                                              "method=fedavgd"])
    without = load_config("launcher/configs/benchmark.yaml", [*SMALL, "data.holdout_clients_per_domain=0",
                                                              "method=fedavgd"])
    held = holdout_ids(2, 3, 1)
    assert held == [6, 7] and with_h.n_clients == 6  # after the federation's clients, not among them
    fed_h = from_config(with_h.data, seed=0, only=[0, 4, *held])
    fed = from_config(without.data, seed=0, only=[0, 4])
    for cid in (0, 4):  # the federation's data do not depend on the held-out clients
        a, b = fed_h.client(cid), fed.client(cid)
        assert torch.equal(a.train_labels, b.train_labels) and torch.equal(a.train_images, b.train_images)
    h = fed_h.client(6)
    assert h.domain == 0 and not any(torch.equal(h.train_images[:1], fed.client(0).train_images[i:i + 1])
                                     for i in range(len(fed.client(0).train_labels)))
    summaries = {}
    for name, cfg in (("with", with_h), ("without", without)):
        assert run(cfg, World(), tmp_path / name) == 0
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())
    s, s0 = summaries["with"], summaries["without"]
    assert s["final_acc_per_client"] == s0["final_acc_per_client"]  # nothing of the held-out clients reached training
    assert s["final_acc_domain_per_client"] == s0["final_acc_domain_per_client"]
    assert sorted(map(int, s["final_acc_newclient_per_client"])) == held and "final_acc_newclient" not in s0
    rows = [json.loads(line) for line in (tmp_path / "with" / "metrics.jsonl").read_text().splitlines()]
    assert all(set(map(int, r["acc"])) == set(range(6)) for r in rows)
