"""Integrity, item 1: DP noise cannot be drawn again from the public seed.

The seed is written into ``config.yaml`` and ``summary.json``. An observer who knows it redraws
the noise exactly as the public code of a seeded run draws it (the formulas are written out
here, not imported, so that this observer does not depend on the code it attacks) and
subtracts it. With secret noise (the default) it misses by the size of the noise; with the
labelled ``dp.reproducible_noise`` opt-in it recovers the noiseless value, which shows the check
able to fail, and the audit's seed observer flags that run as not private.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from launcher.config import load_config
from launcher.dp_strategies import DPFedAvg, DPFPL
from launcher.strategies import RoundInput
from launcher.world import World
from prompts import dp_mechanisms as dp

ROOT = Path(__file__).resolve().parents[2]


def _dpfedavg_error(*overrides: str) -> tuple[float, float]:
    """(observer's error on the clipped sum, noise std) for one DP-FedAvg round of 5 clients."""
    cfg = load_config(None, ["method=dpfedavg", "dp.epsilon=4", "dp.clip=0.5", "seed=3", *overrides])
    D_init = torch.zeros(4, 64)
    g = torch.Generator().manual_seed(1)
    prompts = {c: D_init + 0.05 * torch.randn(4, 64, generator=g) for c in range(5)}
    out = DPFedAvg(cfg, World()).aggregate(RoundInput(0, prompts, {c: 10 for c in prompts}, D_init))
    observed = (out.prompts[0] - D_init) * 5  # clipped sum + noise, from the release
    std = dp.calibrate_noise_multiplier(4.0, cfg.dp.delta, cfg.rounds) * 0.5
    redrawn = torch.randn(observed.shape, generator=torch.Generator().manual_seed(3 * 7919 + 0)) * std
    truth = sum(dp.clip_by_norm(p - D_init, 0.5) for p in prompts.values())
    return float((observed - redrawn - truth).abs().max()), std


def _dpfpl_error(*overrides: str) -> tuple[float, float]:
    """The same for DP-FPL's shared gradient noise of (round 0, step 2)."""
    cfg = load_config(None, ["method=dpfpl", "dp.epsilon=4", "dp.clip=0.5", "train.batch_size=16", "seed=3",
                             *overrides])
    mean = torch.full((4, 64), 0.01)
    noisy = DPFPL(cfg, World())._noisy_mean({c: mean.clone() for c in range(4)}, round_idx=0, step=2)
    seed = int(np.random.SeedSequence([2, 3, 0, 2]).generate_state(1, np.uint64)[0] >> np.uint64(1))
    std = dp.dpfpl_sigma(4.0, cfg.dp.delta, cfg.rounds) * 0.5 / 16 / 4
    redrawn = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed)) * std
    return float((noisy - redrawn - mean).abs().max()), std


@pytest.mark.parametrize("attack", [_dpfedavg_error, _dpfpl_error], ids=["dpfedavg", "dpfpl"])
def test_integrity_dp_noise_cannot_be_redrawn_from_the_public_seed(attack):
    error, std = attack()
    assert error > 0.5 * std, f"the seed's holder removed the noise (error {error:.2e}, noise std {std:.2e})"
    # the control: the labelled reproducible opt-in is exactly what this observer breaks
    error, std = attack("dp.reproducible_noise=true")
    assert error < 1e-4 * std, (error, std)


@pytest.mark.timeout(600)
def test_integrity_audit_seed_observer_flags_reproducible_noise(tmp_path):
    """Real DP-FedAvg runs, audited by the observer who knows the seed: the reproducible run
    is flagged (noise removed to float rounding), the default one is not."""
    from launcher.audit import noise, sources

    verdicts = {}
    for repro in ("false", "true"):
        run = tmp_path / f"run-{repro}"
        done = subprocess.run([sys.executable, "-m", "launcher", "run", "--config", "launcher/configs/default.yaml",
                               "method=dpfedavg", "rounds=2", "train.epochs=1", "dp.epsilon=8",
                               f"dp.reproducible_noise={repro}", "--run-dir", str(run)],
                              cwd=ROOT, capture_output=True, text=True, timeout=400)
        assert done.returncode == 0, done.stderr[-3000:]
        audited = sources.load_run(run)
        uploads = sources.replay_uploads(audited, sources.ClientCache().clients(audited.cfg))
        verdicts[repro] = noise.seed_observer(audited, uploads)
    assert verdicts["true"]["noise_removed"] and verdicts["true"]["recovery_max_abs_error"] < 1e-4
    assert not verdicts["false"]["noise_removed"]
    assert verdicts["false"]["recovery_max_abs_error"] > 0.1 * verdicts["false"]["noise_std"]
