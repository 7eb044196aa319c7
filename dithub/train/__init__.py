"""Training helpers whose output dithub's algorithms rely on (linearized fine-tuning for ``revert --method ntk``)."""
from .linearized import LinearizedModel, save_linearized, train_linearized

__all__ = ["LinearizedModel", "save_linearized", "train_linearized"]
