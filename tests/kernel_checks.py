"""Shared helpers of the kernel tests (tests/kernels/): padding masks, NaN-filled padding and NaN past the end
of a tensor, the tolerance rule (STYLE §6: a kernel's error against a float64 golden run is at most twice the
reference's error at the same input precision, plus a small atol), the Triton requirement and the devices the
Triton kernels are tested on."""
from __future__ import annotations

import importlib
import os

import pytest
import torch

from kernels.yoso.function import triton_unavailable_reason


def triton_import_error() -> str | None:
    """Why triton cannot be imported (None when it can). With ``LRA_REQUIRE_TRITON=1`` (CI: the Triton kernel
    tests must not be skipped silently) a missing triton fails the caller instead, at collection when called
    at module level."""
    try:
        importlib.import_module("triton")
    except ImportError as e:
        reason = f"triton is not importable ({e}); the Triton kernel tests cannot run"
        if os.environ.get("LRA_REQUIRE_TRITON") == "1":
            pytest.fail(f"{reason}, and LRA_REQUIRE_TRITON=1 requires them", pytrace=False)
        return reason
    return None


def require_triton() -> None:
    """Skip the calling test module without triton, or fail it under ``LRA_REQUIRE_TRITON=1``. Module level."""
    reason = triton_import_error()
    if reason:
        pytest.skip(reason, allow_module_level=True)


def triton_devices() -> list:
    """``device`` parameters of the Triton kernel tests: ``cpu`` under ``TRITON_INTERPRET=1``, ``cuda``
    (marked ``gpu``) on a CUDA device with the interpreter off (compiled kernels); each skipped with its reason
    otherwise. Call after setting TRITON_INTERPRET (the test modules set it when there is no CUDA device)."""
    cpu = triton_unavailable_reason("cpu")
    if not torch.cuda.is_available():
        cuda = "needs a CUDA device"
    elif os.environ.get("TRITON_INTERPRET") == "1":
        cuda = "TRITON_INTERPRET=1: the cuda parameters test the compiled kernels"
    else:
        cuda = triton_unavailable_reason("cuda")
    return [pytest.param("cpu", marks=pytest.mark.skipif(cpu is not None, reason=f"CPU Triton tests: {cpu}")),
            pytest.param("cuda", marks=(pytest.mark.gpu, pytest.mark.skipif(cuda is not None, reason=str(cuda))))]


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


def nan_tail(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy of x at the start of a NaN-filled buffer twice its size (+ 4096 elements): a kernel
    that reads past the end of the tensor (a tail tile past L) picks up NaN and poisons its output, which
    NaN-filled padding alone cannot catch. Detached; call ``requires_grad_`` on the result as needed."""
    n = x.numel()
    buf = torch.full((2 * n + 4096,), float("nan"), dtype=x.dtype, device=x.device)
    return buf[:n].view(x.shape).copy_(x.detach())


def assert_within(got, ref_low, gold, name: str, rel_atol: float = 1e-6) -> None:
    """|got − gold| ≤ 2·|ref_low − gold| + rel_atol·max(1, |gold|), all finite."""
    gold = gold.double()
    assert torch.isfinite(got).all(), f"{name}: non-finite values"
    err_got = (got.double() - gold).abs().max().item()
    err_ref = (ref_low.double() - gold).abs().max().item()
    atol = rel_atol * max(1.0, gold.abs().max().item())
    assert err_got <= 2 * err_ref + atol, \
        f"{name}: kernel error {err_got:.3e} > 2 x reference {err_ref:.3e} + {atol:.1e}"
