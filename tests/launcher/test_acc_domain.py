"""compare's rows and table carry the fonts benchmark's second metric, acc_domain."""

import pytest


def test_compare_rows_carry_both_metrics_per_domain():
    from launcher.compare import _aggregate, _table

    def run(seed, acc, acc_dom):
        s = {"final_acc": acc, "final_acc_per_client": {"0": acc, "1": acc},
             "final_acc_per_domain": {"0": acc}, "final_acc_domain": acc_dom,
             "final_acc_domain_per_client": {"0": acc_dom, "1": acc_dom},
             "final_acc_domain_per_domain": {"0": acc_dom}, "k_per_round": [2, 2], "ari_per_round": [0.5, 1.0]}
        return {"method": "secfpp", "epsilon": None, "seed": seed, "summary": s}

    (row,) = _aggregate([run(0, 0.8, 0.5), run(1, 0.6, 0.3)])
    assert row["acc_mean"] == pytest.approx(0.7) and row["acc_domain_mean"] == pytest.approx(0.4)
    assert row["acc_domain_per_domain"] == {"0": pytest.approx(0.4)} and row["ari_per_round"] == [0.5, 1.0]
    assert "acc_domain" in _table([row]).splitlines()[0] and "40.0 ± 10.0" in _table([row])
