"""The seed-knowing observer: can the DP noise be drawn again and subtracted?

A run's config (seed included) is written into ``config.yaml`` and ``summary.json``, so it is
public. If DP noise were a function of it, anyone could redraw the noise and remove it from
the release: "(epsilon, delta)-DP for what the aggregate releases" would not hold. This
observer tries exactly that on DP-FedAvg's last round: from the two public global prompts it
gets ``clipped sum + noise``; it redraws the noise the way a ``dp.reproducible_noise`` run
draws it (:func:`launcher.dp_strategies.dpfedavg_noise_seed`) and subtracts it. The audit
knows the true clipped sum (the replayed uploads), so it measures how close the observer came.
Recovery to float rounding flags the release **not private**; with secret noise the error is
the size of the noise itself. DP-FPL's noise is per step and not replayed here: its row
carries only the label (``reproducible_noise``).
"""

from __future__ import annotations

from typing import Any

import torch

#: the observer "recovered" the noiseless sum when its error is below this fraction of the noise std
RECOVERED_FRACTION = 1e-3


def seed_observer(run: Any, uploads: dict[int, torch.Tensor]) -> dict[str, Any] | None:
    """DP-FedAvg's last round seen by an observer who knows the public seed (None: not DP-FedAvg
    or nothing to compare with)."""
    from launcher.dp_strategies import dpfedavg_noise_seed
    from prompts import dp_mechanisms as dp

    if run.method != "dpfedavg" or run.before_last is None or not uploads:
        return None
    cfg = run.cfg
    ids = sorted(uploads)
    prev = run.before_last[ids[0]]["domain_ctx"].cpu()  # every client holds the same global prompt
    final = run.final[ids[0]]["domain_ctx"].cpu()
    observed = (final - prev) * len(ids)  # clipped sum + noise, from public releases only
    std = dp.calibrate_noise_multiplier(cfg.dp.epsilon, cfg.dp.delta, cfg.rounds) * cfg.dp.clip
    redrawn = dp.gaussian_like(observed, std, dp.SeededNoise(dpfedavg_noise_seed(cfg.seed, cfg.rounds - 1)))
    truth = sum(dp.clip_by_norm(uploads[i].cpu() - prev, cfg.dp.clip) for i in ids)
    error = float((observed - redrawn - truth).abs().max())
    return {"reproducible_noise": bool(cfg.dp.reproducible_noise), "noise_std": std,
            "recovery_max_abs_error": error, "noise_removed": error < RECOVERED_FRACTION * std}
