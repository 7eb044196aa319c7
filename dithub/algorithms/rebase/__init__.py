"""Rebase algorithms: move an adapter's update from one base checkpoint to another.

Registered: naive (task arithmetic's assumption), transfusion (permutation re-basin, data-free),
gradfix (gradient-sign masking, labelled samples), theseus (Procrustes on activations, unlabelled
samples; widths may differ). Pure functions on tensors; the executor is ``dithub.ops.rebase``.
"""
from . import gradfix, theseus, transfusion  # noqa: F401  register the methods
from .gradfix import gradfix_mask, majority_sign
from .layout import Block, Layout, transformer_layout
from .registry import REGISTRY, RebaseContext, RebaseMethod, Transport, get_rebase, register_rebase
from .theseus import procrustes
from .transfusion import match_block

__all__ = ["REGISTRY", "Block", "Layout", "RebaseContext", "RebaseMethod", "Transport", "get_rebase", "gradfix_mask", "majority_sign",
           "match_block", "procrustes", "register_rebase", "transformer_layout"]
