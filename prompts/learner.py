"""Hierarchical CoOp prompt learner on a frozen open_clip text encoder.

Why: SecFPP personalises only prompts. The context for class ``c`` is ``D + L[c]``: ``D`` (domain prompt,
M x width) is what the MPC layer clusters and averages; ``L`` (class prompt, C x M x width, or 1 x M x width
when unified) never leaves the client. ``L`` starts at zero, so the initial prompt is exactly ``D_init``
(the embedding of e.g. "a photo of a"), the public reference the MPC projection subtracts.

The sequence fed to the text transformer is ``[SOS] ctx_1..ctx_M CLASSNAME . [EOT]``; features are taken at
the EOT token and multiplied by ``text_projection``, mirroring ``open_clip.CLIP.encode_text``. Because the
text transformer is causal, tokens after the last EOT cannot influence the pooled features, so sequences are
cut after it: a CoOp prompt is ~10 tokens out of 77, which makes each step several times cheaper.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import text_global_pool

from prompts.backbone import Backbone

_PLACEHOLDER = "X"


class PromptLearner(nn.Module):
    """Learnable ``domain_ctx`` (D) and ``class_ctx`` (L); everything else is frozen backbone."""

    def __init__(self, backbone: Backbone, classnames: list[str], n_ctx: int = 4, class_specific: bool = True,
                 init: str | None = "a photo of a", seed: int = 0, truncate: bool = True) -> None:
        super().__init__()
        if not classnames:
            raise ValueError("classnames must be non-empty")
        model = backbone.model
        for attr in ("token_embedding", "positional_embedding", "transformer", "ln_final", "text_projection"):
            if not hasattr(model, attr):
                raise TypeError(f"{backbone.name}: prompt learning needs an open_clip CLIP with a built-in text "
                                f"transformer (missing {attr!r}); custom/HF text towers are not supported")
        self.backbone = backbone  # a dataclass, not a Module: its weights stay out of parameters()/state_dict()
        self.classnames = list(classnames)
        self.n_ctx = int(n_ctx)
        self.class_specific = bool(class_specific)
        dev = backbone.device
        tok = backbone.tokenizer
        width = backbone.width
        emb = model.token_embedding

        if init:
            init_ids = tok([init]).to(dev)
            n_init = int((init_ids[0] != 0).sum()) - 2  # minus SOS / EOT
            if n_init != self.n_ctx:
                raise ValueError(f"init {init!r} is {n_init} tokens but n_ctx={n_ctx}; make them agree "
                                 f"(or pass init=None for a random init)")
            with torch.no_grad():
                d_init = emb(init_ids)[0, 1:1 + self.n_ctx].float()
        else:
            g = torch.Generator().manual_seed(seed)
            d_init = (torch.randn(self.n_ctx, width, generator=g) * 0.02).to(dev)

        prompts = [" ".join([_PLACEHOLDER] * self.n_ctx) + " " + name.replace("_", " ") + "." for name in classnames]
        ids = tok(prompts).to(dev)  # (C, L)
        if int(ids[:, -1].ne(0).any()):
            raise ValueError(f"a class prompt does not fit the text context length {ids.shape[1]}")
        pool = getattr(model, "text_pool_type", "argmax")
        if truncate and model.attn_mask is not None and pool in ("argmax", "eos"):
            eos_id = getattr(model, "text_eos_id", None)
            end = ids.argmax(-1) if pool == "argmax" else (ids == eos_id).int().argmax(-1)
            ids = ids[:, : int(end.max()) + 1]
        self.seq_len = ids.shape[1]
        with torch.no_grad():
            e = emb(ids).float()
        self.register_buffer("token_ids", ids, persistent=False)
        self.register_buffer("prefix", e[:, :1].clone(), persistent=False)  # SOS
        self.register_buffer("suffix", e[:, 1 + self.n_ctx:].clone(), persistent=False)  # name . EOT pad
        self.register_buffer("_domain_init", d_init.clone(), persistent=False)

        self.domain_ctx = nn.Parameter(d_init.clone())
        self.class_ctx = nn.Parameter(torch.zeros(len(classnames) if class_specific else 1, self.n_ctx, width,
                                                  device=dev))

    # ---- prompt import / export (what crosses to the MPC layer) ----
    @property
    def domain_init(self) -> torch.Tensor:
        """Public initial domain prompt ``D_init`` (M x width), detached CPU copy."""
        return self._domain_init.detach().cpu().clone()

    def get_domain_prompt(self) -> torch.Tensor:
        """``D`` as a detached CPU float tensor (M x width)."""
        return self.domain_ctx.detach().cpu().clone()

    def set_domain_prompt(self, prompt: torch.Tensor) -> None:
        """Replace ``D`` (e.g. with the cluster aggregate returned by SecPC)."""
        prompt = torch.as_tensor(prompt)
        if tuple(prompt.shape) != tuple(self.domain_ctx.shape):
            raise ValueError(f"domain prompt must have shape {tuple(self.domain_ctx.shape)}, got {tuple(prompt.shape)}")
        with torch.no_grad():
            self.domain_ctx.copy_(prompt.to(self.domain_ctx))

    def get_class_prompt(self) -> torch.Tensor:
        return self.class_ctx.detach().cpu().clone()

    # ---- forward ----
    def context(self) -> torch.Tensor:
        """Per-class context ``D + L[c]``: (C, M, width)."""
        ctx = self.domain_ctx.unsqueeze(0) + self.class_ctx
        return ctx.expand(len(self.classnames), -1, -1)

    def text_features(self, normalize: bool = True) -> torch.Tensor:
        """Text features of all class prompts in one batched pass: (C, embed_dim)."""
        m = self.backbone.model
        cast = m.transformer.get_cast_dtype()
        L = self.seq_len
        x = torch.cat([self.prefix, self.context(), self.suffix], dim=1).to(cast)
        x = x + m.positional_embedding[:L].to(cast)
        mask = m.attn_mask[:L, :L] if m.attn_mask is not None else None
        x = m.transformer(x, attn_mask=mask)
        x = m.ln_final(x)
        x = text_global_pool(x, self.token_ids, m.text_pool_type, eos_token_id=getattr(m, "text_eos_id", None))
        proj = m.text_projection
        x = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        x = x.float()
        return F.normalize(x, dim=-1) if normalize else x

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) = logit_scale.exp() * cos(image, text)."""
        img = F.normalize(image_features.float(), dim=-1)
        return self.backbone.model.logit_scale.exp().float() * img @ self.text_features().T
