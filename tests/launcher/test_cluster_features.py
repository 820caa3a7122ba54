"""What SecPC clusters (``mpc.features``): the drift is the client's own updates only."""

from __future__ import annotations

import torch

from launcher.secure import _ClusterFeatures


def test_drift_accumulates_own_updates_and_ignores_aggregation():
    d0 = torch.zeros(2, 3)
    f = _ClusterFeatures("drift")
    trained = {0: torch.full((2, 3), 1.0), 1: torch.full((2, 3), -1.0)}
    first = f(trained, d0)
    assert torch.equal(first[0], trained[0]) and torch.equal(first[1], trained[1])
    # aggregation installs the same mean prompt in both clients; each then trains by +0.5
    f.installed_now({0: torch.full((2, 3), 5.0), 1: torch.full((2, 3), 5.0)})
    second = f({0: torch.full((2, 3), 5.5), 1: torch.full((2, 3), 5.5)}, d0)
    assert torch.allclose(second[0], torch.full((2, 3), 1.5))  # 1 + 0.5: the mean (5) is not in it
    assert torch.allclose(second[1], torch.full((2, 3), -0.5))


def test_drift_state_round_trips_and_prompt_mode_is_identity():
    d0 = torch.randn(2, 3)
    f = _ClusterFeatures("drift")
    f({0: d0 + 1}, d0)
    f.installed_now({0: d0 + 2})
    g = _ClusterFeatures("drift")
    g.load_state_dict(f.state_dict())
    assert torch.equal(f({0: d0 + 3}, d0)[0], g({0: d0 + 3}, d0)[0])
    p = {0: torch.randn(2, 3)}
    assert _ClusterFeatures("prompt")(p, d0) is p
