"""The tiny CLIP's pretraining corpora: one caption set (digits) or one per style (fonts)."""

import torch

from prompts import tiny_clip
from prompts.data import fonts


def test_digits_recipe_unchanged():
    # the digits backbone's weights, and so every golden built on them, are keyed by this hash
    assert tiny_clip.cache_key(0, tiny_clip.RECIPE) == "61bcbfde119aa026"


def test_fonts_corpus_captions_each_style_with_its_own_words():
    r = dict(tiny_clip.FONTS_RECIPE, per_class=1, holdout_per_class=1)
    images, labels = tiny_clip.CORPORA[tiny_clip.FONTS_NAME].images(r)
    n_cls = len(fonts.CLASSNAMES)
    assert len(images) == len(labels) == n_cls * len(fonts.DOMAIN_NAMES)
    assert torch.equal(labels, torch.arange(n_cls * len(fonts.DOMAIN_NAMES)))  # label = style * C + class
    for d in fonts.UNSEEN_DOMAINS:  # "a photo of a" (the zero-shot template) is never an unseen style's caption
        assert "a photo of a {}." not in r["templates"][d]
    assert "a photo of a {}." in r["templates"]["classic"]
    state, info = tiny_clip.pretrain(recipe=dict(r, steps=3, text_freeze_steps=1, batch_size=16), progress=False,
                                     name=tiny_clip.FONTS_NAME)
    assert set(info["zero_shot_holdout"]) == set(fonts.DOMAIN_NAMES) and info["steps"] == 3
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
