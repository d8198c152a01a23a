"""cakd: cross-architecture knowledge distillation through a fused assistant."""

__version__ = "0.1.0"
