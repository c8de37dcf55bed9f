"""Makemore part 4: the BatchNorm MLP's backward pass written by hand, in plain torch.

`gradients_by_hand` runs the forward pass in small steps (the lecture's: cross entropy spelled
out as max, subtract, exp, sum, reciprocal, product, log, pick) and carries the gradient back
through every one of them; `compact_gradients` uses the closed forms (softmax minus one-hot for
cross entropy, one expression for BatchNorm) and is what training by hand runs.
`check_gradients` compares both with autograd on every intermediate and every parameter.

For a BNMLP with one hidden layer (n_layer=1), with or without the hidden bias.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .models import BNMLP
from .models.layers import running_stats_kept


# The forward pass's intermediates by name (the lecture's names).
Intermediates = dict[str, Tensor]


def _params(model: BNMLP) -> dict[str, Optional[Tensor]]:
    if not isinstance(model, BNMLP) or len(model.hidden) != 1:
        raise ValueError("backprop by hand is written for the bnmlp model with one hidden layer "
                         "(--type bnmlp --n-layer 1)")
    lin, norm, out = model.hidden[0], model.norms[0], model.out
    return {"C": model.C, "W1": lin.weight, "b1": lin.bias, "bngain": norm.gain,
            "bnbias": norm.bias, "W2": out.weight, "b2": out.bias}


def forward_steps(model: BNMLP, x: Tensor, y: Tensor) -> Intermediates:
    """The training-mode forward pass in the lecture's small steps (plain torch)."""
    p = _params(model)
    eps = model.norms[0].eps
    f: Intermediates = {}
    n = x.shape[0]
    f["emb"] = p["C"][x]
    f["embcat"] = f["emb"].view(n, -1)
    f["hprebn"] = f["embcat"] @ p["W1"].t()
    if p["b1"] is not None:
        f["hprebn"] = f["hprebn"] + p["b1"]
    f["bnmeani"] = f["hprebn"].sum(0, keepdim=True) / n
    f["bndiff"] = f["hprebn"] - f["bnmeani"]
    f["bndiff2"] = f["bndiff"] ** 2
    f["bnvar"] = f["bndiff2"].sum(0, keepdim=True) / (n - 1)  # unbiased, as the lecture
    f["bnvar_inv"] = (f["bnvar"] + eps) ** -0.5
    f["bnraw"] = f["bndiff"] * f["bnvar_inv"]
    f["hpreact"] = p["bngain"] * f["bnraw"] + p["bnbias"]
    f["h"] = torch.tanh(f["hpreact"])
    f["logits"] = f["h"] @ p["W2"].t() + p["b2"]
    f["logit_maxes"] = f["logits"].max(1, keepdim=True).values
    f["norm_logits"] = f["logits"] - f["logit_maxes"]
    f["counts"] = f["norm_logits"].exp()
    f["counts_sum"] = f["counts"].sum(1, keepdim=True)
    f["counts_sum_inv"] = f["counts_sum"] ** -1
    f["probs"] = f["counts"] * f["counts_sum_inv"]
    f["logprobs"] = f["probs"].log()
    f["loss"] = -f["logprobs"][torch.arange(n), y].mean()
    return f


def gradients_by_hand(model: BNMLP, x: Tensor, y: Tensor, f: Intermediates) -> dict[str, Tensor]:
    """d loss / d (every intermediate of `f` and every parameter), step by step backwards."""
    p = _params(model)
    eps = model.norms[0].eps
    n = x.shape[0]
    d: dict[str, Tensor] = {}
    rows = torch.arange(n)
    d["logprobs"] = torch.zeros_like(f["logprobs"])
    d["logprobs"][rows, y] = -1.0 / n
    d["probs"] = d["logprobs"] / f["probs"]
    d["counts_sum_inv"] = (f["counts"] * d["probs"]).sum(1, keepdim=True)
    d["counts_sum"] = -f["counts_sum"] ** -2 * d["counts_sum_inv"]
    d["counts"] = f["counts_sum_inv"] * d["probs"] + d["counts_sum"]  # both paths to counts
    d["norm_logits"] = f["counts"] * d["counts"]
    d["logit_maxes"] = -d["norm_logits"].sum(1, keepdim=True)
    # the max picks one logit per row: its gradient flows there only (it is ~0 in total)
    picked = torch.nn.functional.one_hot(f["logits"].argmax(1), f["logits"].shape[1])
    d["logits"] = d["norm_logits"] + picked.to(f["logits"].dtype) * d["logit_maxes"]
    _output_and_tanh(p, f, d)
    d["bngain"] = (f["bnraw"] * d["hpreact"]).sum(0)
    d["bnbias"] = d["hpreact"].sum(0)
    d["bnraw"] = p["bngain"] * d["hpreact"]
    d["bnvar_inv"] = (f["bndiff"] * d["bnraw"]).sum(0, keepdim=True)
    d["bnvar"] = -0.5 * (f["bnvar"] + eps) ** -1.5 * d["bnvar_inv"]
    d["bndiff2"] = torch.ones_like(f["bndiff2"]) / (n - 1) * d["bnvar"]
    d["bndiff"] = f["bnvar_inv"] * d["bnraw"] + 2 * f["bndiff"] * d["bndiff2"]
    d["bnmeani"] = -d["bndiff"].sum(0, keepdim=True)
    d["hprebn"] = d["bndiff"] + torch.ones_like(f["hprebn"]) / n * d["bnmeani"]
    _hidden_and_embedding(p, x, f, d)
    return d


def compact_gradients(model: BNMLP, x: Tensor, y: Tensor, f: Intermediates) -> dict[str, Tensor]:
    """The same gradients through the closed forms of cross entropy and BatchNorm."""
    p = _params(model)
    n = x.shape[0]
    d: dict[str, Tensor] = {}
    d["logits"] = torch.softmax(f["logits"], 1)
    d["logits"][torch.arange(n), y] -= 1
    d["logits"] /= n
    _output_and_tanh(p, f, d)
    dhpreact, bnraw = d["hpreact"], f["bnraw"]
    d["bngain"] = (bnraw * dhpreact).sum(0)
    d["bnbias"] = dhpreact.sum(0)
    d["hprebn"] = p["bngain"] * f["bnvar_inv"] / n * (
        n * dhpreact - dhpreact.sum(0) - n / (n - 1) * bnraw * (dhpreact * bnraw).sum(0))
    _hidden_and_embedding(p, x, f, d)
    return d


def _output_and_tanh(p, f: Intermediates, d: dict[str, Tensor]) -> None:
    d["h"] = d["logits"] @ p["W2"]
    d["W2"] = d["logits"].t() @ f["h"]
    d["b2"] = d["logits"].sum(0)
    d["hpreact"] = (1.0 - f["h"] ** 2) * d["h"]


def _hidden_and_embedding(p, x: Tensor, f: Intermediates, d: dict[str, Tensor]) -> None:
    d["embcat"] = d["hprebn"] @ p["W1"]
    d["W1"] = d["hprebn"].t() @ f["embcat"]
    if p["b1"] is not None:
        d["b1"] = d["hprebn"].sum(0)
    d["emb"] = d["embcat"].view(f["emb"].shape)
    # each row of C gets the gradient of every position that looked it up
    d["C"] = torch.zeros_like(p["C"]).index_add_(0, x.reshape(-1),
                                                   d["emb"].reshape(-1, p["C"].shape[1]))


def check_gradients(model: BNMLP, x: Tensor, y: Tensor) -> dict[str, dict[str, float]]:
    """Max |hand - autograd| of every gradient, for the step-by-step and the compact backward;
    also the fused model's own autograd gradients of the parameters against the hand ones."""
    params = _params(model)
    with torch.enable_grad():
        f = forward_steps(model, x, y)
        for t in f.values():
            t.retain_grad()
        for t in params.values():
            if t is not None:
                t.grad = None
        f["loss"].backward()
    auto = {k: t.grad for k, t in {**f, **params}.items() if t is not None and t.grad is not None}
    with torch.no_grad():
        detached = {k: t.detach() for k, t in f.items()}
        by_hand = gradients_by_hand(model, x, y, detached)
        compact = compact_gradients(model, x, y, detached)
    report = {
        "step_by_step": {k: (by_hand[k] - auto[k]).abs().max().item() for k in by_hand},
        "compact": {k: (compact[k] - auto[k]).abs().max().item() for k in compact},
    }
    model.zero_grad(set_to_none=True)
    training = model.training
    model.train()
    with torch.enable_grad(), running_stats_kept(model):  # the check does not train
        model(x, y)[1].backward()  # the model's own ops (fused or torch), through autograd
    model.train(training)
    report["model_autograd"] = {k: (compact[k] - t.grad).abs().max().item()
                                for k, t in params.items() if t is not None}
    model.zero_grad(set_to_none=True)
    return report


@torch.no_grad()
def loss_and_grads(model: BNMLP, x: Tensor, y: Tensor) -> Tensor:
    """One training step's forward and hand-written backward: sets every parameter's .grad,
    updates the BatchNorm running statistics as the model's forward would, returns the loss."""
    f = forward_steps(model, x, y)
    grads = compact_gradients(model, x, y, f)
    for name, param in _params(model).items():
        if param is not None:
            param.grad = grads[name]
    norm = model.norms[0]
    norm.running_mean.lerp_(f["bnmeani"].view(-1), norm.momentum)
    norm.running_var.lerp_(f["bnvar"].view(-1), norm.momentum)
    return f["loss"]
