"""The fused ops' maths in plain torch: the test oracle and the `--ops torch` path.

Written from the definitions (explicit max-subtracted log-sum-exp, explicit tanh of a matrix
product, row gather), not by calling the torch.nn.functional ops they are compared against.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["embedding", "linear", "linear_tanh", "cross_entropy", "batch_norm_tanh"]


def _only_value(value: Tensor, grad_flows: Tensor) -> Tensor:
    """`value` in the forward; in the backward the gradient of `grad_flows` only."""
    return grad_flows + (value - grad_flows).detach()


def embedding(input: Tensor, weight: Tensor, padding_idx: Optional[int] = None,
              scale_grad_by_freq: bool = False) -> Tensor:
    if input.dtype not in (torch.int64, torch.int32):
        raise RuntimeError(f"embedding: expected int64 or int32 indices, got {input.dtype}")
    flat = input.reshape(-1).long()
    rows = weight.index_select(0, flat)
    if padding_idx is None and not scale_grad_by_freq:
        return rows.reshape(*input.shape, weight.shape[1])
    scale = torch.ones(flat.shape, dtype=weight.dtype, device=weight.device)
    if scale_grad_by_freq:
        counts = torch.bincount(flat, minlength=weight.shape[0]).to(weight.dtype)
        scale = 1.0 / counts[flat]
    if padding_idx is not None:
        pad = padding_idx % weight.shape[0]
        scale = torch.where(flat == pad, torch.zeros_like(scale), scale)
    rows = _only_value(rows, rows * scale.unsqueeze(1))
    return rows.reshape(*input.shape, weight.shape[1])


def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    z = input @ weight.t()
    return z if bias is None else z + bias


def linear_tanh(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    return torch.tanh(linear(input, weight, bias))


def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None,
                  ignore_index: int = -100, reduction: str = "mean",
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross entropy of (N, C) logits against (N,) class indices."""
    if reduction not in ("none", "mean", "sum"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    n, c = input.shape
    target = target.long()
    keep = target != ignore_index
    safe_target = torch.where(keep, target, torch.zeros_like(target))  # gather checks range
    m = input.max(dim=1, keepdim=True).values.detach()
    lse = m + torch.log(torch.exp(input - m).sum(dim=1, keepdim=True))
    log_prob = input - lse
    class_weight = torch.ones(c, dtype=input.dtype, device=input.device) if weight is None \
        else weight
    w_target = class_weight[safe_target] * keep.to(input.dtype)
    nll = -log_prob.gather(1, safe_target.unsqueeze(1)).squeeze(1) * w_target
    smooth = -(log_prob * class_weight).sum(dim=1) * keep.to(input.dtype)
    eps = label_smoothing
    # masked rows are exactly zero even when a row's smoothing term is inf or NaN
    row_loss = torch.where(keep, (1 - eps) * nll + eps / c * smooth, torch.zeros_like(nll))
    if reduction == "none":
        return row_loss
    if reduction == "sum":
        return row_loss.sum()
    # a divisor of 0 gives NaN even with label smoothing's term (torch's target term is 0 / 0)
    divisor = w_target.sum()
    return torch.where(divisor == 0, torch.nan, row_loss.sum() / divisor)


def batch_norm_tanh(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
                    weight: Optional[Tensor] = None, bias: Optional[Tensor] = None,
                    training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
                    unbiased: bool = False) -> Tensor:
    """tanh(BatchNorm(input)) over every dimension but the last (the features). training: the
    batch's mean and variance (divided by N - 1 when `unbiased`, the lectures' BatchNorm1d, by
    N otherwise, as F.batch_norm), the running statistics moved towards the mean and the
    unbiased variance by `momentum`, in place; else the running statistics."""
    dims = tuple(range(input.dim() - 1))
    if training:
        mean = input.mean(dims)
        var = input.var(dims, correction=1 if unbiased else 0)
        with torch.no_grad():
            if running_mean is not None:
                running_mean.lerp_(mean.to(running_mean.dtype), momentum)
            if running_var is not None:
                n = input.numel() // max(input.shape[-1], 1)
                unbiased_var = var if unbiased else var * (n / (n - 1))
                running_var.lerp_(unbiased_var.to(running_var.dtype), momentum)
    else:
        mean, var = running_mean.to(input.dtype), running_var.to(input.dtype)
    z = (input - mean) * torch.rsqrt(var + eps)
    if weight is not None:
        z = z * weight
    if bias is not None:
        z = z + bias
    return torch.tanh(z)


def linear_cross_entropy(input: Tensor, weight: Tensor, target: Tensor,
                         bias: Optional[Tensor] = None, ignore_index: int = -100,
                         reduction: str = "mean", label_smoothing: float = 0.0,
                         softcap: Optional[float] = None, z_loss: float = 0.0,
                         ce_weight: Optional[Tensor] = None) -> Tensor:
    """The composite: cross entropy of the (softcapped) logits input @ weight.T + bias with
    class weights ce_weight, plus z_loss * lse^2 per counted row (PaLM's z-loss) times the row's
    class weight, reduced as the cross entropy is (a mean divides by the weights' sum)."""
    logits = linear(input, weight, bias)
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    loss = cross_entropy(logits, target, ce_weight, ignore_index=ignore_index,
                         reduction="none", label_smoothing=label_smoothing)
    keep = target != ignore_index
    safe = torch.where(keep, target, torch.zeros_like(target))
    row_weight = keep.to(logits.dtype) if ce_weight is None else \
        torch.where(keep, ce_weight.to(logits.dtype)[safe], torch.zeros_like(logits[:, 0]))
    if z_loss:
        lse = torch.logsumexp(logits, dim=1)
        loss = loss + z_loss * lse * lse * row_weight
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / row_weight.sum()
