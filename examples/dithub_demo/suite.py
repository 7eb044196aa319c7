"""Build (or reuse) the whole embedded benchmark in one directory.

Layout: ``bases/vit-v1`` and ``bases/vit-v2`` (Hugging Face model dirs: two releases of the
base, different seeds and length of pre-training), ``lora/<domain>`` (peft dirs),
``tv/<domain>.safetensors`` (task vectors keyed by checkpoint names), ``probes/<domain>.safetensors``
(each domain's test split, as dithub probe files) and ``suite.json`` (what was built, with each
adapter's own accuracy). The class-incremental part (``lora/class/0-1``… one LoRA adapter per pair
of classes, probes alike) has its own ``classes.json``. A part built with the same recipe is reused.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from dithub_demo.digits import CLASS_DOMAIN, CLASS_TASKS, DOMAINS, Split, domain_split, task_split
from dithub_demo.train import VIT, evaluate, train_base, train_full, train_lora

RECIPE = {"version": 1, "vit": VIT, "base_epochs": {"vit-v1": 30, "vit-v2": 45}, "lora_rank": 8,
          "lora_epochs": 15, "full_epochs": 10}
CLASS_RECIPE = {"version": 1, "tasks": list(CLASS_TASKS), "domain": CLASS_DOMAIN, "lora_rank": 8, "lora_epochs": 15}
BASE_SEEDS = {"vit-v1": 0, "vit-v2": 1}

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Suite:
    root: Path
    domains: list[str]
    accuracy: dict[str, dict[str, float]]
    """``accuracy[kind][task]``: kind is ``base`` (vit-v1 zero-shot), ``lora`` or ``full``; a task
    is a domain or a class task (``class/0-1``, LoRA only)."""

    def base(self, name: str = "vit-v1") -> Path:
        return self.root / "bases" / name

    def lora(self, task: str) -> Path:
        return self.root / "lora" / task

    def task_vector(self, domain: str) -> Path:
        return self.root / "tv" / f"{domain}.safetensors"

    def probe(self, task: str) -> Path:
        return self.root / "probes" / f"{task}.safetensors"


def saved_accuracy(path: Path, recipe: dict) -> dict | None:
    """The accuracies recorded in ``path`` when it was built with ``recipe``."""
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("recipe") == recipe:
            return saved["accuracy"]
    return None


def _probe_and_lora(root: Path, base_model: torch.nn.Module, task: str, split: Split,
                    accuracy: dict[str, dict[str, float]], recipe: dict, *, seed: int, log: Callable[[str], None]) -> None:
    """Save ``task``'s probe, score the base on it, train its LoRA adapter on vit-v1."""
    from safetensors.torch import save_file

    path = root / "probes" / f"{task}.safetensors"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"inputs": split.x_test, "labels": split.y_test}, str(path))
    accuracy["base"][task] = evaluate(base_model, split.x_test, split.y_test)
    log(f"training the LoRA adapter for {task}")
    accuracy["lora"][task] = train_lora(root / "bases" / "vit-v1", split, root / "lora" / task, seed=seed,
                                        rank=recipe["lora_rank"], epochs=recipe["lora_epochs"])


def build_suite(root: Path, domains: Sequence[str] = tuple(DOMAINS), *, full: bool = True, classes: bool = True,
                log: Callable[[str], None] = lambda _m: None) -> Suite:
    """Train what ``root`` lacks (bases, one LoRA and one task vector per domain, one LoRA per
    class task with ``classes``, probes)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(root)
    recipe = {**RECIPE, "domains": list(domains), "full": full}
    accuracy = saved_accuracy(root / "suite.json", recipe)
    if accuracy is None:
        accuracy = _build_domains(root, domains, full, log)
        (root / "suite.json").write_text(json.dumps({"recipe": recipe, "accuracy": accuracy}, indent=1))
    tasks = list(domains)
    if classes:
        by_class = saved_accuracy(root / "classes.json", CLASS_RECIPE)
        if by_class is None:
            by_class = _build_classes(root, log)
            (root / "classes.json").write_text(json.dumps({"recipe": CLASS_RECIPE, "accuracy": by_class}, indent=1))
        accuracy = {kind: {**accuracy.get(kind, {}), **by_class.get(kind, {})} for kind in accuracy}
        tasks += CLASS_TASKS
    return Suite(root, tasks, accuracy)


def _build_domains(root: Path, domains: Sequence[str], full: bool, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification

    original = domain_split("original")
    for name, seed in BASE_SEEDS.items():
        log(f"pre-training base {name} on the original digits")
        train_base(original, seed=seed, epochs=RECIPE["base_epochs"][name]).save_pretrained(root / "bases" / name)
    v1 = root / "bases" / "vit-v1"
    base_model = ViTForImageClassification.from_pretrained(v1)
    accuracy: dict[str, dict[str, float]] = {"base": {}, "lora": {}, "full": {}}
    for i, domain in enumerate(domains):
        split = domain_split(domain)
        _probe_and_lora(root, base_model, domain, split, accuracy, RECIPE, seed=100 + i, log=log)
        if full:
            log(f"fine-tuning the task vector for {domain}")
            tau, acc = train_full(v1, split, seed=200 + i, epochs=RECIPE["full_epochs"])
            (root / "tv").mkdir(parents=True, exist_ok=True)
            save_file(tau, str(root / "tv" / f"{domain}.safetensors"))
            accuracy["full"][domain] = acc
    return accuracy


def _build_classes(root: Path, log: Callable[[str], None]) -> dict[str, dict[str, float]]:
    """One LoRA adapter per class task on vit-v1 (which must be built already), with probes."""
    from transformers import ViTForImageClassification

    v1 = root / "bases" / "vit-v1"
    base_model = ViTForImageClassification.from_pretrained(v1)
    accuracy: dict[str, dict[str, float]] = {"base": {}, "lora": {}}
    for i, task in enumerate(CLASS_TASKS):
        _probe_and_lora(root, base_model, task, task_split(task), accuracy, CLASS_RECIPE, seed=300 + i, log=log)
    return accuracy
