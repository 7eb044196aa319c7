"""Probe sets of training data, for the merges that measure activations (RegMean, CoM): the demo's
probes/ hold each task's *test* split, which scores merges and must not also shape them."""
from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from dithub_demo.digits import task_split
from dithub_demo.text import TEXT_TASKS, minilm_dir, text_split

MERGE_SAMPLES = 256
"""Examples per task, as fusion_bench's RegMean reads (num_regmean_examples)."""


def train_probe(task: str, out: Path, samples: int = MERGE_SAMPLES) -> Path:
    """The first ``samples`` training examples of ``task`` (a digits domain or class task: images;
    a MiniLM text task: token ids, padded to the longest) as a probe file at ``out``."""
    if task in TEXT_TASKS:
        from transformers import AutoTokenizer

        sentences = [s for s, _ in text_split(task).train][:samples]
        labels = [y for _, y in text_split(task).train][:samples]
        inputs = AutoTokenizer.from_pretrained(minilm_dir())(sentences, padding=True, return_tensors="pt")["input_ids"]
    else:
        split = task_split(task)
        inputs, labels = split.x_train[:samples], split.y_train[:samples].tolist()
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"inputs": inputs.contiguous(), "labels": torch.tensor(labels, dtype=torch.long)}, str(out))
    return out
