"""The truedomain strategy: SecPC's aggregation over the true domains (the clustering ceiling)."""

import pytest
import torch

from launcher.config import from_dict
from launcher.strategies import RoundInput, TrueDomains
from launcher.world import World


def test_truedomain_is_secpc_aggregation_over_the_true_partition():
    prompts = {i: torch.full((2, 3), float(i)) for i in range(7)}
    domains = {0: 0, 1: 0, 2: 0, 3: 1, 4: 1, 5: 1, 6: 2}
    inp = RoundInput(round_idx=0, prompts=prompts, weights={i: 10 * i + 1 for i in range(7)},
                     domain_init=torch.zeros(2, 3), domains=domains)
    cfg = from_dict({"method": "truedomain", "mpc": {"min_cluster_size": 2}, "evaluation": {"gather": True}})
    out = TrueDomains(cfg, World()).aggregate(inp)
    assert out.info.k == 3 and out.info.assignment == domains
    for cid, mean in ((0, 1.0), (1, 1.0), (2, 1.0), (3, 4.0), (4, 4.0), (5, 4.0), (6, 3.0)):
        # a plain cluster mean (SecPC's, not sample-weighted); client 6's domain is under
        # min_cluster_size, so it gets the all-client mean, as SecPC hands out
        assert torch.allclose(out.prompts[cid], torch.full((2, 3), mean)), cid
    # without domains (a caller that does not pass them) it cannot group: a loud KeyError, not a silent mean
    with pytest.raises(KeyError):
        TrueDomains(cfg, World()).aggregate(
            RoundInput(round_idx=0, prompts=prompts, weights=inp.weights, domain_init=torch.zeros(2, 3)))
