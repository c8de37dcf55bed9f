"""The lecture's plots, written as PNG files (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def _save(fig, path: Path, dpi: int = 100) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def loss_curve(losses: torch.Tensor, path: Path, window: int = 1000) -> None:
    """log10 of the training loss, averaged over `window` steps (the lecture's plot)."""
    losses = losses.detach().float().cpu()
    window = max(1, min(window, len(losses) // 20 or 1))
    usable = len(losses) // window * window
    means = losses[:usable].view(-1, window).mean(1).log10()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot((torch.arange(len(means)) + 1) * window, means)
    ax.set_xlabel("step")
    ax.set_ylabel(f"log10 loss (mean of {window} steps)")
    ax.set_title("training loss")
    ax.grid(alpha=0.3)
    _save(fig, path)


def embedding_scatter(table: torch.Tensor, labels: Sequence[str], path: Path) -> None:
    """Each character at its embedding (2-D as is; larger: its first two principal axes)."""
    emb = table.detach().float().cpu()
    title = "character embeddings"
    if emb.shape[1] > 2:
        centred = emb - emb.mean(0)
        _, _, v = torch.linalg.svd(centred, full_matrices=False)
        emb = centred @ v[:2].t()
        title += f" (first two principal axes of {table.shape[1]} dims)"
    elif emb.shape[1] == 1:
        emb = torch.cat([emb, torch.zeros_like(emb)], dim=1)
    fig, ax = plt.subplots(figsize=(8, 8))
    ax.scatter(emb[:, 0], emb[:, 1], s=200)
    for i, label in enumerate(labels):
        ax.text(emb[i, 0].item(), emb[i, 1].item(), label, ha="center", va="center",
                color="white")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    _save(fig, path)


def lr_sweep(exponents: torch.Tensor, losses: torch.Tensor, suggested_exponent: float,
             path: Path) -> None:
    """Loss against log10 of the learning rate, as in the lecture's learning-rate search."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot(exponents.cpu(), losses.cpu(), linewidth=0.8)
    ax.axvline(suggested_exponent, color="tab:red", linestyle="--",
               label=f"suggested: 10^{suggested_exponent:.2f}")
    ax.set_xlabel("log10 learning rate")
    ax.set_ylabel("loss")
    ax.set_title("learning-rate sweep")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def histograms(series: Sequence[tuple[str, torch.Tensor]], title: str, path: Path,
               value_range=None, bins: int = 100) -> None:
    """One line per series: the density of its values (the lecture's layer histograms)."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for label, values in series:
        v = values.detach().float().cpu()
        lo, hi = value_range or (v.min().item(), v.max().item())
        if hi <= lo:
            hi = lo + 1e-12
        counts = torch.histc(v, bins=bins, min=lo, max=hi)
        edges = torch.linspace(lo, hi, bins + 1)
        density = counts / max(v.numel(), 1) / ((hi - lo) / bins)
        ax.plot((edges[:-1] + edges[1:]) / 2, density, label=label)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def update_ratios(steps: Sequence[int], values: torch.Tensor, names: Sequence[str],
                  path: Path) -> None:
    """log10 of update:data per weight matrix over training, with the 1e-3 guide line."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, name in enumerate(names):
        ax.plot(list(steps), values[:, i].tolist(), label=name, linewidth=0.8)
    ax.axhline(-3, color="black", linestyle="--", label="1e-3 (guide)")
    ax.set_xlabel("step")
    ax.set_ylabel("log10 (update std / data std)")
    ax.set_title("update:data ratio")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(fig, path)


def bigram_counts(counts: torch.Tensor, labels: Sequence[str], path: Path) -> None:
    """The count matrix N[previous, next], each cell labelled with its pair and count."""
    counts = counts.cpu()
    v = counts.shape[0]
    fig, ax = plt.subplots(figsize=(max(8, v * 0.6), max(8, v * 0.6)))
    ax.imshow(counts.numpy(), cmap="Blues")  # an array: matplotlib warns on tensors
    for i in range(v):
        for j in range(v):
            ax.text(j, i, labels[i] + labels[j], ha="center", va="bottom", color="gray",
                    fontsize=7)
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="top", color="gray",
                    fontsize=7)
    ax.set_xticks(range(v), list(labels))
    ax.set_yticks(range(v), list(labels))
    ax.set_xlabel("next character")
    ax.set_ylabel("previous character")
    ax.set_title("bigram counts")
    _save(fig, path, dpi=80)
