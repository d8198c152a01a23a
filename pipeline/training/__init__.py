"""The training loop shared by teacher training, baselines and distillation."""

from .loop import FitResult, fit

__all__ = ["FitResult", "fit"]
