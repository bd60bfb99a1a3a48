"""Peak memory of a CPU training step, for the efficiency bench (CUDA has ``torch.cuda.max_memory_allocated``;
PyTorch keeps no such statistic for the CPU allocator).

Method: run the step twice under the PyTorch profiler with ``profile_memory=True``, which records every block
PyTorch's CPU allocator hands out or takes back, with its size and time. The bytes live when the second step
starts are counted exactly from the tensors the caller names (parameters, buffers, gradients, optimizer state,
the batch); the peak is that plus the highest running total of the allocations made during the second step.
The first profiled step is there so that every block the second step frees (the previous step's gradients,
for example) was handed out while the profiler watched: the profiler cannot size a block allocated before it
started, and drops its free.

What it counts, as ``max_memory_allocated`` does on CUDA: tensors and workspaces that go through PyTorch's
allocator. What it does not: memory that BLAS / oneDNN / Python allocate on their own, and live tensors the
caller does not name (small: cached tables held outside the module's buffers).
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import contextmanager

import torch
from torch.profiler import ProfilerActivity, profile, record_function

_MARK = "lra.cpu_memory.measured_step"


def live_bytes(tensors: Iterable[torch.Tensor | None]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views and shared storages are counted once)."""
    sizes = {}
    for t in tensors:
        if t is not None and t.device.type == "cpu":
            s = t.untyped_storage()
            sizes[s.data_ptr()] = s.nbytes()
    return sum(sizes.values())


@contextmanager
def _quiet_stderr():
    """The profiler's native start/stop code prints a line to fd 2 each time; keep bench logs readable."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _allocations(prof) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """(time, signed bytes) of every allocator event, and the (start, end) time of the measured step."""
    try:
        from torch._C._profiler import _EventType
        tree = prof.profiler.kineto_results.experimental_event_tree()
    except (ImportError, AttributeError) as e:
        raise RuntimeError(f"lra.cpu_memory reads the profiler's event tree, which this torch "
                           f"({torch.__version__}) does not expose as expected: {e}") from e
    events, window, stack = [], None, list(tree)
    while stack:
        node = stack.pop()
        if node.tag == _EventType.Allocation:
            events.append((node.start_time_ns, int(node.extra_fields.alloc_size)))
        elif node.name == _MARK:
            window = (node.start_time_ns, node.end_time_ns)
        stack.extend(node.children)
    if window is None:
        raise RuntimeError(f"lra.cpu_memory: the profiler recorded no '{_MARK}' range; cannot place the step")
    events.sort()
    return events, window


def cpu_peak_bytes(step: Callable[[], None], live: Callable[[], Iterable[torch.Tensor | None]]) -> int:
    """Peak bytes held by PyTorch's CPU allocator during one call of ``step``.

    ``live()`` names the tensors that persist across steps (called between the two profiled steps)."""
    with _quiet_stderr():
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        prof.__enter__()
    try:
        step()
        start_bytes = live_bytes(live())
        with record_function(_MARK):
            step()
    finally:
        with _quiet_stderr():
            prof.__exit__(None, None, None)
    events, (t0, t1) = _allocations(prof)
    running = highest = 0
    for t, nbytes in events:
        if t < t0:
            continue
        if t > t1:
            break
        running += nbytes
        highest = max(highest, running)
    return start_bytes + highest
