"""The health checks of makemore part 3, for models with tanh layers (bnmlp, wavenet):
activation and gradient histograms per tanh layer with the saturated fraction, weight
gradients with their gradient:data ratio, and the update:data ratio over training."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from . import plots
from .models.layers import running_stats_kept

SATURATED = 0.97  # |tanh| above this passes almost no gradient (the lecture's threshold)


def weights(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """The matrices (2-D parameters): what the lecture's ratio plots follow."""
    return [(n, p) for n, p in model.named_parameters() if p.dim() == 2]


class UpdateRatios:
    """log10(std(lr * grad) / std(data)) of each weight matrix at chosen steps, kept on the
    device until the end (no host read per step)."""

    def __init__(self, model: torch.nn.Module):
        matrices = weights(model)
        self.names = [n for n, _ in matrices]
        self.params = [p for _, p in matrices]
        self.steps: list[int] = []
        self.values: list[Tensor] = []

    @staticmethod
    def wanted(step: int) -> bool:
        """Every step of the first thousand (where the lecture looks), then every 100th."""
        return step < 1000 or step % 100 == 0

    def record_sums(self, steps: list[int], sums: Tensor) -> None:
        """The same ratios from sums an engine took as it updated the weights (it leaves no
        .grad): sums (len(steps), matrices, 4) of each update's elements and squares and of
        the weights' (before the update) elements and squares, float64."""
        n = torch.tensor([p.numel() for p in self.params], dtype=torch.float64)

        def std(total: Tensor, squares: Tensor) -> Tensor:
            return ((squares - total * total / n).clamp(min=0) / (n - 1)).sqrt()

        ratios = (std(sums[..., 0], sums[..., 1]) / std(sums[..., 2], sums[..., 3])).log10()
        self.steps.extend(steps)
        self.values.extend(ratios.float().unbind(0))

    @torch.no_grad()
    def record(self, step: int, lr: float) -> None:
        """Call after backward, before the update."""
        ratios = [((lr * p.grad).std() / p.std()).log10() for p in self.params]
        self.steps.append(step)
        self.values.append(torch.stack(ratios))

    def state_dict(self) -> dict:
        values = torch.stack(self.values).cpu() if self.values else torch.zeros(0, len(self.names))
        return {"names": self.names, "steps": list(self.steps), "values": values}

    def load_state_dict(self, state: dict) -> None:
        self.steps = list(state["steps"])
        self.values = list(state["values"].unbind(0))


def layer_report(model: torch.nn.Module, x: Tensor, y: Tensor) -> dict:
    """One training-mode forward and backward on (x, y): each tanh layer's outputs and their
    gradients, each weight matrix's gradient. Leaves no gradients and running statistics as
    they were."""
    training = model.training
    model.train()
    model.zero_grad(set_to_none=True)
    record: list[Tensor] = []
    with torch.enable_grad(), running_stats_kept(model):
        _, loss = model(x, y, record=record)
        loss.backward()
    layers = []
    for i, t in enumerate(record):
        out, grad = t.detach().float(), t.grad.float()
        layers.append({"layer": i + 1, "mean": out.mean().item(), "std": out.std().item(),
                       "saturated": (out.abs() > SATURATED).float().mean().item(),
                       "grad_mean": grad.mean().item(), "grad_std": grad.std().item(),
                       "values": out.flatten().cpu(), "grads": grad.flatten().cpu()})
    mats = []
    for name, p in weights(model):
        g = p.grad.float()
        mats.append({"name": name, "shape": list(p.shape), "grad_mean": g.mean().item(),
                     "grad_std": g.std().item(),
                     "grad_to_data": (g.std() / p.detach().float().std()).item(),
                     "grads": g.flatten().cpu()})
    model.zero_grad(set_to_none=True)
    model.train(training)
    return {"tanh_layers": layers, "weights": mats}


def write(report: dict, ratios: UpdateRatios, work_dir: Path) -> list[Path]:
    """The four PNGs and diagnostics.json (the numbers without the raw values)."""
    layers, mats = report["tanh_layers"], report["weights"]
    paths = [work_dir / n for n in ("activations.png", "activation_grads.png",
                                    "weight_grads.png", "update_ratios.png")]
    plots.histograms([(f"layer {r['layer']} (tanh): mean {r['mean']:+.2f}, std {r['std']:.2f}, "
                       f"saturated {100 * r['saturated']:.1f}%", r["values"]) for r in layers],
                     "activation distribution", paths[0], value_range=(-1, 1))
    plots.histograms([(f"layer {r['layer']} (tanh): mean {r['grad_mean']:+.1e}, "
                       f"std {r['grad_std']:.1e}", r["grads"]) for r in layers],
                     "gradient distribution (tanh outputs)", paths[1])
    plots.histograms([(f"{m['name']} {tuple(m['shape'])}: std {m['grad_std']:.1e}, "
                       f"grad:data {m['grad_to_data']:.1e}", m["grads"]) for m in mats],
                     "weight gradient distribution", paths[2])
    state = ratios.state_dict()
    plots.update_ratios(state["steps"], state["values"], state["names"], paths[3])
    numbers = {"saturated_above": SATURATED,
               "tanh_layers": [{k: v for k, v in r.items() if k not in ("values", "grads")}
                               for r in layers],
               "weights": [{k: v for k, v in m.items() if k != "grads"} for m in mats],
               "update_ratio_final": dict(zip(state["names"], state["values"][-1].tolist()))
               if len(state["steps"]) else {}}
    (work_dir / "diagnostics.json").write_text(json.dumps(numbers, indent=2) + "\n")
    return paths
