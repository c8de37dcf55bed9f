"""Collects each benchmark's median and prints, at the end, one markdown row per case with
the ratio torch / pymakemore (above 1: the fused op is faster)."""
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

MEDIANS = {}  # (op, case) -> {impl: median seconds}


def cpu_name():
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def pytest_terminal_summary(terminalreporter):
    if not MEDIANS:
        return
    write = terminalreporter.write_line
    write("")
    write(f"fwd+bwd medians, torch {torch.__version__}, {cpu_name()}, "
          f"{torch.get_num_threads()} threads")
    write("| op | shape | pymakemore (us) | torch (us) | torch / pymakemore |")
    write("|---|---|---:|---:|---:|")
    for (op, case), times in MEDIANS.items():
        if {"pymakemore", "torch"} <= times.keys():
            ours, theirs = times["pymakemore"] * 1e6, times["torch"] * 1e6
            write(f"| {op} | {case} | {ours:,.1f} | {theirs:,.1f} | {theirs / ours:.2f}x |")
