"""The DP baselines add exactly the noise they claim: measured on the released values."""

from __future__ import annotations

import torch

from launcher.config import load_config
from launcher.dp_strategies import DPFedAvg, DPFPL
from launcher.strategies import RoundInput
from launcher.world import World
from prompts import dp_mechanisms as dp


def _std_close(t: torch.Tensor, want: float, rel: float = 0.05) -> bool:
    return abs(float(t.std()) / want - 1) < rel


def test_dpfedavg_noise_is_noise_multiplier_times_clip_on_the_sum():
    cfg = load_config(None, ["method=dpfedavg", "dp.epsilon=4", "dp.clip=0.5"])
    strat = DPFedAvg(cfg, World())
    D_init = torch.zeros(64, 64)
    n_clients = 5
    out = strat.aggregate(RoundInput(0, {c: D_init.clone() for c in range(n_clients)}, {c: 10 for c in range(n_clients)}, D_init))
    released = out.prompts[0] - D_init  # no update was made: what moved is the noise / n
    z = dp.calibrate_noise_multiplier(4.0, cfg.dp.delta, cfg.rounds)
    assert _std_close(released, z * 0.5 / n_clients)


def test_dpfpl_shared_gradient_noise_is_sigma_clip_over_batch_and_clients():
    cfg = load_config(None, ["method=dpfpl", "dp.epsilon=4", "dp.clip=0.5", "train.batch_size=16"])
    strat = DPFPL(cfg, World())
    n_clients = 4
    noisy = strat._noisy_mean({c: torch.zeros(64, 64) for c in range(n_clients)}, round_idx=0, step=0)
    sigma = dp.dpfpl_sigma(4.0, cfg.dp.delta, cfg.rounds)
    assert _std_close(noisy, sigma * 0.5 / 16 / n_clients)
