"""Model families: one registry, one builder signature, one classifier wrapper.

A family registers ``builder(model_cfg: dict, attention_cfg: dict, spec: TaskSpec) -> SequenceEncoder``.
``model_cfg`` is ``conf/model/<name>.yaml`` resolved; a family parses it with a frozen dataclass so a
misspelled key raises. :func:`build_model` wraps the encoder with the task's head (single or dual).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Callable

import torch
from torch import nn

from models.encoder import SequenceEncoder, build_transformer_layers
from models.heads import ClassifierHead, DualHead

MODEL_REGISTRY: dict[str, Callable] = {}
USES_ATTENTION: dict[str, bool] = {}  # False: the family has its own token mixer (Mega); `attention` is ignored


def register_model(name: str, uses_attention: bool = True):
    def deco(fn):
        if name in MODEL_REGISTRY:
            raise ValueError(f"model family {name!r} registered twice")
        MODEL_REGISTRY[name] = fn
        USES_ATTENTION[name] = uses_attention
        return fn
    return deco


def attention_label(model_name: str, attention_name: str) -> str:
    """The attention name recorded for a run: ``none`` for families that ignore the attention group."""
    return attention_name if USES_ATTENTION.get(model_name, True) else "none"


def parse_config(cls, cfg: dict, where: str):
    """Build dataclass ``cls`` from ``cfg``; unknown or missing keys raise naming ``where``."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise TypeError(f"{where}: unknown key(s) {unknown}; valid keys: {sorted(names)}")
    try:
        return cls(**cfg)
    except TypeError as e:
        raise TypeError(f"{where}: {e}") from e


@dataclass(frozen=True)
class HeadConfig:
    mlp_dim: int = 1024
    interaction: str = "nli"  # retrieval only: nli = [u, v, u*v, u-v]; concat = [u, v] (released code)


@dataclass(frozen=True)
class TransformerConfig:
    name: str
    d_model: int
    num_layers: int
    num_heads: int
    qkv_dim: int
    mlp_dim: int
    dropout: float = 0.1
    attn_dropout: float = 0.1  # consumed by conf/attention/*.yaml through interpolation
    pos_emb: str = "sinusoidal"
    axial_shape: tuple | None = None
    pooling: str = "cls"
    norm_first: bool = True
    mask_mode: str = "lra"
    layer_norm_eps: float = 1e-6
    head: dict = field(default_factory=dict)


@register_model("transformer")
def build_transformer(model_cfg: dict, attention_cfg: dict, spec) -> SequenceEncoder:
    c = parse_config(TransformerConfig, model_cfg, "conf/model/transformer.yaml")
    max_len = spec.seq_len + int(c.pooling == "cls")
    layers = build_transformer_layers(asdict(c), attention_cfg, max_len)
    final = nn.LayerNorm(c.d_model, eps=c.layer_norm_eps) if c.norm_first else None
    return SequenceEncoder(spec.vocab_size, c.d_model, spec.seq_len, layers, pos_emb=c.pos_emb,
                           pooling=c.pooling, dropout=c.dropout, final_norm=final,
                           axial_shape=tuple(c.axial_shape) if c.axial_shape else None)


class LRAClassifier(nn.Module):
    """Encoder + head. ``forward(batch) -> logits (B, C)``; retrieval batches carry ``input_ids_1``/``mask_1``
    and both documents go through the same encoder (shared weights, no cross-attention)."""

    def __init__(self, encoder: SequenceEncoder, spec, head_cfg: HeadConfig):
        super().__init__()
        self.encoder, self.dual = encoder, spec.dual_input
        d = encoder.d_model
        self.head = (DualHead(d, head_cfg.mlp_dim, spec.num_classes, head_cfg.interaction) if self.dual
                     else ClassifierHead(d, head_cfg.mlp_dim, spec.num_classes))

    def forward(self, batch: dict) -> torch.Tensor:
        """``batch["all_real"]`` / ``batch["all_real_1"]`` (optional Python bools, set on the host by
        :meth:`models.module.LRAModule.on_before_batch_transfer`): the mask has no padding, so the layers may
        skip it."""
        u = self.encoder(batch["input_ids"], batch["mask"], all_real=batch.get("all_real", False))
        if not self.dual:
            return self.head(u)
        v = self.encoder(batch["input_ids_1"], batch["mask_1"], all_real=batch.get("all_real_1", False))
        return self.head(u, v)


def build_model(model_cfg: dict, attention_cfg: dict, spec) -> LRAClassifier:
    name = model_cfg.get("name")
    if name not in MODEL_REGISTRY:
        raise KeyError(f"unknown model family {name!r}; registered: {sorted(MODEL_REGISTRY)}")
    encoder = MODEL_REGISTRY[name](model_cfg, attention_cfg, spec)
    head = parse_config(HeadConfig, dict(model_cfg.get("head") or {}), f"conf/model/{name}.yaml: head")
    return LRAClassifier(encoder, spec, head)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Model families. Explicit imports fill the registry (greppable, testable).
from models import mega as _mega  # noqa: E402,F401  (registers "mega")
