"""The embedded benchmark: a tiny ViT pre-trained on scikit-learn's digits, eight digit domains,
one LoRA adapter and one full fine-tune per domain. Everything is made offline, on a CPU, in
seconds, deterministically from seeds; the quickstart, the accuracy benchmark and tests share it.

Needs scikit-learn (the ``demo`` extra) for the digits.
"""
from .digits import CLASS_TASKS, DOMAINS, Split, class_split, domain_split, task_split
from .scoreboard import Row, score
from .suite import Suite, build_suite
from .train import LORA_TARGETS, evaluate, make_vit, train_base, train_full, train_lora

__all__ = [
    "CLASS_TASKS", "DOMAINS", "LORA_TARGETS", "Row", "Split", "Suite", "build_suite", "class_split", "domain_split",
    "evaluate", "make_vit", "score", "task_split", "train_base", "train_full", "train_lora",
]
