"""``python -m launcher bench train``: local prompt training with vs without the image-feature cache.

Why: the frozen image encoder lets a client encode its images once; this measures what that buys. Both
runs train the same learner from the same init, on the same batches, for the same number of steps; with no
augmentation they must end with the same prompts (``max_abs_diff`` ~ float rounding). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m launcher bench train", description=__doc__)
    ap.add_argument("--model", default="tiny-digits", help="backbone name (prompts.backbone.load_backbone)")
    ap.add_argument("--pretrained", default=None, help="tag or local checkpoint for --model")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--optimizer", default="sgd", choices=["sgd", "adam"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from prompts.backbone import load_backbone
    from launcher.config import DataConfig
    from prompts.data import from_config
    from prompts.features import OnTheFlyFeatures, compute_features
    from prompts.learner import PromptLearner
    from prompts.training import train_local

    bb = load_backbone(args.model, args.pretrained, device=args.device)
    fed = from_config(DataConfig(n_domains=3, clients_per_domain=2), seed=args.seed)
    client, client_classnames = fed.clients[0], fed.classnames
    images, labels = client.train_images, client.train_labels
    epochs = -(-args.steps * args.batch_size // len(labels))  # enough epochs; max_steps stops exactly
    kw = dict(epochs=epochs, lr=args.lr, batch_size=args.batch_size, optimizer=args.optimizer, seed=args.seed,
              max_steps=args.steps)

    def run(features) -> tuple[PromptLearner, dict]:
        learner = PromptLearner(bb, client_classnames)
        train_local(learner, features, labels, **{**kw, "max_steps": min(3, args.steps)})  # warm-up
        learner = PromptLearner(bb, client_classnames)
        return learner, train_local(learner, features, labels, **kw)

    t0 = time.perf_counter()
    feats = compute_features(bb, images, use_memory=False)
    encode_s = time.perf_counter() - t0
    cached_learner, cached = run(feats)
    uncached_learner, uncached = run(OnTheFlyFeatures(bb, images))
    diff = max(float((cached_learner.get_domain_prompt() - uncached_learner.get_domain_prompt()).abs().max()),
               float((cached_learner.get_class_prompt() - uncached_learner.get_class_prompt()).abs().max()))
    out = dict(
        model=args.model, device=str(bb.device), threads=torch.get_num_threads(), steps=cached["steps"],
        batch_size=args.batch_size, n_train=len(labels),
        cached_steps_per_s=round(cached["steps"] / cached["seconds"], 2),
        uncached_steps_per_s=round(uncached["steps"] / uncached["seconds"], 2),
        speedup=round(uncached["seconds"] / cached["seconds"], 2),
        feature_encode_s=round(encode_s, 4),
        speedup_incl_encode=round(uncached["seconds"] / (cached["seconds"] + encode_s), 2),
        cached_loss=cached["loss"], uncached_loss=uncached["loss"], max_abs_diff=diff,
    )
    print(json.dumps(out))
    return 0
