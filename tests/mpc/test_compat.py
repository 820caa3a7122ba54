"""The CrypTen compatibility layer, checked by CrypTen's own test suite.

CrypTen's tests ship in its wheel (top-level ``test`` package), so they come from the
package index with the library; ``python -m mpc.selftest`` runs them with the fixes
applied in every spawned party. A slice keeps CI fast; the full list is in REFERENCE.md.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mpc.compat import import_crypten


def test_encrypted_state_checkpoints_as_plain_tensors(tmp_path):
    """Encrypted centres go to disk as plain share tensors and load with the strict safe loader;
    no CrypTen class is allow-listed (the project never pickles CrypTen objects)."""
    from mpc.clustering import SecureState

    crypten = import_crypten()
    with crypten.cfg.temp_override({"mpc.provider": "TFP"}):  # one process, no other party: no dealer needed
        crypten.init()
    try:
        x = crypten.cryptensor(torch.tensor([[1.5, -2.0], [0.25, 3.0]]))
        torch.save(SecureState(x, (2,), 16).state_dict(), tmp_path / "s.pt")
        back = SecureState.from_state(torch.load(tmp_path / "s.pt", weights_only=True))
        assert torch.allclose(back.SN.get_plain_text(), x.get_plain_text()) and back.ks == (2,)
        crypten.save(x, tmp_path / "x.pt")  # a pickled MPCTensor is refused by the safe loader
        with pytest.raises(Exception, match="Unsupported global"):
            torch.load(tmp_path / "x.pt", weights_only=True)
    finally:
        crypten.uninit()


def test_a_bare_crypten_init_gets_the_ttp_dealer_not_tfp():
    code = "from mpc.compat import import_crypten; print(import_crypten().cfg.mpc.provider)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "TTP", out.stderr[-2000:]


def test_safe_loader_still_refuses_arbitrary_globals(tmp_path):
    import_crypten()
    path = tmp_path / "evil.pt"
    torch.save({"f": subprocess.Popen}, path)
    with pytest.raises(Exception, match="Unsupported global"):
        torch.load(path)


@pytest.mark.timeout(600)
def test_crypten_own_suite_slice():
    proc = subprocess.run(
        [sys.executable, "-m", "mpc.selftest"],  # mpc.selftest.CI_SLICE
        capture_output=True,
        text=True,
        timeout=580,
    )
    tail = proc.stderr[-3000:]
    assert proc.returncode == 0, tail
    assert "OK" in tail and "Ran " in tail, tail


def test_empty_shells_draw_no_zero_sharing_and_copies_still_work(monkeypatch):
    """``MPCTensor([])`` (the shell of clone / shallow_copy / from_shares) draws nothing from
    the PRZS streams; the copies hold the same values, and real inputs still get a zero sharing."""
    crypten = import_crypten()
    from crypten.mpc.primitives import ArithmeticSharedTensor

    with crypten.cfg.temp_override({"mpc.provider": "TFP"}):
        crypten.init()
    try:
        drawn = []
        przs = ArithmeticSharedTensor.PRZS
        monkeypatch.setattr(ArithmeticSharedTensor, "PRZS", staticmethod(lambda *a, **k: drawn.append(a) or przs(*a, **k)))
        x = crypten.cryptensor(torch.tensor([1.5, -2.0]))
        assert len(drawn) == 1  # a real input: one zero sharing
        copies = [x.clone(), x.shallow_copy(), crypten.mpc.MPCTensor.from_shares(x.share.clone())]
        assert len(drawn) == 1  # the shells drew none
        for c in copies:
            assert torch.allclose(c.get_plain_text(), torch.tensor([1.5, -2.0]))
        assert copies[1]._tensor is x._tensor and copies[0]._tensor is not x._tensor
    finally:
        crypten.uninit()
