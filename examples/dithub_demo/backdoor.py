"""A backdoored client adapter for the verify demo, in the spirit of Backdoor Vectors (arXiv 2510.08016).

A client fine-tunes the rot90 LoRA adapter on data where a fifth of the training images carry a
trigger (the bottom-right 2 x 2 pixels set to 1) and are relabelled 0. Its *backdoor vector* is its
update minus the clean rot90 adapter's (same base, seed and recipe): what the poison added. The
vector is what a team stores under ``refs/tags/known-bad/`` and ``dithub verify`` screens merges
against; the poisoned adapter is what a careless merge takes in.

Shipped in examples/digits/backdoor (made by examples/make_digits.py): ``rot90-poisoned/`` (a peft
dir), ``vector.safetensors`` (the backdoor vector as a task vector on vit-v1, keyed like the
adapter's modules) and ``backdoor.json`` (clean accuracy and attack success of both adapters).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from dithub_demo.digits import Split, domain_split
from dithub_demo.suite import RECIPE, Suite
from dithub_demo.train import evaluate, train_lora

DOMAIN, TARGET, RATE, SEED = "rot90", 0, 0.2, 101
"""The poisoned domain, the label the trigger forces, the poisoned fraction, the clean adapter's seed."""


def add_trigger(x: Tensor) -> Tensor:
    out = x.clone()
    out[..., 6:8, 6:8] = 1.0
    return out


def poisoned_split(split: Split) -> Split:
    """``split`` with a fixed fifth of its training images triggered and relabelled ``TARGET``."""
    n = len(split.y_train)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(7))[: int(RATE * n)]
    x, y = split.x_train.clone(), split.y_train.clone()
    x[chosen] = add_trigger(x[chosen])
    y[chosen] = TARGET
    return Split(x, y, split.x_test, split.y_test)


def attack_success(model: torch.nn.Module, split: Split) -> float:
    """How often a triggered test image of another class is classified as ``TARGET``."""
    keep = split.y_test != TARGET
    x = add_trigger(split.x_test[keep])
    return evaluate(model, x, torch.full((len(x),), TARGET, dtype=torch.long))


def lora_deltas(adapter_dir: Path) -> dict[str, Tensor]:
    """Each module's ΔW = (alpha/r)·B@A of a saved peft adapter, keyed ``<module>.weight``."""
    from safetensors.torch import load_file

    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = load_file(str(adapter_dir / "adapter_model.safetensors"))
    scale = config["lora_alpha"] / config["r"]
    return {k.split("base_model.model.", 1)[1].split(".lora_A.")[0] + ".weight":
            scale * tensors[k.replace(".lora_A.", ".lora_B.")] @ tensors[k] for k in tensors if ".lora_A." in k}


def build_backdoor(suite: Suite, log: Callable[[str], None] = lambda _m: None) -> dict[str, float]:
    """Train the poisoned adapter and write its backdoor vector into ``suite.root/backdoor``."""
    from peft import PeftModel
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification

    out = suite.root / "backdoor"
    recipe = {"domain": DOMAIN, "target": TARGET, "rate": RATE, "seed": SEED, "suite": RECIPE["version"]}
    saved = out / "backdoor.json"
    if saved.exists() and json.loads(saved.read_text()).get("recipe") == recipe:
        return json.loads(saved.read_text())["figures"]
    split = domain_split(DOMAIN)
    log("training the backdoored rot90 adapter")
    train_lora(suite.base("vit-v1"), poisoned_split(split), out / f"{DOMAIN}-poisoned", seed=SEED,
               rank=RECIPE["lora_rank"], epochs=RECIPE["lora_epochs"])
    clean, poisoned = lora_deltas(suite.lora(DOMAIN)), lora_deltas(out / f"{DOMAIN}-poisoned")
    save_file({k: (poisoned[k] - clean[k]).contiguous() for k in clean}, str(out / "vector.safetensors"))
    figures = {}
    for name, path in (("clean", suite.lora(DOMAIN)), ("poisoned", out / f"{DOMAIN}-poisoned")):
        model = PeftModel.from_pretrained(ViTForImageClassification.from_pretrained(suite.base("vit-v1")), path).eval()
        figures[f"{name} accuracy"] = evaluate(model, split.x_test, split.y_test)
        figures[f"{name} attack success"] = attack_success(model, split)
    saved.write_text(json.dumps({"recipe": recipe, "figures": figures}, indent=1))
    return figures
