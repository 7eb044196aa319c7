"""Build (or reuse) the whole embedded benchmark in one directory.

Layout: ``bases/vit-v1`` and ``bases/vit-v2`` (Hugging Face model dirs: two releases of the
base, different seeds and length of pre-training), ``lora/<domain>`` (peft dirs),
``tv/<domain>.safetensors`` (task vectors keyed by checkpoint names), ``probes/<domain>.safetensors``
(each domain's test split, as dithub probe files) and ``suite.json`` (what was built, with each
adapter's own accuracy). A directory built with the same recipe is reused as is.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path


from .digits import DOMAINS, domain_split
from .train import VIT, evaluate, train_base, train_full, train_lora

RECIPE = {"version": 1, "vit": VIT, "base_epochs": {"vit-v1": 30, "vit-v2": 45}, "lora_rank": 8,
          "lora_epochs": 15, "full_epochs": 10}
BASE_SEEDS = {"vit-v1": 0, "vit-v2": 1}


@dataclass(frozen=True)
class Suite:
    root: Path
    domains: list[str]
    accuracy: dict[str, dict[str, float]]
    """``accuracy[kind][domain]``: kind is ``base`` (vit-v1 zero-shot), ``lora`` or ``full``."""

    def base(self, name: str = "vit-v1") -> Path:
        return self.root / "bases" / name

    def lora(self, domain: str) -> Path:
        return self.root / "lora" / domain

    def task_vector(self, domain: str) -> Path:
        return self.root / "tv" / f"{domain}.safetensors"

    def probe(self, domain: str) -> Path:
        return self.root / "probes" / f"{domain}.safetensors"


def build_suite(root: Path, domains: Sequence[str] = tuple(DOMAINS), *, full: bool = True,
                log: Callable[[str], None] = lambda _m: None) -> Suite:
    """Train what ``root`` lacks (bases, one LoRA and one task vector per domain, probes)."""
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    root = Path(root)
    recipe = {**RECIPE, "domains": list(domains), "full": full}
    done = root / "suite.json"
    if done.exists():
        saved = json.loads(done.read_text())
        if saved.get("recipe") == recipe:
            return Suite(root, list(domains), saved["accuracy"])
    original = domain_split("original")
    for name, seed in BASE_SEEDS.items():
        log(f"pre-training base {name} on the original digits")
        train_base(original, seed=seed, epochs=RECIPE["base_epochs"][name]).save_pretrained(root / "bases" / name)
    v1 = root / "bases" / "vit-v1"
    base_model = ViTForImageClassification.from_pretrained(v1)
    accuracy: dict[str, dict[str, float]] = {"base": {}, "lora": {}, "full": {}}
    for i, domain in enumerate(domains):
        split = domain_split(domain)
        (root / "probes").mkdir(parents=True, exist_ok=True)
        save_file({"inputs": split.x_test, "labels": split.y_test}, str(root / "probes" / f"{domain}.safetensors"))
        accuracy["base"][domain] = evaluate(base_model, split.x_test, split.y_test)
        log(f"training the LoRA adapter for {domain}")
        accuracy["lora"][domain] = train_lora(v1, split, root / "lora" / domain, seed=100 + i,
                                              rank=RECIPE["lora_rank"], epochs=RECIPE["lora_epochs"])
        if full:
            log(f"fine-tuning the task vector for {domain}")
            tau, acc = train_full(v1, split, seed=200 + i, epochs=RECIPE["full_epochs"])
            (root / "tv").mkdir(parents=True, exist_ok=True)
            save_file(tau, str(root / "tv" / f"{domain}.safetensors"))
            accuracy["full"][domain] = acc
    done.write_text(json.dumps({"recipe": recipe, "accuracy": accuracy}, indent=1))
    return Suite(root, list(domains), accuracy)

