"""lra.cpu_memory: the CPU peak the bench reports, against allocation patterns whose peak is known."""
from __future__ import annotations

import torch

from lra.cpu_memory import cpu_peak_bytes, live_bytes

MiB = 1 << 20


def test_live_bytes_counts_each_storage_once():
    a = torch.empty(MiB, dtype=torch.uint8)
    assert live_bytes([a, a[10:], a.view(torch.int32), None, torch.empty(3, dtype=torch.float64)]) == MiB + 24


def test_peak_of_a_known_step():
    """Persistent 3 MiB; each step frees the previous step's 1 MiB result, holds 4 + 2 MiB of temporaries at
    once, frees them and keeps a new 1 MiB result: peak = 3 + 4 + 2 = 9 MiB (the old result is gone first)."""
    persistent = torch.zeros(3 * MiB, dtype=torch.uint8)
    kept = {"out": torch.empty(MiB, dtype=torch.uint8)}  # allocated before the profiler starts

    def step():
        kept.pop("out")
        a = torch.empty(4 * MiB, dtype=torch.uint8)
        b = torch.empty(2 * MiB, dtype=torch.uint8)
        del a, b
        kept["out"] = torch.empty(MiB, dtype=torch.uint8)

    assert cpu_peak_bytes(step, lambda: [persistent, kept.get("out")]) == 9 * MiB


def test_peak_follows_the_quadratic_attention_matrix():
    """Full softmax attention keeps (B, H, L, L) score and probability matrices for backward: doubling L
    multiplies the step's peak by about 4 once they dominate, and the peak is at least those two matrices."""
    lin = torch.nn.Linear(16, 16)
    peaks = {}
    for L in (512, 1024):
        x = torch.randn(1, 4, L, 16)

        def step():
            q = lin(x)
            attn = torch.softmax(q @ q.transpose(-1, -2), dim=-1)
            (attn @ q).sum().backward()

        peaks[L] = cpu_peak_bytes(step, lambda: [*lin.parameters(), *(p.grad for p in lin.parameters()), x])
        assert peaks[L] >= 2 * 4 * L * L * 4
    assert 3.5 < peaks[1024] / peaks[512] < 4.5
