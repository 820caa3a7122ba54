"""Offline benchmark dataset: digits and capital letters drawn from real typefaces, one style per domain.

Why: the digits default shares its styles with the tiny CLIP's pretraining, so prompts have little to
learn and sharing buys nothing. Real personalisation papers test on domains the backbone has not seen
(DomainNet's quickdraw, infograph). Here a *domain* is a typeface style (handwriting, techno, display,
serif, monospace, the classic fonts matplotlib bundles), made of several real families each, so it is a
style and not one font. The typefaces come from the pinned ``fontpkg-*`` wheels (Google Fonts TTFs) and
from matplotlib; nothing is downloaded at run time.

An unseen domain's first ``PRETRAIN_FAMILIES`` families belong to the backbone's pretraining and its
clients draw from the others (:func:`pool`).

A sample is the triple (domain, class, sample id): its family is ``sample id mod n_families`` within
its pool and its jitter (size, position, rotation, stroke, ink and paper grey) is seeded by the
triple, so rendering is a pure function of it and a rank draws only the images of its own clients.
A glyph missing from a family (a "tofu" box) is detected from the font's character map and that family
is skipped with a warning.
"""

from __future__ import annotations

import importlib
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

IMAGE_SIZE = 32  # what the tiny CLIP (secfpp-tiny) takes
CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # no lower case: 'o'/'O', 's'/'S' ... look alike in many fonts
_DIGIT_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CLASSNAMES: list[str] = _DIGIT_WORDS + [f"letter {c.lower()}" for c in CHARS[10:]]

# domain -> families; a family is a fontpkg module (``fontpkg_<name>``) or ``mpl:<file>`` in matplotlib's fonts.
DOMAINS: dict[str, list[str]] = {
    "classic": ["mpl:DejaVuSans.ttf", "mpl:DejaVuSerif.ttf", "mpl:STIXGeneral.ttf", "mpl:cmr10.ttf",
                "mpl:cmss10.ttf"],
    "serif": ["eb-garamond", "playfair-display", "lora", "libre-baskerville", "crimson-text"],
    "handwriting": ["caveat", "dancing-script", "indie-flower", "kalam", "permanent-marker", "shadows-into-light"],
    "techno": ["press-start-2p", "orbitron", "share-tech", "chakra-petch", "russo-one", "exo-2"],
    "display": ["anton", "bebas-neue", "black-ops-one", "bungee", "luckiest-guy", "abril-fatface"],
    "monospace": ["fira-code", "ibm-plex-mono", "space-mono", "jetbrains-mono", "roboto-mono", "source-code-pro"],
}
DOMAIN_NAMES: list[str] = list(DOMAINS)
PRETRAIN_DOMAINS: list[str] = ["classic", "monospace"]  # plain fonts: tiny-fonts pretrains on all their families
UNSEEN_DOMAINS: list[str] = [d for d in DOMAIN_NAMES if d not in PRETRAIN_DOMAINS]  # clients' families unseen
# The first PRETRAIN_FAMILIES (kept) families of each unseen domain are the backbone's: it pretrains on them,
# captioned with the style's own words; clients draw only the other families of that domain.
PRETRAIN_FAMILIES = 2

_CANVAS = 64  # drawn at twice the size, then downsampled: anti-aliased strokes
PRETRAIN_ID_BASE = 10_000_000  # sample ids the tiny CLIP pretrains on; federations use ids below it


def font_path(family: str) -> Path:
    """The upright regular .ttf of ``family`` (a fontpkg name such as ``"caveat"``, or ``"mpl:<file>"``)."""
    if family.startswith("mpl:"):
        import matplotlib

        return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / family[4:]
    mod = importlib.import_module("fontpkg_" + family.replace("-", "_"))
    files = sorted(p for p in (Path(mod.__file__).parent / "files").glob("*.ttf") if "Italic" not in p.name)
    if not files:
        raise FileNotFoundError(f"fontpkg_{family} ships no upright .ttf")
    for pick in (lambda p: p.stem.endswith("-Regular"), lambda p: "[" in p.stem, lambda p: True):
        hit = [p for p in files if pick(p)]
        if hit:
            return hit[0]
    raise AssertionError("unreachable")


def missing_glyphs(path: Path | str, chars: str = CHARS) -> str:
    """The characters of ``chars`` that the font has no glyph for (they would render as .notdef boxes)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True) as f:
        cmap = f.getBestCmap() or {}
    return "".join(c for c in chars if ord(c) not in cmap)


@lru_cache(maxsize=None)
def families(domain: str, chars: str = CHARS) -> tuple[Path, ...]:
    """Font files of ``domain`` that have every character of ``chars``; the others are skipped with a warning."""
    if domain not in DOMAINS:
        raise ValueError(f"unknown font domain {domain!r}; choose from {DOMAIN_NAMES}")
    kept = []
    for fam in DOMAINS[domain]:
        path = font_path(fam)
        gone = missing_glyphs(path, chars)
        if gone:
            warnings.warn(f"font family {fam!r} ({path.name}) has no glyph for {gone!r}: skipped in domain "
                          f"{domain!r}", stacklevel=2)
            continue
        kept.append(path)
    if not kept:
        raise ValueError(f"no family of domain {domain!r} has all of {chars!r}")
    return tuple(kept)


@lru_cache(maxsize=4096)
def _font(path: Path, size: int):
    from PIL import ImageFont

    return ImageFont.truetype(str(path), size)


@lru_cache(maxsize=None)
def _fit_size(path: Path, char: str) -> float:
    """Font size at which the glyph's larger side is 1 pixel (fonts differ a lot in glyph size per em)."""
    l, t, r, b = _font(path, 200).getbbox(char)
    return 200.0 / max(r - l, b - t, 1)


def render_glyph(path: Path | str, char: str, seed: Sequence[int]) -> np.ndarray:
    """One jittered glyph as uint8 greyscale (IMAGE_SIZE, IMAGE_SIZE); a pure function of its arguments."""
    from PIL import Image, ImageDraw

    path = Path(path)
    rng = np.random.default_rng(list(seed))
    extent = rng.uniform(0.55, 0.78) * _CANVAS  # glyph's larger side
    size = max(8, int(round(_fit_size(path, char) * extent)))
    stroke = int(rng.integers(0, 3))  # 0-2 px at 64 px: weight jitter
    ink, paper = int(rng.integers(0, 70)), int(rng.integers(200, 256))
    dx, dy = rng.uniform(-0.08, 0.08, size=2) * _CANVAS
    angle = float(rng.uniform(-12.0, 12.0))
    img = Image.new("L", (_CANVAS, _CANVAS), paper)
    ImageDraw.Draw(img).text((_CANVAS / 2 + dx, _CANVAS / 2 + dy), char, fill=ink, font=_font(path, size),
                             anchor="mm", stroke_width=stroke, stroke_fill=ink)
    img = img.rotate(angle, resample=Image.BILINEAR, fillcolor=paper)
    return np.asarray(img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX), dtype=np.uint8)


def pool(domain: str, part: str = "clients") -> tuple[Path, ...]:
    """The families of ``domain`` that clients draw from (``part="clients"``) or the backbone pretrains on
    (``"pretrain"``): disjoint for an unseen domain, all of them for a pretraining domain."""
    if part not in ("clients", "pretrain"):
        raise ValueError(f"part must be 'clients' or 'pretrain', got {part!r}")
    fams = families(domain)
    if domain in PRETRAIN_DOMAINS:
        return fams
    if len(fams) <= PRETRAIN_FAMILIES:
        raise ValueError(f"domain {domain!r} keeps {len(fams)} families; it needs more than {PRETRAIN_FAMILIES}")
    return fams[PRETRAIN_FAMILIES:] if part == "clients" else fams[:PRETRAIN_FAMILIES]


def render(domain: str, labels: np.ndarray | Sequence[int], sample_ids: np.ndarray | Sequence[int],
           part: str = "clients") -> torch.Tensor:
    """Samples (domain, labels[i], sample_ids[i]) as uint8 RGB, shape (N, 3, IMAGE_SIZE, IMAGE_SIZE).

    The family is ``sample_id mod n_families`` within the domain's ``part`` (see :func:`pool`), so
    consecutive ids cycle through those families.
    """
    fams = pool(domain, part)
    d = DOMAIN_NAMES.index(domain)
    labels, sample_ids = np.asarray(labels, dtype=np.int64), np.asarray(sample_ids, dtype=np.int64)
    out = np.empty((len(labels), IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for i, (y, s) in enumerate(zip(labels.tolist(), sample_ids.tolist())):
        out[i] = render_glyph(fams[s % len(fams)], CHARS[y], (7919, d, y, s))
    return torch.from_numpy(out)[:, None].expand(-1, 3, -1, -1).contiguous()
