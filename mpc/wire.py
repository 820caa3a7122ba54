"""Plaintext messages between MPI ranks without pickle.

mpi4py's lower-case collectives (``bcast``, ``gather``, ``allgather``) pickle whatever they are
given and *unpickle whatever a peer sends*: a malicious or compromised rank could run code in
every other rank. Here a message is JSON (tensors as dtype, shape and base64 of their raw
bytes; dict keys kept with their type) carried in a ``uint8`` buffer by the upper-case,
buffer-based collectives. Decoding can only ever build numbers, strings, lists, tuples, dicts
and tensors.
"""

from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np
import torch

_DTYPES = {str(d): d for d in (torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8,
                               torch.uint8, torch.int16, torch.int32, torch.int64, torch.bool)}


def _to_json(obj: Any) -> Any:
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        if str(t.dtype) not in _DTYPES:
            raise TypeError(f"cannot send a tensor of dtype {t.dtype}")
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes()
        return {"~t": [str(t.dtype), list(t.shape), base64.b64encode(raw).decode("ascii")]}
    if isinstance(obj, tuple):
        return {"~tuple": [_to_json(v) for v in obj]}
    if isinstance(obj, list):
        return [_to_json(v) for v in obj]
    if isinstance(obj, dict):
        return {"~dict": [[_to_json(k), _to_json(v)] for k, v in obj.items()]}
    raise TypeError(f"cannot send {type(obj).__name__} between ranks (numbers, strings, lists, dicts, tensors only)")


def _from_json(obj: Any) -> Any:
    if isinstance(obj, list):
        return [_from_json(v) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "~t" in obj:
        dtype, shape, data = obj["~t"]
        if dtype not in _DTYPES:
            raise ValueError(f"unknown tensor dtype {dtype!r} in a message")
        if not isinstance(shape, list) or not all(isinstance(n, int) and 0 <= n < 2**40 for n in shape):
            raise ValueError(f"malformed tensor shape {shape!r} in a message")
        raw = bytearray(base64.b64decode(data))
        width = torch.empty(0, dtype=_DTYPES[dtype]).element_size()
        if len(raw) != width * math.prod(shape):  # never build a tensor the data does not fill
            raise ValueError(f"a {dtype} tensor of {len(raw)} bytes does not match its shape {shape}")
        if not raw:
            return torch.empty(shape, dtype=_DTYPES[dtype])
        if dtype == "torch.bfloat16":
            return torch.frombuffer(raw, dtype=torch.uint8).view(torch.bfloat16).reshape(shape).clone()
        return torch.frombuffer(raw, dtype=_DTYPES[dtype]).reshape(shape).clone()
    if "~tuple" in obj:
        return tuple(_from_json(v) for v in obj["~tuple"])
    if "~dict" in obj:
        return {_hashable(_from_json(k)): _from_json(v) for k, v in obj["~dict"]}
    raise ValueError(f"malformed message object with keys {sorted(obj)}")


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, (list, tuple)) else key


def encode(obj: Any) -> bytes:
    return json.dumps(_to_json(obj), separators=(",", ":")).encode()


def decode(data: bytes) -> Any:
    return _from_json(json.loads(data.decode()))


def _buf(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, dtype=np.uint8)


def bcast(comm, obj: Any, root: int = 0) -> Any:
    """``obj`` from ``root`` at every rank."""
    data = encode(obj) if comm.Get_rank() == root else b""
    n = np.array([len(data)], dtype=np.int64)
    comm.Bcast(n, root=root)
    buf = np.array(_buf(data)) if comm.Get_rank() == root else np.empty(int(n[0]), dtype=np.uint8)
    comm.Bcast(buf, root=root)
    return decode(buf.tobytes())


def allgather(comm, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order, at every rank."""
    data = _buf(encode(obj))
    sizes = np.empty(comm.Get_size(), dtype=np.int64)
    comm.Allgather(np.array([data.size], dtype=np.int64), sizes)
    out = np.empty(int(sizes.sum()), dtype=np.uint8)
    comm.Allgatherv(data, [out, sizes])
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return [decode(out[offsets[i] : offsets[i + 1]].tobytes()) for i in range(len(sizes))]


def gather(comm, obj: Any, root: int = 0) -> list[Any] | None:
    """Every rank's ``obj`` at ``root`` (in rank order); None elsewhere."""
    data = _buf(encode(obj))
    is_root = comm.Get_rank() == root
    sizes = np.empty(comm.Get_size(), dtype=np.int64) if is_root else None
    comm.Gather(np.array([data.size], dtype=np.int64), sizes, root=root)
    out = np.empty(int(sizes.sum()), dtype=np.uint8) if is_root else None
    comm.Gatherv(data, [out, sizes] if is_root else None, root=root)
    if not is_root:
        return None
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    return [decode(out[offsets[i] : offsets[i + 1]].tobytes()) for i in range(len(sizes))]
