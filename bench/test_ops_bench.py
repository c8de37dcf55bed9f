"""CPU benchmarks of the fused ops against the PyTorch composites (pytest-benchmark).

    make bench        # or: python -m pytest bench --benchmark-only --benchmark-group-by=group
"""
import time

import pytest

import cases
from conftest import MEDIANS


@pytest.mark.parametrize("impl", ["pymakemore", "torch"])
@pytest.mark.parametrize("op,case,sizes", cases.CASES, ids=[f"{o}-{c}" for o, c, _ in cases.CASES])
def test_fwd_bwd(benchmark, op, case, sizes, impl):
    step = cases.make(op, sizes)[impl]
    benchmark.group = f"{op} {case}"
    # warm up: first calls pay one-time set-up, and the first timed loop of a process runs
    # slow for a while (seen here on either implementation, whichever came first)
    deadline = time.perf_counter() + 0.3
    while time.perf_counter() < deadline:
        step()
    big = sum(sizes.values()) > 100_000 or sizes.get("c", 0) * sizes.get("n", 0) > 10**7
    if big:
        benchmark.pedantic(step, rounds=7, warmup_rounds=1)
    else:
        benchmark(step)
    MEDIANS.setdefault((op, case), {})[impl] = benchmark.stats.stats.median
