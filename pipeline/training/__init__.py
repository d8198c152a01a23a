"""The training loop shared by teacher training, baselines and distillation."""

from cakd.pipeline.training.loop import FitResult, fit

__all__ = ["FitResult", "fit"]
