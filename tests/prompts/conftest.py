"""Shared fixtures: real open_clip models, built once per session.

The pretrained tiny CLIP is cached under $SECFPP_CACHE (default ~/.cache/secfpp): the first session pays
its ~1 minute of pretraining, later sessions load it.
"""

from __future__ import annotations

import pytest
import torch

import prompts  # noqa: F401  (torchvision fix)
from prompts.backbone import load_backbone


@pytest.fixture(scope="session")
def tiny():
    return load_backbone("tiny-digits", device="cpu")


@pytest.fixture(scope="session")
def random_tiny():
    return load_backbone("secfpp-tiny", None, device="cpu", seed=0)


@pytest.fixture(scope="session")
def digits_fed():
    from prompts.data import digits_federation

    return digits_federation(n_domains=3, clients_per_domain=2, alpha=0.5, seed=0, min_samples=20, test_fraction=0.25)


def state_bytes(model: torch.nn.Module) -> dict[str, bytes]:
    return {k: v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() for k, v in model.state_dict().items()}
