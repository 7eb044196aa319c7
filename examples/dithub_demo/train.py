"""Training and evaluation of the demo's tiny ViT, its LoRA adapters and full fine-tunes.

Deterministic on one machine: every run seeds torch, uses one thread-independent data order
and plain AdamW. A base is trained on the original digits; an adapter on one domain's split
with the base (and its 10-way head) frozen, so all adapters share the head and can be merged.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from dithub_demo.digits import Split

VIT = {"image_size": 8, "patch_size": 2, "num_channels": 1, "hidden_size": 64, "num_hidden_layers": 4,
       "num_attention_heads": 4, "intermediate_size": 128, "num_labels": 10}
LORA_TARGETS = ["q_proj", "v_proj", "o_proj", "fc1", "fc2"]
"""Query, value and the dense layers (attention output, MLP) of every block."""


def make_vit(seed: int = 0) -> torch.nn.Module:
    """A freshly initialized ViTForImageClassification of the demo's shape (136K parameters)."""
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    return ViTForImageClassification(ViTConfig(**VIT)).eval()


def _fit(model: torch.nn.Module, split: Split, *, epochs: int, lr: float, seed: int, batch: int = 64) -> None:
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(split.y_train), generator=g)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            loss = torch.nn.functional.cross_entropy(model(pixel_values=split.x_train[idx]).logits, split.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()


def train_base(split: Split, *, seed: int = 0, epochs: int = 40) -> torch.nn.Module:
    """Pre-train the base on ``split`` (the original digits): a release of the foundation model."""
    model = make_vit(seed)
    _fit(model, split, epochs=epochs, lr=3e-3, seed=seed)
    return model


def train_lora(base_dir: Path, split: Split, out: Path, *, seed: int = 0, rank: int = 8, epochs: int = 25,
               lr: float = 1e-2) -> float:
    """Fit a peft LoRA adapter (rank ``rank``, alpha 2·rank) on ``split``; save it to ``out``.

    Returns its test accuracy.
    """
    from peft import LoraConfig, get_peft_model
    from transformers import ViTForImageClassification

    torch.manual_seed(seed)
    model = get_peft_model(ViTForImageClassification.from_pretrained(base_dir),
                           LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=LORA_TARGETS, lora_dropout=0.0))
    _fit(model, split, epochs=epochs, lr=lr, seed=seed)
    model.save_pretrained(out)
    return evaluate(model, split.x_test, split.y_test)


def train_full(base_dir: Path, split: Split, *, seed: int = 0, epochs: int = 15, lr: float = 1e-3) -> tuple[dict[str, Tensor], float]:
    """Fully fine-tune the base on ``split`` (head frozen); return the task vector θ_t − θ_0
    keyed by the checkpoint's tensor names, and the fine-tuned model's test accuracy."""
    from transformers import ViTForImageClassification

    model = ViTForImageClassification.from_pretrained(base_dir)
    for name, p in model.named_parameters():
        p.requires_grad_(not name.startswith("classifier"))
    _fit(model, split, epochs=epochs, lr=lr, seed=seed)
    acc = evaluate(model, split.x_test, split.y_test)
    base = dict(ViTForImageClassification.from_pretrained(base_dir).named_parameters())
    deltas = {n: p.detach() - base[n].detach() for n, p in model.named_parameters() if not n.startswith("classifier")}
    return _by_checkpoint_name(base_dir, deltas), acc


def train_linear(base_dir: Path, split: Split, *, seed: int = 0, epochs: int = 5, lr: float = 1e-3, batch: int = 64) -> tuple[dict[str, Tensor], float]:
    """Fine-tune the linearized base f(x; θ0) + J·δ on ``split`` (head frozen; ``dithub.train``);
    return δ keyed by checkpoint names, and the accuracy of θ0 + δ applied as usual (not linearized)."""
    from transformers import ViTForImageClassification

    from dithub.train import train_linearized

    model = ViTForImageClassification.from_pretrained(base_dir)
    names = [n for n, _ in model.named_parameters() if not n.startswith("classifier")]
    g = torch.Generator().manual_seed(seed)

    def batches():  # a fresh order each epoch, as _fit
        order = torch.randperm(len(split.y_train), generator=g)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            yield {"pixel_values": split.x_train[idx]}, split.y_train[idx]

    deltas = train_linearized(model, names, batches, epochs=epochs, lr=lr, seed=seed)
    tuned = ViTForImageClassification.from_pretrained(base_dir)
    with torch.no_grad():
        for n, p in tuned.named_parameters():
            if n in deltas:
                p += deltas[n]
    return _by_checkpoint_name(base_dir, deltas), evaluate(tuned, split.x_test, split.y_test)


def _by_checkpoint_name(base_dir: Path, deltas: dict[str, Tensor]) -> dict[str, Tensor]:
    """Updates keyed by the loaded model's parameter names, re-keyed by the checkpoint's."""
    import json

    from safetensors import safe_open

    from dithub.formats.hf_names import model_names

    with safe_open(str(base_dir / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    names = model_names(json.loads((base_dir / "config.json").read_text()), keys)  # checkpoint key -> model name
    return {key: deltas[names.get(key, key)].contiguous() for key in keys if names.get(key, key) in deltas}


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: Tensor, y: Tensor) -> float:
    """Top-1 accuracy of ``model`` on images ``x`` with labels ``y``."""
    model.eval()
    return float((model(pixel_values=x).logits.argmax(-1) == y).float().mean())
