"""Session-wide set-up shared by every test folder."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _tiny_clip_pretrained():
    """Pretrain (or load from the cache) the tiny CLIP once, before any test runs.

    On a fresh machine the first use pays ~1-2 minutes of pretraining; tests that start their
    own processes under a time limit (``mpirun`` jobs, ``compare``) must not pay it inside
    that limit. The cache is shared (``$SECFPP_CACHE``) and guarded by a file lock.
    """
    from prompts.tiny_clip import ensure_pretrained

    ensure_pretrained(progress=False)
