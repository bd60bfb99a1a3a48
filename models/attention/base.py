"""The one attention interface, its registry, and the shared conventions.

Conventions (the only place they are written down):

* layout inside a backend is ``(B, H, L, d)`` for q, k and v; the output has v's layout;
* ``key_padding_mask`` is a bool tensor ``(B, L_k)`` with **True = real token** (SDPA's rule);
  ``None`` means every key is real;
* a query row whose keys are all masked never produces NaN (backends return zeros there; the
  shared :class:`models.encoder.MultiHeadAttention` then applies the mask mode, see ``mask_mode``);
* softmax statistics are computed in fp32 whatever the input dtype.

Every backend mixes tokens and nothing else: the Q/K/V/O projections live in the shared block, so
all backends get the same parameter budget. ``forward`` is pure (no ``.item()``, no logging).
A backend that cannot run a request raises :class:`BackendUnsupported` with every reason; nothing
falls back silently.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

ATTENTION_REGISTRY: dict[str, type["AttentionBackend"]] = {}


class BackendUnsupported(RuntimeError):
    """Raised when a backend cannot run the requested configuration; the message lists why."""


@dataclass(frozen=True)
class Capabilities:
    """What a backend supports. ``exact`` means it computes softmax attention exactly."""

    exact: bool
    dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16")
    devices: tuple[str, ...] = ("cpu", "cuda")
    length_multiple: int = 1  # handled internally by padding when > 1
    notes: tuple[str, ...] = field(default_factory=tuple)


_DTYPE_NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16", torch.float64: "fp64"}


class AttentionBackend(nn.Module):
    """Base class of every token-mixing backend.

    Subclasses set ``name`` (by the registry decorator), ``capabilities`` and ``reference`` (the
    exact backend they converge to, or ``None`` for an exact backend) and implement ``forward``.
    Constructor arguments come from ``conf/attention/<name>.yaml`` (minus ``name``) plus the
    model geometry (``num_heads``, ``head_dim``, ``max_len``); unknown keys raise ``TypeError``.
    """

    name: str = ""
    capabilities: Capabilities = Capabilities(exact=True)
    reference: str | None = None

    def not_supported_reasons(self, q: torch.Tensor) -> list[str]:
        reasons = []
        dt = _DTYPE_NAMES.get(q.dtype, str(q.dtype))
        if dt not in self.capabilities.dtypes and dt != "fp64":
            reasons.append(f"dtype {dt} not in {self.capabilities.dtypes}")
        if q.device.type not in self.capabilities.devices:
            reasons.append(f"device {q.device.type} not in {self.capabilities.devices}")
        return reasons

    def check(self, q: torch.Tensor) -> None:
        reasons = self.not_supported_reasons(q)
        if reasons:
            raise BackendUnsupported(f"attention={self.name} cannot run: " + "; ".join(reasons))

    def forward(self, q, k, v, key_padding_mask=None):  # pragma: no cover - interface
        raise NotImplementedError


def register_attention(name: str):
    """Class decorator: ``@register_attention("nystrom")``. Duplicates and non-subclasses raise."""

    def deco(cls):
        if not (isinstance(cls, type) and issubclass(cls, AttentionBackend)):
            raise TypeError(f"@register_attention({name!r}) needs an AttentionBackend subclass, got {cls!r}")
        if name in ATTENTION_REGISTRY:
            raise ValueError(f"attention backend {name!r} registered twice "
                             f"({ATTENTION_REGISTRY[name].__module__} and {cls.__module__})")
        cls.name = name
        ATTENTION_REGISTRY[name] = cls
        return cls

    return deco


def build_attention(name: str, *, num_heads: int, head_dim: int, max_len: int, **options) -> AttentionBackend:
    """Build a registered backend. Unknown names and unknown option keys raise with the valid choices."""
    if name not in ATTENTION_REGISTRY:
        raise KeyError(f"unknown attention backend {name!r}; registered: {sorted(ATTENTION_REGISTRY)} "
                       f"(one file per backend in models/attention/, one yaml in conf/attention/)")
    cls = ATTENTION_REGISTRY[name]
    try:
        return cls(num_heads=num_heads, head_dim=head_dim, max_len=max_len, **options)
    except TypeError as e:
        raise TypeError(f"conf/attention/{name}.yaml: bad option for backend {name!r}: {e}") from e


def finite_mask_bias(key_padding_mask: torch.Tensor | None, dtype=torch.float32) -> torch.Tensor | None:
    """(B, L) bool keep-mask -> (B, 1, 1, L) additive bias: 0 where kept, large negative where masked."""
    if key_padding_mask is None:
        return None
    neg = torch.finfo(dtype).min / 2 if dtype != torch.float32 else -1e10
    bias = torch.zeros(key_padding_mask.shape, dtype=dtype, device=key_padding_mask.device)
    bias = bias.masked_fill(~key_padding_mask, neg)
    return bias[:, None, None, :]


def unmask_empty_rows(key_padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """Return the mask with rows that have no real key set to all-True (so fused kernels never see an
    empty row, whose NaN would also poison the backward pass); zero those rows afterwards with
    :func:`zero_fully_masked_rows`."""
    if key_padding_mask is None:
        return None
    empty = ~key_padding_mask.any(dim=-1, keepdim=True)  # (B, 1)
    return key_padding_mask | empty


def zero_fully_masked_rows(out: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    """Zero the output of every (b, h) whose keys are all masked (guards NaN from fused kernels)."""
    if key_padding_mask is None:
        return out
    any_key = key_padding_mask.any(dim=-1)  # (B,)
    return torch.where(any_key[:, None, None, None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``F.dropout`` in training (inverted: keep with probability 1 − p, survivors scaled by 1/(1 − p)).

    CPU: the same distribution drawn as ``uniform ≥ p``. ATen's CPU ``bernoulli_(1 − p)`` inside F.dropout
    is serial and costs ~2x a (also serial) ``uniform_`` per element, and on the (B, H, L/c, c, G + span)
    scores of Longformer it is the largest single cost of a CPU training step (L 4K, w 512, per layer: F.dropout forward +
    backward 28 ms, 23 of them in bernoulli_; this: 15 ms, 12 in uniform_). Which weights are dropped for a
    given seed is an implementation detail either way: it already depends on the block layout, and the
    ``reference``/``flex`` paths draw differently or not at all. GPU: F.dropout (fused kernel).
    """
    if x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p=p)
    keep = torch.rand_like(x).ge_(p).mul_(1.0 / (1.0 - p))  # U[0, 1) ≥ p with probability 1 − p, in place
    return x * keep
