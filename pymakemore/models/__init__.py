"""The makemore models, one file per family; each returns (logits, loss)."""
from .mlp import MLP

MODELS = {"mlp": MLP}

__all__ = ["MLP", "MODELS"]
