"""Image features from the frozen image encoder, computed once and cached.

Why: only the prompts learn, so an image's features never change during local training. Encoding every
image once (optionally ``n_views`` augmented views, view 0 always the clean one) turns an epoch of prompt
training into text-encoder passes only. The cache lives in memory and, if asked, on disk, keyed by a hash
of the model weights and of the images.

Images are either a uint8 tensor (N, 3, H, W) (offline digits, CIFAR) — transformed in batches on the
backbone device — or a sequence of file paths / PIL images, which go through the backbone's ``preprocess``.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
from typing import Sequence, Union

import torch
import torch.nn.functional as F

from prompts.atomic import atomic_torch_save
from prompts.backbone import Backbone
from prompts.imaging import random_affine, to_model_input

Images = Union[torch.Tensor, Sequence]  # uint8 (N,3,H,W) tensor, or paths / PIL images

_MEMORY: dict[tuple, torch.Tensor] = {}
_MODEL_KEYS: "weakref.WeakKeyDictionary[torch.nn.Module, str]" = weakref.WeakKeyDictionary()


def model_key(backbone: Backbone) -> str:
    """Content hash of the image tower's weights (cached per model object)."""
    m = backbone.model
    if m not in _MODEL_KEYS:
        h = hashlib.sha1(backbone.name.encode())
        for k, v in m.visual.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        _MODEL_KEYS[m] = h.hexdigest()[:16]
    return _MODEL_KEYS[m]


def data_key(images: Images) -> str:
    h = hashlib.sha1()
    if isinstance(images, torch.Tensor):
        h.update(str((images.dtype, tuple(images.shape))).encode())
        h.update(images.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    else:
        for item in images:
            if isinstance(item, (str, os.PathLike)):
                st = os.stat(item)
                h.update(f"{os.fspath(item)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
            else:  # PIL image
                h.update(item.tobytes())
    return h.hexdigest()[:16]


def _load_pil(item):
    from PIL import Image

    if isinstance(item, (str, os.PathLike)):
        with Image.open(item) as im:
            return im.convert("RGB")
    return item.convert("RGB")


def _pil_augment(backbone: Backbone):
    from torchvision import transforms as T

    return T.Compose([T.RandomResizedCrop(backbone.image_size, scale=(0.7, 1.0)), T.RandomHorizontalFlip(),
                      T.ToTensor(), T.Normalize(backbone.mean, backbone.std)])


def model_inputs(backbone: Backbone, images: Images, index: torch.Tensor | Sequence[int] | None = None,
                 augment: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images (or ``images[index]``) as a normalised input batch on the backbone device."""
    if isinstance(images, torch.Tensor):
        x = images if index is None else images[torch.as_tensor(index, dtype=torch.long)]
        x = x.to(backbone.device)
        if augment:
            x = random_affine(x.float() / 255.0 if x.dtype == torch.uint8 else x.float(), generator or torch.Generator())
        return to_model_input(x, backbone.image_size, backbone.mean, backbone.std)
    items = list(images) if index is None else [images[int(i)] for i in index]
    if augment:
        tf = _pil_augment(backbone)
        seed = int(torch.randint(2**31 - 1, (1,), generator=generator or torch.Generator()))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            batch = [tf(_load_pil(it)) for it in items]
    else:
        batch = [backbone.preprocess(_load_pil(it)) for it in items]
    return torch.stack(batch).to(backbone.device)


@torch.no_grad()
def encode_images(backbone: Backbone, images: Images, index: torch.Tensor | Sequence[int] | None = None,
                  batch_size: int = 256, augment: bool = False, generator: torch.Generator | None = None) -> torch.Tensor:
    """Unit-norm image features (N, E), float32, on the backbone device. No caching."""
    n = len(images) if index is None else len(index)
    idx = torch.arange(n) if index is None else torch.as_tensor(index, dtype=torch.long)
    out = []
    for s in range(0, n, batch_size):
        x = model_inputs(backbone, images, idx[s:s + batch_size], augment=augment, generator=generator)
        out.append(F.normalize(backbone.model.encode_image(x).float(), dim=-1))
    if not out:
        return torch.zeros(0, backbone.embed_dim, device=backbone.device)
    return torch.cat(out)


def compute_features(backbone: Backbone, images: Images, n_views: int = 1, seed: int = 0, batch_size: int = 256,
                     cache_dir: str | Path | None = None, use_memory: bool = True) -> torch.Tensor:
    """Cached features, shape (N, n_views, E); view 0 is un-augmented, views 1.. are seeded augmentations."""
    if n_views < 1:
        raise ValueError(f"n_views must be >= 1, got {n_views}")
    key = (model_key(backbone), data_key(images), n_views, seed if n_views > 1 else 0, str(backbone.device))
    if use_memory and key in _MEMORY:
        return _MEMORY[key]
    path = Path(cache_dir) / ("feat-" + "-".join(map(str, key[:4])) + ".pt") if cache_dir else None
    if path is not None and path.is_file():
        feats = torch.load(path, map_location=backbone.device, weights_only=True)
    else:
        g = torch.Generator().manual_seed(seed)
        views = [encode_images(backbone, images, batch_size=batch_size)]
        views += [encode_images(backbone, images, batch_size=batch_size, augment=True, generator=g)
                  for _ in range(n_views - 1)]
        feats = torch.stack(views, dim=1)
        if path is not None:
            atomic_torch_save(feats.cpu(), path)
    if use_memory:
        _MEMORY[key] = feats
    return feats


class OnTheFlyFeatures:
    """Re-encodes the requested images at every step: the no-cache baseline (and for unfrozen encoders).

    Same interface as a cached (N, V, E) tensor for ``train_local``: ``len()`` and ``batch(index, views)``.
    """

    def __init__(self, backbone: Backbone, images: Images, augment: bool = False, seed: int = 0) -> None:
        self.backbone, self.images, self.augment = backbone, images, augment
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return len(self.images)

    def reseed(self, seed: int) -> None:
        """Restart the augmentation stream (the launcher does it per round and client, so a resumed
        run draws the same augmentations as an uninterrupted one)."""
        self.generator = torch.Generator().manual_seed(seed)

    def batch(self, index: torch.Tensor, views: torch.Tensor | None = None) -> torch.Tensor:
        return encode_images(self.backbone, self.images, index, batch_size=max(1, len(index)),
                             augment=self.augment, generator=self.generator)
