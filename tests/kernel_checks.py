"""Shared helpers of the kernel tests (tests/kernels/): padding masks, NaN-filled padding and the tolerance rule
(STYLE §6): a kernel's error against a float64 golden run is at most twice the reference's error at the same
input precision, plus a small atol."""
from __future__ import annotations

import torch


def masks(BH: int, L: int, device="cpu", seed: int = 0) -> torch.Tensor:
    """(BH, L) bool: row 0 all real, row 1 suffix-padded, row 2 fully padded, further rows random."""
    g = torch.Generator().manual_seed(seed)
    m = torch.ones(BH, L, dtype=torch.bool)
    if BH > 1:
        m[1, max(1, L // 2):] = False
    if BH > 2:
        m[2] = False
    if BH > 3:
        m[3:] = torch.rand(BH - 3, L, generator=g) > 0.3
    return m.to(device)


def nan_pad(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fill padded rows with NaN: a kernel that reads them poisons its output."""
    return torch.where(mask[..., None], x, torch.full((), float("nan"), dtype=x.dtype, device=x.device))


def assert_within(got, ref_low, gold, name: str, rel_atol: float = 1e-6) -> None:
    """|got − gold| ≤ 2·|ref_low − gold| + rel_atol·max(1, |gold|), all finite."""
    gold = gold.double()
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err_got = (got.double() - gold).abs().max().item()
    err_ref = (ref_low.double() - gold).abs().max().item()
    atol = rel_atol * max(1.0, gold.abs().max().item())
    assert err_got <= 2 * err_ref + atol, \
        f"{name}: kernel error {err_got:.3e} > 2 x reference {err_ref:.3e} + {atol:.1e}"
