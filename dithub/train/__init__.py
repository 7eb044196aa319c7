"""Training helpers whose output dithub's algorithms rely on (linearized fine-tuning for ``revert --method ntk``;
the final block fitted to edited latents for ``revert --class``)."""
from .final_block import final_block, fit_final_block
from .linearized import LinearizedModel, save_linearized, train_linearized

__all__ = ["LinearizedModel", "final_block", "fit_final_block", "save_linearized", "train_linearized"]
