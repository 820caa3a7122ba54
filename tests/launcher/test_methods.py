"""The table of methods is the only place for method facts, and the typed round info loses nothing.

* every strategy class finds its own row (:func:`launcher.methods.of_strategy`) and repeats none
  of the table's facts as class attributes;
* the audit's upload check computes the aggregate with the strategies' own formulas, so a run's
  prompts pass it and a perturbed one fails it;
* every field of :class:`launcher.metrics.RoundInfo` reaches the metrics row.
"""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import torch

from launcher import methods
from launcher.config import from_dict
from launcher.metrics import MPCCost, RoundInfo, RoundRow
from launcher.strategies import PromptFL, RoundInput, TrueDomains
from launcher.world import World

FACTS = ("name", "uses_mpc", "trains", "class_prompt", "clusters", "uploads", "observer")


def test_every_strategy_reads_its_facts_from_the_table():
    for name, m in methods.METHODS.items():
        cls = m.strategy_class()
        assert methods.of_strategy(cls) is m
        assert not set(FACTS) & set(vars(cls)), (name, set(FACTS) & set(vars(cls)))
        assert m.aggregate in (None, *methods.AGGREGATES) and m.observer in methods.OBSERVERS
    assert [m for m in methods.METHODS if "servers" in methods.get(m).topologies] == ["secfpp"]


def _upload_check(method, uploads, weights, final, assignment=None, min_size=3):
    from launcher.audit.sources import upload_check

    run = SimpleNamespace(method=method, final={c: {"domain_ctx": d} for c, d in final.items()},
                          assignment=assignment, cfg=from_dict({"method": method, "mpc": {"min_cluster_size": min_size}}))
    return upload_check(run, uploads, weights)


def test_the_audit_checks_the_formula_the_strategies_run():
    g = torch.Generator().manual_seed(0)
    uploads = {i: torch.randn(2, 3, generator=g) for i in range(7)}
    weights = {i: 5 + 3 * i for i in range(7)}
    domains = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2}
    inp = RoundInput(0, uploads, weights, torch.zeros(2, 3), domains)
    for method, strategy, labels in (("promptfl", PromptFL, None), ("truedomain", TrueDomains, domains)):
        cfg = from_dict({"method": method, "evaluation": {"gather": True}})
        final = strategy(cfg, World()).aggregate(inp).prompts
        assert _upload_check(method, uploads, weights, final, labels) < 1e-6, method
        bad = {**final, 4: final[4] + 1e-3}
        assert _upload_check(method, uploads, weights, bad, labels) > 5e-4, method
    # a cluster under min_cluster_size gets the all-client mean, in the audit as in the run
    labels = {i: (0 if i < 5 else 1) for i in range(7)}
    expect = torch.stack(list(uploads.values())).mean(0)
    assert _upload_check("clustered", uploads, weights, {**{i: expect for i in range(7)}}, labels) > 1e-3
    final = {i: (torch.stack([uploads[j] for j in range(5)]).mean(0) if i < 5 else expect) for i in range(7)}
    assert _upload_check("clustered", uploads, weights, final, labels) < 1e-6
    assert _upload_check("local", uploads, weights, uploads) == 0.0
    assert _upload_check("dpfedavg", uploads, weights, uploads) is None  # noised: no plaintext formula


def test_every_round_info_field_reaches_the_metrics_row():
    info = RoundInfo(k=3, assignment={0: 1, 1: 0}, mpc=MPCCost(2.0, 10, 100), mpc_phases={"lloyd": {"rounds": 7}},
                     insecure_dealer=False, dropped=[1], epsilon=4.0, epsilon_heuristic=True,
                     noise_multiplier=1.5, sigma=0.7, reproducible_noise=False)
    parts = [{"acc": {0: 0.5}, "train_s": 1.0, "agg_s": 2.0, "info": info.to_wire()},
             {"acc": {1: 0.7}, "train_s": 1.0, "agg_s": 2.0,
              "info": dataclasses.replace(info, mpc=MPCCost(3.0, 11, 90), assignment={}).to_wire()}]
    row = RoundRow.from_parts("secfpp", 0, 0, parts, {0: 0, 1: 1}).to_json()
    combined = {"mpc", "dropped", "assignment"}  # combined over parts, under the row's own names
    for f in dataclasses.fields(RoundInfo):
        if f.name not in combined:
            assert row[f.name] == getattr(info, f.name), f.name
    assert row["mpc"] == {"seconds": 3.0, "rounds": 11, "bytes_per_party": 100}
    assert row["dropouts"] == [1] and row["assignment"] == {"0": 1, "1": 0} and "ari" in row
