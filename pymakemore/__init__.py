"""pymakemore: character-level language models on fused C++/CUDA ops."""
from . import nn, ops

__all__ = ["ops", "nn"]
__version__ = "0.1.0"
