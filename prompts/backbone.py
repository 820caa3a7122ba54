"""Load a frozen open_clip backbone: any model by name, with a pretrained tag, a local checkpoint, or the
project's own tiny offline CLIP.

Why: prompt learning needs the CLIP towers fixed, on the fastest device available, and a run on a machine
without network access must fail *at once* with advice (open_clip + huggingface_hub would otherwise retry
for ~45 s). Names:

* ``"tiny-digits"``: ``secfpp-tiny`` with the project's contrastively pretrained weights (built and cached
  on first use, see ``prompts.tiny_clip``); ``"tiny-fonts"``: the same, pretrained on characters whose
  client families it never sees (the benchmark's backbone);
* ``"secfpp-tiny"``: the same architecture, random init unless ``pretrained`` is given;
* any ``open_clip.list_models()`` name, with ``pretrained`` a tag (``"openai"``, ``"laion2b_s34b_b79k"``),
  a local ``.pt``/``.pth``/``.bin``/``.safetensors`` file, or ``None`` for random weights.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

import torch

from prompts import _torchvision_fix  # noqa: F401
import open_clip  # noqa: E402

from prompts import tiny_clip  # noqa: E402

CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
PROBE_TIMEOUT_S = 2.0


@dataclass
class Backbone:
    """A frozen open_clip model with what is needed to feed it."""

    model: torch.nn.Module
    preprocess: Callable[[Any], torch.Tensor]  # PIL image -> normalised tensor (eval transform)
    tokenizer: Callable[..., torch.Tensor]
    device: torch.device
    name: str
    pretrained: str | None = None

    @property
    def image_size(self) -> int:
        s = self.model.visual.image_size
        return int(s[0] if isinstance(s, (tuple, list)) else s)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(self.model.visual.preprocess_cfg["mean"])

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(self.model.visual.preprocess_cfg["std"])

    @property
    def width(self) -> int:
        """Text-token embedding width: the size of one prompt context vector."""
        return int(self.model.token_embedding.weight.shape[1])

    @property
    def embed_dim(self) -> int:
        return int(self.model.text_projection.shape[1]) if isinstance(self.model.text_projection, torch.Tensor) \
            else int(self.model.text_projection.out_features)


def default_device(device: str | torch.device | None = None) -> torch.device:
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(choice: str) -> torch.device:
    """``auto`` -> CUDA when torch sees a GPU, else CPU; ``cuda`` without a GPU is an error, not a fallback."""
    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {choice!r}")
    if choice == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device=cuda but torch {torch.__version__} sees no GPU "
                         f"(CUDA build: {torch.version.cuda}); use train.device=auto or cpu")
    return default_device(None if choice == "auto" else choice)


def _local_hint(name: str) -> str:
    return (f"To use weights on this machine, download the checkpoint elsewhere and pass its local path: "
            f"load_backbone({name!r}, pretrained='/path/to/weights.safetensors') (.pt, .pth, .bin or "
            f".safetensors), or use the offline model load_backbone({tiny_clip.PRETRAINED_NAME!r}).")


def _probe(host: str, port: int = 443, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Return None if ``host:port`` accepts a TCP connection within ``timeout`` s, else the error text.

    DNS resolution has no timeout of its own, so the probe runs in a daemon thread joined with a deadline.
    """
    result: list[str | None] = ["timed out"]

    def run() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result[0] = None
        except OSError as e:
            result[0] = f"{type(e).__name__}: {e}"

    th = threading.Thread(target=run, daemon=True)
    th.start()
    th.join(timeout + 0.5)
    return result[0]


def _check_tag_downloadable(name: str, tag: str) -> None:
    """Fail fast (< ~3 s) when a pretrained tag cannot be fetched from here."""
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        known = open_clip.list_pretrained_tags_by_model(name)
        raise ValueError(f"pretrained={tag!r} is neither an existing file nor a known open_clip tag for "
                         f"{name!r} (known tags: {known or 'none'}). {_local_hint(name)}")
    if "file" in cfg:
        return
    url, hub = cfg.get("url", ""), cfg.get("hf_hub", "")
    try:
        import huggingface_hub  # noqa: F401

        has_hub = True
    except ImportError:
        has_hub = False
    if url and not (has_hub and hub):
        if (Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)).is_file():
            return  # already downloaded by open_clip
        host = urlparse(url).hostname or ""
    elif hub:
        if not has_hub:
            raise RuntimeError(f"pretrained tag {tag!r} for {name!r} is hosted on the Hugging Face hub, and "
                               f"huggingface_hub is not installed (this project runs offline). {_local_hint(name)}")
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            return  # the user asked for the local hub cache; let huggingface_hub look there
        host = "huggingface.co"
    else:
        raise RuntimeError(f"pretrained tag {tag!r} for {name!r} has no download source. {_local_hint(name)}")
    err = "offline mode (SECFPP_OFFLINE=1)" if os.environ.get("SECFPP_OFFLINE") == "1" else _probe(host)
    if err is not None:
        raise RuntimeError(f"cannot download pretrained weights {tag!r} for {name!r}: {host} is unreachable "
                           f"({err}); this machine appears to have no network access. {_local_hint(name)}")


def text_width(name: str) -> int:
    """The width of one prompt context vector of model ``name``, from its config alone (no
    weights): what the servers topology's compute parties, which never load the model, check
    every client's prompt size against."""
    tiny_clip.register_config()
    model_name = tiny_clip.TINY_MODEL_NAME if name in tiny_clip.CORPORA else name
    cfg = open_clip.get_model_config(model_name)
    if cfg is None:
        raise ValueError(f"unknown open_clip model {name!r}")
    return int(cfg["text_cfg"]["width"])


def load_backbone(name: str, pretrained: str | None = None, device: str | torch.device | None = None,
                  seed: int = 0) -> Backbone:
    """Build ``name`` with ``pretrained`` weights, frozen and in eval mode, on CUDA if available.

    ``seed`` seeds random init (``pretrained=None``) and selects the tiny CLIP's pretraining run.
    """
    tiny_clip.register_config()
    dev = default_device(device)
    label = pretrained
    if name in tiny_clip.CORPORA:
        if pretrained is not None:
            raise ValueError(f"{name!r} brings its own weights; pass name={tiny_clip.TINY_MODEL_NAME!r} "
                             f"to load other weights into the same architecture")
        pretrained = str(tiny_clip.ensure_pretrained(seed=seed, name=name))
        label = f"{name}:{Path(pretrained).name}"
        model_name = tiny_clip.TINY_MODEL_NAME
    else:
        model_name = name
        if model_name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models() or use "
                             f"{' / '.join(map(repr, tiny_clip.CORPORA))} / {tiny_clip.TINY_MODEL_NAME!r}")
    if pretrained is not None:
        p = Path(pretrained).expanduser()
        if p.is_file():
            if p.suffix not in CHECKPOINT_SUFFIXES:
                raise ValueError(f"checkpoint {p} should end in one of {CHECKPOINT_SUFFIXES}")
            pretrained = str(p)
        elif p.suffix in CHECKPOINT_SUFFIXES or os.sep in str(pretrained):
            raise FileNotFoundError(f"checkpoint file {p} does not exist")
        else:
            _check_tag_downloadable(model_name, pretrained)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model, _, preprocess = open_clip.create_model_and_transforms(model_name, pretrained=pretrained, device=dev)
    model.eval()
    model.requires_grad_(False)
    return Backbone(model=model, preprocess=preprocess, tokenizer=open_clip.get_tokenizer(model_name),
                    device=dev, name=name, pretrained=label)


def save_checkpoint(backbone: Backbone | torch.nn.Module, path: str | Path) -> Path:
    """Write the backbone's weights as ``.safetensors`` or ``.pt`` (by suffix), loadable by ``load_backbone``."""
    model = backbone.model if isinstance(backbone, Backbone) else backbone
    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    elif path.suffix in (".pt", ".pth", ".bin"):
        torch.save(state, path)
    else:
        raise ValueError(f"use a .safetensors or .pt path, got {path}")
    return path
