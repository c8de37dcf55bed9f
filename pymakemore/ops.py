"""Fused ops: drop-ins for torch.nn.functional composites.

    from pymakemore import ops
    emb = ops.embedding(idx, table)                 # F.embedding(idx, table)
    h = ops.linear_tanh(x, w, b)                    # torch.tanh(F.linear(x, w, b))
    loss = ops.cross_entropy(logits, targets)       # F.cross_entropy(logits, targets)
    out = ops.linear(x, w, b)                       # F.linear(x, w, b)
    loss = ops.linear_cross_entropy(h, w, targets)  # F.cross_entropy(F.linear(h, w), targets)

Each is a PyTorch custom op (torch.ops.pymakemore.*) with its backward also a custom op, fake
kernels for torch.compile, and index/target range checks inside the op (no host-side checks
that would break a compiled graph). Signatures and defaults follow torch.nn.functional.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from . import _C  # loads the library that registers torch.ops.pymakemore.*

__all__ = ["embedding", "linear", "linear_tanh", "cross_entropy", "linear_cross_entropy",
           "batch_norm_tanh"]

_ops = torch.ops.pymakemore
_compiling = torch.compiler.is_compiling


def _entry(name: str):
    """torch.ops.pymakemore.<name> while torch.compile traces; in eager code _C's direct entry
    to the same dispatcher call, which skips torch.ops' generic argument handling (a few
    microseconds a call at makemore's shapes)."""
    direct, traced = getattr(_C, name), getattr(_ops, name)
    return lambda *args: traced(*args) if _compiling() else direct(*args)


_embedding, _linear, _linear_tanh = _entry("embedding"), _entry("linear"), _entry("linear_tanh")
_cross_entropy_direct = _C.cross_entropy


_any_autocast = getattr(torch._C, "_is_any_autocast_enabled", lambda: True)
_functorch_active = getattr(torch._C, "_are_functorch_transforms_active", lambda: False)


def _transformed() -> bool:
    """True under torch.func transforms (grad, vjp, jacrev, jacfwd, jvp, vmap) or forward-mode
    AD (torch.autograd.forward_ad): the ops then run as their torch composites, which every
    transform supports (batching rules, forward derivatives); the fused kernels serve eager
    code and torch.compile. Two cheap reads in eager code; torch.compile reads them while it
    traces, so a compiled function that applies a transform to the ops gets the composites."""
    return _functorch_active() or torch.autograd.forward_ad._current_level >= 0


def _autocast(to_float32: bool, *tensors: Optional[Tensor]):
    """The tensors as autocast would pass them to the F.* original: floating tensors (but
    float64) in autocast's dtype for linear, in float32 for cross entropy; None when autocast
    is off for their device (one cheap call when it is off everywhere: the eager fast path)."""
    if not _any_autocast():
        return None
    device_type = tensors[0].device.type
    if not torch.is_autocast_enabled(device_type):
        return None
    dtype = torch.float32 if to_float32 else torch.get_autocast_dtype(device_type)
    return [t.to(dtype) if t is not None and t.is_floating_point() and t.dtype != torch.float64
            else t for t in tensors]


def _check_same_device(op: str, *tensors: Optional[Tensor]) -> None:
    """The fake (meta) kernels' twin of the C++ device check."""
    devices = {t.device for t in tensors if t is not None}
    torch._check(len(devices) <= 1, lambda: (
        f"{op}: expected all tensors to be on the same device, but found "
        f"{sorted(str(d) for d in devices)}"))


# ---- embedding ------------------------------------------------------------------------------
def embedding(
    input: Tensor,
    weight: Tensor,
    padding_idx: Optional[int] = None,
    max_norm: Optional[float] = None,
    norm_type: float = 2.0,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
) -> Tensor:
    """Rows of `weight` (V, D) picked by `input` (int64/int32, any shape) -> (*input.shape, D).

    Same arguments as F.embedding. The weight gradient is dense and bit-for-bit
    deterministic. `sparse=True` asks for torch's sparse gradient, so it runs F.embedding.
    """
    if _transformed() or not weight.is_floating_point() and weight.dim() == 2:
        # under torch.func or forward-mode AD, or an integer table (no gradient, nothing to
        # fuse): torch's own
        return F.embedding(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                           sparse)
    if padding_idx is not None and weight.dim() == 2:  # (a wrong rank: the op says so)
        # F.embedding's checks, with its exception type, but not asserts: they hold under -O
        if not -weight.size(0) <= padding_idx < max(weight.size(0), 1):
            raise AssertionError("Padding_idx must be within num_embeddings")
        if padding_idx < 0:
            padding_idx = weight.size(0) + padding_idx
    if sparse:
        return F.embedding(input, weight, padding_idx, max_norm, norm_type, scale_grad_by_freq,
                           sparse)
    if max_norm is not None:
        # Renormalises the looked-up rows of weight in place, exactly as F.embedding does.
        with torch.no_grad():
            torch.embedding_renorm_(weight, input.contiguous(), max_norm, norm_type)
    return _embedding(input, weight, -1 if padding_idx is None else padding_idx,
                      scale_grad_by_freq)


@torch.library.register_fake("pymakemore::embedding")
def _embedding_fake(input, weight, padding_idx=-1, scale_grad_by_freq=False):
    _check_same_device("embedding", input, weight)
    return weight.new_empty((*input.shape, weight.shape[1]))


@torch.library.register_fake("pymakemore::embedding_backward")
def _embedding_backward_fake(grad_output, input, num_weights, padding_idx=-1,
                             scale_grad_by_freq=False):
    _check_same_device("embedding_backward", grad_output, input)
    return grad_output.new_empty((num_weights, grad_output.shape[-1]))



# ---- linear ---------------------------------------------------------------------------------
def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """input @ weight.T + bias: input (..., K), weight (H, K), bias (H,), as F.linear.

    The same register-tiled kernels as linear_tanh, without the activation; at makemore's
    small shapes it avoids the fixed cost of a BLAS call. F.linear's other cases (a 1-D
    weight, a bias that broadcasts) and autocast give what F.linear gives.
    """
    return _linear_like(_linear, False, input, weight, bias)


def _linear_like(fused, tanh: bool, input: Tensor, weight: Tensor, bias: Optional[Tensor]
                 ) -> Tensor:
    if _transformed() or not (input.is_floating_point() and weight.is_floating_point()):
        # torch.func transforms, and integer operands (F.linear computes them; the kernels
        # are floating-point): the composite
        y = F.linear(input, weight, bias)
        return torch.tanh(y) if tanh else y
    cast = _autocast(False, input, weight, bias)
    if cast is not None:
        with torch.autocast(input.device.type, enabled=False):
            return _linear_like(fused, tanh, *cast)
    if weight.dim() == 2 and (bias is None or bias.shape == weight.shape[:1]):
        return fused(input, weight, bias)
    # F.linear's other cases: a 1-D weight (one dot product per row, no output dimension)
    # or a bias that broadcasts ((), (1,), (N, H), ...), added before the activation
    y = _linear(input, weight.unsqueeze(0), None).squeeze(-1) if weight.dim() == 1 \
        else _linear(input, weight, None)  # (a wrong rank: the op says so)
    if bias is not None:
        y = y + bias
    return torch.tanh(y) if tanh else y


def _register_linear_fake(name: str) -> None:
    """linear and linear_tanh share one output shape."""
    def fake(input, weight, bias=None):
        _check_same_device(name, input, weight, bias)
        return input.new_empty((*input.shape[:-1], weight.shape[0]))
    torch.library.register_fake(f"pymakemore::{name}", fake)


_register_linear_fake("linear")
_register_linear_fake("linear_tanh")


@torch.library.register_fake("pymakemore::linear_backward")
def _linear_backward_fake(grad_output, input, weight, output_mask):
    _check_same_device("linear_backward", grad_output, input, weight)
    return _linear_grads_fake(input, weight, output_mask)


def _linear_grads_fake(input, weight, output_mask):
    empty = input.new_empty((0,))
    return (
        torch.empty_like(input) if output_mask[0] else empty,
        torch.empty_like(weight) if output_mask[1] else empty,
        input.new_empty((weight.shape[0],)) if output_mask[2] else empty,
    )


# ---- linear_tanh ----------------------------------------------------------------------------
def linear_tanh(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    """tanh(input @ weight.T + bias) in one pass: input (..., K), weight (H, K), bias (H,).

    Saves the output y for backward (not the pre-activation) and uses 1 - y^2 there. The other
    cases of F.linear (a 1-D weight, a bias that broadcasts) run as tanh(linear(...)).
    """
    return _linear_like(_linear_tanh, True, input, weight, bias)


@torch.library.register_fake("pymakemore::linear_tanh_backward")
def _linear_tanh_backward_fake(grad_output, output, input, weight, output_mask):
    _check_same_device("linear_tanh_backward", grad_output, output, input, weight)
    return _linear_grads_fake(input, weight, output_mask)


# ---- cross_entropy --------------------------------------------------------------------------
def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Optional[Tensor] = None,
    size_average: Optional[bool] = None,
    ignore_index: int = -100,
    reduce: Optional[bool] = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    softcap: Optional[float] = None,
    z_loss: float = 0.0,
    return_z_loss: bool = False,
    return_lse: bool = False,
):
    """F.cross_entropy with class-index targets, fused: the softmax is never stored. When the
    logits need a gradient and the loss is one value (mean, sum), the forward also writes that
    gradient in the same pass over the logits, and the backward only scales it; otherwise one
    log-sum-exp per row is saved and the backward recomputes softmax - onehot.

    Same arguments as F.cross_entropy. Input (N, C) with target (N,), input (C,) with target
    (), or input (N, C, d1, ...) with target (N, d1, ...); targets int64 or int32.
    Floating-point (class-probability) targets are handed to F.cross_entropy.

    Beyond F.cross_entropy, as linear_cross_entropy: softcap (the logits become
    c * tanh(logits / c) first, Gemma 2) and z_loss (z_loss * lse**2 added to each counted row's
    loss, weighted as the row is, PaLM). Those two run as torch elementwise ops around the
    fused loss (one more logits-sized tensor each); without them nothing changes.
    return_z_loss / return_lse: a tuple (loss, z-loss term, lse) with those asked for, as
    linear_cross_entropy returns them (the lse from one more pass, torch.logsumexp).
    """
    if size_average is not None or reduce is not None:
        reduction = torch.nn._reduction.legacy_get_string(size_average, reduce)
    input, target = _class_loss_operands(input, target)
    if return_z_loss or return_lse:
        return _cross_entropy_with_extras(input, target, weight, ignore_index, reduction,
                                          label_smoothing, softcap, z_loss, return_z_loss,
                                          return_lse)
    if softcap == float("inf"):  # the limit of c * tanh(x / c) as c grows: no cap at all
        softcap = None
    if softcap is not None or z_loss:  # (a NaN z_loss too: refused there)
        return _capped_cross_entropy(input, target, weight, ignore_index, reduction,
                                     label_smoothing, softcap, z_loss)
    cast = _autocast(True, input, weight)
    if cast is not None:  # autocast runs cross entropy in float32, as F.cross_entropy's
        with torch.autocast(input.device.type, enabled=False):
            return cross_entropy(cast[0], target, cast[1], ignore_index=ignore_index,
                                 reduction=reduction, label_smoothing=label_smoothing)
    if target.is_floating_point() or _transformed():  # probabilities, or torch.func
        return F.cross_entropy(input, target, weight, ignore_index=ignore_index,
                               reduction=reduction, label_smoothing=label_smoothing)
    if input.dim() == 2 or input.dim() == 0:
        if _compiling():
            return _ops.cross_entropy(input, target, weight, reduction, ignore_index,
                                      label_smoothing)[0]
        return _cross_entropy_direct(input, target, weight, reduction, ignore_index,
                                     label_smoothing)
    if input.dim() == 1:  # one sample: (C,) with a 0-d target
        if target.dim() != 0:
            raise RuntimeError(
                f"cross_entropy: input of shape {tuple(input.shape)} (unbatched) expects a 0-D "
                f"target, but got shape {tuple(target.shape)}")
        loss, _ = _ops.cross_entropy(input.unsqueeze(0), target.unsqueeze(0), weight, reduction,
                                     ignore_index, label_smoothing)
        return loss.squeeze(0) if reduction == "none" else loss
    # (N, C, d1, ...): move the class dim last and treat every position as a row.
    if target.dim() >= 1 and target.shape[0] != input.shape[0]:
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target "
                         f"batch_size ({target.shape[0]}).")
    expected = (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != expected:
        raise RuntimeError(f"cross_entropy: expected target of shape {list(expected)}, "
                           f"but got {list(target.shape)}")
    rows = input.movedim(1, -1).reshape(-1, input.shape[1])
    loss, _ = _ops.cross_entropy(rows, target.reshape(-1), weight, reduction, ignore_index,
                                 label_smoothing)
    return loss.reshape(target.shape) if reduction == "none" else loss


def _cross_entropy_with_extras(input, target, weight, ignore_index, reduction, label_smoothing,
                               softcap, z_loss, return_z_loss, return_lse):
    """cross_entropy's loss, then its z-loss term and/or each row's lse of the (capped)
    logits, differentiable (torch's logsumexp, in float32 for float16/bfloat16)."""
    if target.is_floating_point():
        raise ValueError("cross_entropy: return_z_loss and return_lse need class-index targets")
    loss = cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing, softcap=softcap, z_loss=z_loss)
    logits = input.float() if input.dtype in (torch.float16, torch.bfloat16) else input
    if softcap is not None and softcap != float("inf"):
        logits = softcap * torch.tanh(logits / softcap)
    lse = torch.logsumexp(logits, dim=1 if input.dim() > 1 else 0)
    out = [loss]
    if return_z_loss:
        out.append(_z_loss_term(lse, target, weight, ignore_index, reduction, z_loss,
                                lambda t: t).to(loss.dtype))
    if return_lse:
        out.append(lse.to(input.dtype))
    return tuple(out)


def _class_loss_operands(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """F.cross_entropy's rules for the dtypes the kernels do not take: uint8 class targets are
    accepted (as int64); integer logits are NotImplementedError, as there."""
    if not input.is_floating_point() and not input.is_complex():
        raise NotImplementedError(f'"cross_entropy" not implemented for integer logits '
                                  f'({input.dtype}), as in F.cross_entropy')
    if target.dtype == torch.uint8:
        target = target.long()
    return input, target


def _capped_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing,
                          softcap, z_loss):
    """cross_entropy with softcap and/or z_loss: the logits capped, then the fused loss, plus
    the z-loss rows reduced as the loss's rows are."""
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    out_dtype = input.dtype
    if softcap is not None:
        if not softcap > 0:
            raise ValueError(f"cross_entropy: softcap must be > 0, got {softcap}")
        if input.dtype in (torch.float16, torch.bfloat16):
            # capped in float32 (as linear_cross_entropy): a cap rounded to 8 bits of mantissa
            # moves logits near the cap by whole units and their gradients by percents
            input = input.float()
            weight = weight.float() if weight is not None else None
        input = softcap * torch.tanh(input / softcap)
    loss = cross_entropy(input, target, weight, ignore_index=ignore_index, reduction=reduction,
                         label_smoothing=label_smoothing)
    if not z_loss >= 0:  # NaN included
        raise ValueError(f"cross_entropy: z_loss must be >= 0, got {z_loss}")
    if not z_loss:
        return loss.to(out_dtype)
    if target.is_floating_point():
        raise ValueError("cross_entropy: z_loss needs class-index targets")
    lse = torch.logsumexp(input, dim=1 if input.dim() > 1 else 0)
    term = _z_loss_term(lse, target, weight, ignore_index, reduction, z_loss, lambda t: t)
    return (loss + term.to(loss.dtype)).to(out_dtype)


@torch.library.register_fake("pymakemore::cross_entropy")
def _cross_entropy_fake(input, target, weight=None, reduction="mean", ignore_index=-100,
                        label_smoothing=0.0):
    _check_same_device("cross_entropy", input, target, weight)
    n = input.shape[0]
    loss = input.new_empty((n,) if reduction == "none" else ())
    return loss, input.new_empty((n,), dtype=torch.float64)  # lse: float64 for every dtype


@torch.library.register_fake("pymakemore::cross_entropy_with_grad")
def _cross_entropy_with_grad_fake(input, target, weight=None, reduction="mean",
                                  ignore_index=-100, label_smoothing=0.0):
    torch._check(reduction != "none", lambda: (
        "cross_entropy_with_grad: needs reduction 'mean' or 'sum'"))
    loss, lse = _cross_entropy_fake(input, target, weight, reduction, ignore_index,
                                    label_smoothing)
    return loss, lse, torch.empty_like(input)


@torch.library.register_fake("pymakemore::scale_grad_")
def _scale_grad_fake(grad, grad_loss):
    _check_same_device("scale_grad_", grad, grad_loss)


@torch.library.register_fake("pymakemore::cross_entropy_backward")
def _cross_entropy_backward_fake(grad_loss, input, target, weight, lse, reduction, ignore_index,
                                 label_smoothing):
    _check_same_device("cross_entropy_backward", grad_loss, input, target, weight, lse)
    return torch.empty_like(input)




# ---- linear_cross_entropy -------------------------------------------------------------------
def linear_cross_entropy(
    input: Tensor,
    weight: Tensor,
    target: Tensor,
    bias: Optional[Tensor] = None,
    *,
    ce_weight: Optional[Tensor] = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    softcap: Optional[float] = None,
    z_loss: float = 0.0,
    shift: int = 0,
    return_z_loss: bool = False,
    return_lse: bool = False,
):
    """F.cross_entropy(F.linear(input, weight, bias), target, ce_weight, ...) without the
    N x V logits.

    input (N, D) with target (N,), (D,) with a 0-d target, or (B, ..., D) with batch
    dimensions and target (B, ...) (every position a row; reduction="none" gives the target's
    shape); weight (V, D); bias (V,); ce_weight (V,): the class weights (F.cross_entropy's
    `weight`; named as Liger-Kernel names it, `weight` being the head's matrix here).
    softcap: logits c * tanh(logits / c) before the loss (Gemma 2); z_loss: z_loss * lse**2
    added per counted row, weighted by the row's class weight, a mean dividing by the weights'
    sum as the cross entropy's does (PaLM). shift: position t predicts target t + shift of the
    same sequence (the target's last dimension), without slicing copies: the last `shift`
    positions count as ignored, and reduction="none" returns (..., T - shift).
    return_z_loss / return_lse: return a tuple (loss, z_loss term, lse) with those asked for:
    the z-loss term (already inside the loss; reduced as the loss) and each row's log-sum-exp of
    its (capped) logits (the target's shape, ignored rows included); both differentiable.
    Rows go through in chunks whose logits are never kept: the peak extra memory is one chunk
    (about 48 MiB) plus O(N). When a gradient is needed and the loss is one value (mean, sum),
    the forward computes the gradients in its pass and the backward scales them; for
    reduction="none" (or a gradient through the lse) the backward recomputes the chunks.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{reduction} is not a valid value for reduction")
    if target.dtype == torch.uint8:  # class indices, as F.cross_entropy accepts them
        target = target.long()
    steps = int(shift)
    if steps:
        length = target.shape[-1] if target.dim() else 0
        if not 0 <= steps < length:
            raise ValueError(f"linear_cross_entropy: shift must be in [0, {length}) for a "
                             f"target of shape {tuple(target.shape)}, got {shift}")
        # position t's target is t + shift's; the last positions have none (ignored)
        tail = target.new_full((*target.shape[:-1], steps), ignore_index)
        target = torch.cat((target[..., steps:], tail), dim=-1)
    loss, lse = _linear_cross_entropy_loss_and_lse(input, weight, target, bias, ce_weight,
                                                   ignore_index, reduction, label_smoothing,
                                                   softcap, z_loss)
    kept = (lambda t: t[..., :t.shape[-1] - steps]) if steps else (lambda t: t)
    if reduction == "none":
        loss = kept(loss)  # the positions that predict something
    if not (return_z_loss or return_lse):
        return loss
    out = [loss]
    if return_z_loss:
        out.append(_z_loss_term(lse, target, ce_weight, ignore_index, reduction, z_loss, kept)
                   .to(loss.dtype))
    if return_lse:
        out.append(kept(lse))
    return tuple(out)


def _z_loss_term(lse, target, ce_weight, ignore_index, reduction, z_loss, kept):
    """The z-loss term of both losses, from each row's lse: z_loss * lse**2 per counted row
    times the row's class weight, reduced as the loss (a mean over the weights' sum); `kept`
    selects the rows a "none" loss returns."""
    counted = target != ignore_index
    safe = torch.where(counted, target, torch.zeros_like(target))
    row_weight = counted.to(lse.dtype) if ce_weight is None else \
        torch.where(counted, ce_weight.to(lse.dtype)[safe], torch.zeros_like(lse))
    rows = (z_loss * lse * lse * row_weight) if z_loss else torch.zeros_like(lse)
    if reduction == "none":
        return kept(rows)
    return rows.sum() / row_weight.sum() if reduction == "mean" else rows.sum()


def _linear_cross_entropy_loss_and_lse(input, weight, target, bias, ce_weight, ignore_index,
                                       reduction, label_smoothing, softcap, z_loss):
    """(loss, lse) for every input shape, eager, compiled, under autocast or torch.func."""
    if input.dim() > 2:  # batch dimensions: every position is a row (a view, no copy)
        if target.shape != input.shape[:-1]:
            raise ValueError(f"linear_cross_entropy: input of shape {tuple(input.shape)} needs "
                             f"a target of shape {tuple(input.shape[:-1])}, but got "
                             f"{tuple(target.shape)}")
        loss, lse = _linear_cross_entropy_loss_and_lse(
            input.reshape(-1, input.shape[-1]), weight, target.reshape(-1), bias, ce_weight,
            ignore_index, reduction, label_smoothing, softcap, z_loss)
        return (loss.reshape(target.shape) if reduction == "none" else loss,
                lse.reshape(target.shape))
    if input.dim() == 1:  # one sample: (D,) with a 0-d target
        if target.dim() != 0:
            raise RuntimeError(
                f"linear_cross_entropy: input of shape {tuple(input.shape)} (unbatched) "
                f"expects a 0-D target, but got shape {tuple(target.shape)}")
        loss, lse = _linear_cross_entropy_loss_and_lse(
            input.unsqueeze(0), weight, target.unsqueeze(0), bias, ce_weight, ignore_index,
            reduction, label_smoothing, softcap, z_loss)
        return (loss.squeeze(0) if reduction == "none" else loss), lse.squeeze(0)
    if softcap is not None and not softcap > 0:
        raise ValueError(f"linear_cross_entropy: softcap must be > 0, got {softcap}")
    if not z_loss >= 0:
        raise ValueError(f"linear_cross_entropy: z_loss must be >= 0, got {z_loss}")
    options = (ignore_index, reduction, float(label_smoothing),
               None if softcap is None else float(softcap), float(z_loss))
    if _transformed():
        loss, lse = _linear_cross_entropy_composite(input, weight, target, bias, ce_weight,
                                                    *options)
        return loss.to(input.dtype), lse.to(input.dtype)
    cast = _autocast(False, input, weight, bias)
    if cast is not None:  # F.linear in autocast's dtype; the loss in float32, as autocast's
        with torch.autocast(input.device.type, enabled=False):
            return _linear_cross_entropy_op(*cast[:2], target, cast[2], ce_weight, options)
    loss, lse = _linear_cross_entropy_op(input, weight, target, bias, ce_weight, options)
    return loss.to(input.dtype), lse.to(input.dtype)


def _linear_cross_entropy_op(input, weight, target, bias, ce_weight, options):
    """The custom op on (N, D) rows: (loss, lse) in the row dtype (float32 for float16 and
    bfloat16 inputs)."""
    needs = (torch.is_grad_enabled() and input.requires_grad,
             torch.is_grad_enabled() and weight.requires_grad,
             torch.is_grad_enabled() and bias is not None and bias.requires_grad)
    in_forward = list(needs) if options[1] != "none" else [False] * 3
    loss, lse = _ops.linear_cross_entropy(input, weight, target, bias, ce_weight, *options,
                                          in_forward)[:2]
    return loss, lse


def _linear_cross_entropy_composite(input, weight, target, bias, ce_weight, ignore_index,
                                    reduction, label_smoothing, softcap, z_loss):
    """The same (loss, lse) with their logits (torch.func transforms, gradients of gradients),
    in the op's dtypes: F.linear, the rows in float32 for float16/bfloat16, then cross_entropy
    with the same options."""
    logits = F.linear(input, weight, bias)
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    if ce_weight is not None:
        ce_weight = ce_weight.to(logits.dtype)
    loss = cross_entropy(logits, target, ce_weight, ignore_index=ignore_index,
                         reduction=reduction, label_smoothing=label_smoothing, softcap=softcap,
                         z_loss=z_loss)
    capped = logits if softcap is None else softcap * torch.tanh(logits / softcap)
    return loss, torch.logsumexp(capped, dim=-1)


def _lce_check_fake(input, weight, target, bias, ce_weight):
    _check_same_device("linear_cross_entropy", input, weight, target, bias, ce_weight)
    torch._check(input.dim() == 2 and weight.dim() == 2 and input.shape[1] == weight.shape[1],
                 lambda: "linear_cross_entropy: input (N, D) and weight (V, D) expected")


def _loss_dtype(input):
    return torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype


@torch.library.register_fake("pymakemore::linear_cross_entropy")
def _linear_cross_entropy_fake(input, weight, target, bias, ce_weight, ignore_index, reduction,
                               label_smoothing, softcap, z_loss, grad_mask):
    _lce_check_fake(input, weight, target, bias, ce_weight)
    loss = input.new_empty((input.shape[0],) if reduction == "none" else (),
                           dtype=_loss_dtype(input))
    lse = input.new_empty((input.shape[0],), dtype=_loss_dtype(input))
    return (loss, lse, *_lce_grads_fake(input, weight, bias, grad_mask))


def _lce_grads_fake(input, weight, bias, mask):
    """grad_input, grad_weight, grad_bias: each asked-for one its parameter's shape, the
    others (distinct) empty tensors."""
    return (torch.empty_like(input) if mask[0] else input.new_empty((0,)),
            torch.empty_like(weight) if mask[1] else input.new_empty((0,)),
            weight.new_empty((weight.shape[0],)) if mask[2] and bias is not None
            else input.new_empty((0,)))


@torch.library.register_fake("pymakemore::linear_cross_entropy_backward")
def _linear_cross_entropy_backward_fake(grad_loss, grad_lse, input, weight, target, bias,
                                        ce_weight, ignore_index, reduction, label_smoothing,
                                        softcap, z_loss, output_mask):
    _lce_check_fake(input, weight, target, bias, ce_weight)
    return _lce_grads_fake(input, weight, bias, output_mask)


# ---- batch_norm_tanh ------------------------------------------------------------------------
def batch_norm_tanh(
    input: Tensor,
    running_mean: Optional[Tensor],
    running_var: Optional[Tensor],
    weight: Optional[Tensor] = None,
    bias: Optional[Tensor] = None,
    training: bool = False,
    momentum: float = 0.1,
    eps: float = 1e-5,
    unbiased: bool = False,
) -> Tensor:
    """torch.tanh(F.batch_norm(input, running_mean, running_var, weight, bias, training,
    momentum, eps)) in one op, for input (N, C); with more dimensions the features are the
    last one and the statistics run over all the others (the lectures' BatchNorm1d on
    (B, T, C), which F.batch_norm would read as (N, C, L)). unbiased=True normalises by the
    batch's unbiased variance, as the lectures do (F.batch_norm by the biased one); the running
    variance is moved towards the unbiased variance either way, as F.batch_norm's. The
    backward uses the saved output (tanh's derivative 1 - y^2) and statistics."""
    if _transformed():  # torch.func and forward-mode AD: the torch composite
        from . import reference
        return reference.batch_norm_tanh(input, running_mean, running_var, weight, bias,
                                         training, momentum, eps, unbiased)
    y, _, _, new_mean, new_var = _ops.batch_norm_tanh(
        input, weight, bias, running_mean, running_var, bool(training), float(momentum),
        float(eps), bool(unbiased))
    if training:
        with torch.no_grad():
            if running_mean is not None:
                running_mean.copy_(new_mean)
            if running_var is not None:
                running_var.copy_(new_var)
    return y


def _stats_dtype(input):
    return torch.float32 if input.dtype in (torch.float16, torch.bfloat16) else input.dtype


@torch.library.register_fake("pymakemore::batch_norm_tanh")
def _batch_norm_tanh_fake(input, weight, bias, running_mean, running_var, training, momentum,
                          eps, unbiased):
    _check_same_device("batch_norm_tanh", input, weight, bias, running_mean, running_var)
    torch._check(input.dim() >= 2, lambda: "batch_norm_tanh: expected input of 2 or more "
                                           "dimensions")
    c = input.shape[-1]
    # the kernels' check of the batch, as F.batch_norm's (a ValueError)
    torch._check_value(not training or c == 0 or input.numel() // c > 1, lambda: (
        f"Expected more than 1 value per channel when training, got input size "
        f"{list(input.shape)}"))
    stats = input.new_empty((c,), dtype=_stats_dtype(input))

    def new_stat(t):
        return input.new_empty((0,), dtype=_stats_dtype(input)) if t is None else \
            torch.empty_like(t)

    return (torch.empty_like(input, memory_format=torch.contiguous_format), stats,
            torch.empty_like(stats), new_stat(running_mean), new_stat(running_var))


@torch.library.register_fake("pymakemore::batch_norm_tanh_backward")
def _batch_norm_tanh_backward_fake(grad_output, output, input, weight, save_mean, save_invstd,
                                   training, unbiased, output_mask):
    _check_same_device("batch_norm_tanh_backward", grad_output, output, input, save_mean,
                       save_invstd)
    c = input.shape[-1]
    param_dtype = weight.dtype if weight is not None else input.dtype
    return (torch.empty_like(input, memory_format=torch.contiguous_format)
            if output_mask[0] else None,
            input.new_empty((c,), dtype=param_dtype) if output_mask[1] else None,
            input.new_empty((c,), dtype=param_dtype) if output_mask[2] else None)
