"""The project's own tiny CLIP, pretrained contrastively on captioned offline digits (or fonts).

Why: these machines cannot download CLIP weights, but prompt learning only means something on a backbone
whose text and image towers are *aligned*. So the project defines a 3.4M-parameter open_clip config
(``secfpp-tiny``: width 64, 2+2 layers, 32x32 images, 32-token text) and pretrains it itself on the
digits scans reserved for pretraining, rendered in every domain style and captioned from templates
("a photo of the digit seven."). The loss is CLIP's symmetric contrastive loss, with captions of the same
class treated as positives. The result is cached under ``$SECFPP_CACHE`` (default ``~/.cache/secfpp``),
keyed by a hash of config + recipe + seed, written atomically and rebuilt when missing.

A second model, ``tiny-fonts``, is the same architecture pretrained on characters: every family of the
plain domains (``prompts.data.fonts.PRETRAIN_DOMAINS``) with plain captions, and the first
``fonts.PRETRAIN_FAMILIES`` families of each other style captioned only with that style's words ("a
handwritten {}.", never "a photo of a {}."), contrasted over (style, class) pairs. So, like real CLIP
with sketches, the backbone knows a style by its words while "a photo of a" misses it, and the
benchmark's clients draw only families it has never seen. (Version 1 saw the plain domains alone; on
it even a perfect clustering bought +0.9 points on class-balanced validation accuracy: a text prompt
had no style to find.) Its pretraining images are sample ids no federation uses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from prompts import _torchvision_fix  # noqa: F401
import open_clip  # noqa: E402

from prompts.atomic import atomic_write_bytes  # noqa: E402
from prompts.data import digits, fonts  # noqa: E402
from prompts.imaging import random_affine, to_model_input  # noqa: E402

TINY_MODEL_NAME = "secfpp-tiny"
PRETRAINED_NAME = "tiny-digits"  # load_backbone("tiny-digits") -> secfpp-tiny + project-pretrained weights
CONFIG_PATH = Path(__file__).parent / "configs" / f"{TINY_MODEL_NAME}.json"

TEMPLATES: list[str] = [
    "a photo of the digit {}.",
    "a photo of a {}.",
    "the number {}.",
    "a handwritten {}.",
    "a drawing of the number {}.",
    "an image of a {}.",
]

# Everything that changes the weights goes into the cache key.
RECIPE: dict = dict(
    version=1,
    steps=600,
    batch_size=128,
    lr=2e-3,
    text_lr_scale=0.25,
    text_freeze_steps=150,
    weight_decay=0.05,
    warmup=20,
    t2i_weight=0.0,
    pretrain_fraction=0.4,
    styles=digits.DOMAIN_NAMES,
    templates=TEMPLATES,
    augment=dict(max_rotate_deg=10.0, scale=[0.9, 1.1], max_translate=0.08),
)


FONTS_NAME = "tiny-fonts"
FONT_TEMPLATES: list[str] = [
    "a photo of the character {}.",
    "a photo of a {}.",
    "the symbol {}.",
    "a {} in some typeface.",
    "an image of a {}.",
    "the printed character {}.",
]
# Captions of the unseen domains' pretraining families: the style's own words and never "a photo of a",
# as real CLIP saw sketches captioned "a sketch of ..." (so a learned prompt has a style to find).
STYLE_TEMPLATES: dict[str, list[str]] = {
    "serif": ["a serif {}.", "an old style {}.", "a book print {}.", "an elegant serif {}."],
    "handwriting": ["a handwritten {}.", "a scribbled {}.", "a hand drawn {}.", "a brush lettered {}."],
    "techno": ["a futuristic {}.", "a pixel {}.", "a digital style {}.", "a sci fi {}."],
    "display": ["a bold poster {}.", "a heavy headline {}.", "a condensed display {}.", "a loud banner {}."],
}
FONTS_RECIPE: dict = dict(RECIPE, version=2, steps=1200, per_class=80, pretrain_fraction=None,
                          styles=fonts.DOMAIN_NAMES, holdout_per_class=8,
                          templates={d: STYLE_TEMPLATES.get(d, FONT_TEMPLATES) for d in fonts.DOMAIN_NAMES})


@dataclass(frozen=True)
class Corpus:
    """What one pretrained model is trained on: class names, a recipe, and how to draw its images."""

    classnames: list[str]
    recipe: dict
    # recipe -> (uint8 (N, 3, H, W), labels); with per-style templates (a dict) a label is style * C + class
    images: Callable[[dict], tuple[torch.Tensor, torch.Tensor]]
    holdout: Callable[[dict], dict[str, tuple[torch.Tensor, torch.Tensor]]]  # recipe -> {style: (images, labels)}


def _digits_images(r: dict) -> tuple[torch.Tensor, torch.Tensor]:
    pre_idx, _ = digits.split_scans(r["pretrain_fraction"], seed=0)  # fixed split: matches federations
    _, all_labels = digits.load_scans()
    images = torch.cat([digits.render(pre_idx, s) for s in r["styles"]])
    return images, torch.from_numpy(np.tile(all_labels[pre_idx], len(r["styles"])))


def _digits_holdout(r: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    _, fed_idx = digits.split_scans(r["pretrain_fraction"], seed=0)
    _, labels = digits.load_scans()
    return {s: (digits.render(fed_idx, s), torch.from_numpy(labels[fed_idx])) for s in r["styles"]}


def _font_samples(domain: str, per_class: int, first_id: int, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    labels = np.repeat(np.arange(len(fonts.CLASSNAMES)), per_class)
    ids = first_id + np.arange(len(labels))
    return fonts.render(domain, labels, ids, part), torch.from_numpy(labels)


def _fonts_images(r: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Each style's pretraining families; label = style index * C + class (one caption group per style)."""
    parts = [_font_samples(d, r["per_class"], fonts.PRETRAIN_ID_BASE, "pretrain") for d in r["styles"]]
    n_cls = len(fonts.CLASSNAMES)
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] + i * n_cls for i, p in enumerate(parts)])


def _fonts_holdout(r: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Every domain's client families, on ids past the pretraining ones (so never trained on)."""
    first = fonts.PRETRAIN_ID_BASE + 1_000_000
    return {d: _font_samples(d, r["holdout_per_class"], first, "clients") for d in fonts.DOMAIN_NAMES}


CORPORA: dict[str, Corpus] = {
    PRETRAINED_NAME: Corpus(digits.CLASSNAMES, RECIPE, _digits_images, _digits_holdout),
    FONTS_NAME: Corpus(fonts.CLASSNAMES, FONTS_RECIPE, _fonts_images, _fonts_holdout),
}


def register_config() -> str:
    """Make ``secfpp-tiny`` known to open_clip (idempotent). Returns the model name."""
    if TINY_MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(str(CONFIG_PATH))
    return TINY_MODEL_NAME


def cache_dir() -> Path:
    return Path(os.environ.get("SECFPP_CACHE") or Path.home() / ".cache" / "secfpp")


def cache_key(seed: int = 0, recipe: dict | None = None) -> str:
    blob = json.dumps(dict(config=json.loads(CONFIG_PATH.read_text()), recipe=recipe or RECIPE, seed=seed),
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_path(seed: int = 0, name: str = PRETRAINED_NAME) -> Path:
    return cache_dir() / f"{name}-{cache_key(seed, CORPORA[name].recipe)}.safetensors"


def info_path(seed: int = 0, name: str = PRETRAINED_NAME) -> Path:
    return checkpoint_path(seed, name).with_suffix(".json")


def create_random(seed: int = 0, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A random-init ``secfpp-tiny`` model, deterministic given ``seed`` (used by golden tests)."""
    register_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_MODEL_NAME, pretrained=None, device=device)
    return model


@contextlib.contextmanager
def _file_lock(path: Path):
    """Serialise builders (e.g. several MPI ranks on one host) so the model is pretrained only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX)
        except ImportError:  # non-POSIX: atomic replace alone still keeps the cache consistent
            pass
        yield


def ensure_pretrained(seed: int = 0, force: bool = False, progress: bool = True, name: str = PRETRAINED_NAME) -> Path:
    """Path of the cached pretrained checkpoint of ``name`` (a key of ``CORPORA``), pretraining it first
    if it is missing."""
    path = checkpoint_path(seed, name)
    if path.is_file() and not force:
        return path
    with _file_lock(path.with_suffix(".lock")):
        if path.is_file() and not force:
            return path
        state, info = pretrain(seed=seed, progress=progress, name=name)
        from safetensors.torch import save

        atomic_write_bytes(info_path(seed, name), json.dumps(info, indent=2).encode())
        atomic_write_bytes(path, save(state))
    return path


def _class_tokens(tokenizer, template: str, classnames: list[str]) -> torch.Tensor:
    return tokenizer([template.format(c) for c in classnames])


def pretrain(seed: int = 0, recipe: dict | None = None, progress: bool = True, log_every: int = 0,
             name: str = PRETRAINED_NAME) -> tuple[dict, dict]:
    """Contrastively pretrain ``secfpp-tiny`` for ``name`` on CPU threads. Returns (state_dict, info)."""
    from tqdm.auto import tqdm

    corpus = CORPORA[name]
    r = recipe or corpus.recipe
    classnames = corpus.classnames
    t0 = time.perf_counter()
    model = create_random(seed)
    model.train()
    tokenizer = open_clip.get_tokenizer(TINY_MODEL_NAME)
    mean, std = model.visual.preprocess_cfg["mean"], model.visual.preprocess_cfg["std"]
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size

    images, labels = corpus.images(r)
    x_all = images.float() / 255.0
    # caption groups: one list of templates, or one per style (a label is then group * C + class), so the
    # text tower has to tell the styles apart as well as the classes
    groups = [r["templates"][s] for s in r["styles"]] if isinstance(r["templates"], dict) else [r["templates"]]
    tokens = [torch.stack([_class_tokens(tokenizer, t, classnames) for t in g]) for g in groups]  # (T_g, C, L)
    frozen_pick = [g.index("a photo of a {}.") if "a photo of a {}." in g else 0 for g in groups]

    g = torch.Generator().manual_seed(seed)
    # A text tower trained from scratch on 10 near-identical captions collapses them onto one point
    # within ~25 steps. So the text tower is frozen for the first ``text_freeze_steps`` (the image tower
    # learns to hit its random but distinct class features), then trains at a reduced learning rate.
    text_params = [p for n, p in model.named_parameters() if not (n.startswith("visual") or n == "logit_scale")]
    vis_params = [p for n, p in model.named_parameters() if n.startswith("visual") or n == "logit_scale"]
    opt = torch.optim.AdamW([dict(params=vis_params, lr=r["lr"]),
                             dict(params=text_params, lr=r["lr"] * r["text_lr_scale"])],
                            weight_decay=r["weight_decay"])
    steps, bs = r["steps"], r["batch_size"]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / r["warmup"]) * (0.55 + 0.45 * np.cos(np.pi * min(s, steps) / steps)))
    aug = r["augment"]
    n = len(labels)
    perm, pos = torch.randperm(n, generator=g), 0
    for step in tqdm(range(steps), desc="pretraining tiny CLIP", disable=not progress, mininterval=2.0):
        frozen = step < r["text_freeze_steps"]
        for p in text_params:
            p.requires_grad_(not frozen)
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos:pos + bs]
        pos += bs
        x = x_all[idx]
        if not frozen:
            x = random_affine(x, g, aug["max_rotate_deg"], tuple(aug["scale"]), aug["max_translate"])
        x = to_model_input(x, size, mean, std)
        y = labels[idx]
        picks = [int(torch.randint(len(grp), (1,), generator=g)) for grp in groups]
        if frozen:
            picks = frozen_pick
        img = F.normalize(model.encode_image(x), dim=-1)
        captions = torch.cat([tok[t] for tok, t in zip(tokens, picks)])  # one caption per group and class
        txt = F.normalize(model.encode_text(captions), dim=-1)
        logits = model.logit_scale.exp() * img @ txt.T  # (B, G * C)
        loss_i = F.cross_entropy(logits, y)
        # text -> image: every image of the caption's class is a positive
        pos_mask = (y[None, :] == torch.arange(len(captions))[:, None]).float()  # (G * C, B)
        present = pos_mask.sum(1) > 0
        logp = F.log_softmax(logits.T, dim=1)
        loss_t = -((logp * pos_mask).sum(1)[present] / pos_mask.sum(1)[present]).mean()
        loss = (loss_i + r["t2i_weight"] * loss_t) / (1 + r["t2i_weight"])
        if log_every and step % log_every == 0:
            print(f"step {step} loss_i {float(loss_i.detach()):.3f} acc {float((logits.argmax(1) == y).float().mean()):.3f}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, np.log(100))
    seconds = time.perf_counter() - t0
    model.eval()
    info = dict(seconds=round(seconds, 2), steps=steps, seed=seed, key=cache_key(seed, r),
                threads=torch.get_num_threads(), final_loss=float(loss.detach()),
                zero_shot_holdout=_holdout_zero_shot(model, tokenizer, corpus.holdout(r), classnames, size, mean, std))
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    return state, info


@torch.no_grad()
def _holdout_zero_shot(model, tokenizer, holdout, classnames, size, mean, std) -> dict[str, float]:
    """Zero-shot accuracy with "a photo of a {}." on images *not* used for pretraining, per style."""
    txt = F.normalize(model.encode_text(_class_tokens(tokenizer, "a photo of a {}.", classnames)), dim=-1)
    out = {}
    for s, (images, y) in holdout.items():
        img = F.normalize(model.encode_image(to_model_input(images, size, mean, std)), dim=-1)
        out[s] = round(float(((img @ txt.T).argmax(1) == y).float().mean()), 4)
    return out
