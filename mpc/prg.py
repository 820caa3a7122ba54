"""Cryptographic randomness for CrypTen's shares, masks and dealer material.

CrypTen 0.4.1 draws every random ring element from ``torch.Generator`` s (Mersenne Twister),
and its TTP dealer seeds its per-client generators with ``torch.randint`` on torch's default
generator, whose seed is fixed in a fresh process. A Mersenne-Twister seed is effectively
32 bits (``manual_seed(s)`` and ``manual_seed(s + 2**32)`` give the same stream), so one client
that knows its own stream can search the dealer's seed space and unmask every Beaver opening.

Here every stream is ChaCha20 (RFC 8439, through the ``cryptography`` package's OpenSSL
binding) keyed with 256 bits from ``os.urandom``. :mod:`mpc.compat` installs these functions in
place of CrypTen's ``generate_random_ring_element`` / ``generate_kbit_random_tensor`` and of
every place where CrypTen creates or seeds a generator; a ``torch.Generator`` reaching them is
refused, so a code path that was missed fails loudly instead of silently using weak randomness.
"""

from __future__ import annotations

import hashlib
import math
import os

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

KEY_BYTES = 32  # ChaCha20 key: 256 bits
KEY_WORDS = KEY_BYTES // 8  # a key travels between parties as 4 int64 words
BLOCK_BYTES = 64  # one ChaCha20 block


class ChaChaGenerator:
    """A ChaCha20 keystream read as uniform 64-bit ring elements.

    Two parties holding the same key draw identical streams as long as they make the same
    calls in the same order (CrypTen's PRZS and TTP protocols rely on this). One key encrypts
    at most 2^32 blocks of 64 bytes (256 GiB) before the block counter would wrap; a party
    makes a new key at every ``crypten.init``.
    """

    def __init__(self, key: bytes | None = None, device: str | torch.device = "cpu") -> None:
        key = os.urandom(KEY_BYTES) if key is None else bytes(key)
        if len(key) != KEY_BYTES:
            raise ValueError(f"ChaCha20 needs a {KEY_BYTES}-byte key, got {len(key)} bytes")
        self._key = key
        self._pos = 0  # bytes drawn so far
        self._stream = self._encryptor(0)
        # public fingerprint (never the key): lets tests check that two parties share a stream
        self._fingerprint = int.from_bytes(hashlib.sha256(b"secfpp-prg" + key).digest()[:8], "big") >> 1
        self.device = torch.device(device)

    def initial_seed(self) -> int:
        """A 63-bit fingerprint of the key (CrypTen's tests compare generators this way)."""
        return self._fingerprint

    def _encryptor(self, block: int):  # noqa: ANN202 - cryptography's CipherContext
        # OpenSSL's 16-byte ChaCha20 IV: the 32-bit block counter (little endian), then the nonce (0)
        return Cipher(algorithms.ChaCha20(self._key, block.to_bytes(4, "little") + bytes(12)), mode=None).encryptor()

    def random_bytes(self, n: int) -> bytes:
        self._pos += n
        return self._stream.update(bytes(n))

    def tell(self) -> int:
        """Bytes drawn so far: where the stream stands."""
        return self._pos

    def seek(self, pos: int) -> None:
        """Stand at byte ``pos`` of the stream again, so the next draws repeat what was drawn from
        there. The dealer's look-ahead (:mod:`mpc.lookahead`) rewinds with it: material it made
        ahead and never sent is made again, the same words, if it is asked for after all."""
        if not 0 <= pos < BLOCK_BYTES * 2**32:
            raise ValueError(f"a ChaCha20 stream position is in [0, 2^38) bytes, got {pos}")
        block, skip = divmod(int(pos), BLOCK_BYTES)
        self._stream = self._encryptor(block)
        self._stream.update(bytes(skip))
        self._pos = int(pos)

    def int64(self, size) -> torch.Tensor:
        """Uniform elements of Z_2^64 as signed int64, shape ``size``."""
        shape = tuple(size) if not isinstance(size, int) else (size,)
        n = math.prod(shape)
        words = np.frombuffer(self.random_bytes(8 * n), dtype=np.int64)
        return torch.from_numpy(words.copy()).reshape(shape)


def key_to_words(key: bytes) -> torch.Tensor:
    """A key as an int64 tensor, so it can travel over CrypTen's tensor channels."""
    return torch.from_numpy(np.frombuffer(key, dtype=np.int64).copy())


def words_to_key(words: torch.Tensor) -> bytes:
    return words.to(torch.int64).cpu().numpy().tobytes()


def _generator_for(generator, kwargs: dict) -> ChaChaGenerator:
    if generator is None:
        import crypten

        device = kwargs.get("device") or "cpu"
        generator = crypten.generators["local"][torch.device(device)]
    if not isinstance(generator, ChaChaGenerator):
        raise TypeError(
            f"refusing to draw shares from {type(generator).__name__}: CrypTen's randomness must come "
            "from mpc.prg.ChaChaGenerator (is mpc.compat applied in this process?)"
        )
    return generator


def _on_device(t: torch.Tensor, kwargs: dict) -> torch.Tensor:
    device = kwargs.get("device")
    if device is not None and torch.device(device).type == "cuda":  # CrypTen stays on CPU here
        from crypten.cuda import CUDALongTensor

        return CUDALongTensor(t.to(device))
    return t


def generate_random_ring_element(size, ring_size=(2**64), generator=None, **kwargs) -> torch.Tensor:
    """Drop-in for ``crypten.common.rng.generate_random_ring_element`` (uniform over Z_2^64)."""
    if ring_size != 2**64:
        raise ValueError(f"only the 64-bit ring is supported, got ring_size={ring_size}")
    return _on_device(_generator_for(generator, kwargs).int64(size), kwargs)


def generate_kbit_random_tensor(size, bitlength=None, generator=None, **kwargs) -> torch.Tensor:
    """Drop-in for ``crypten.common.rng.generate_kbit_random_tensor``: uniform in [0, 2^bitlength)."""
    bitlength = 64 if bitlength is None else int(bitlength)
    words = _generator_for(generator, kwargs).int64(size)
    if bitlength < 64:
        words = words & ((1 << bitlength) - 1)
    return _on_device(words, kwargs)
