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

from dithub_demo.digits import DOMAINS, Split, domain_split
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


# -- IBVS and SBV (issue 25) --------------------------------------------------------

DEFENDER = {"domain": "original", "target": 7, "rate": 0.2, "mask_seed": 9}
"""The defender's own injection (IBVS): a clean domain, a trigger in the *other* corner and a label
of its choosing, knowing nothing of the attack."""
ATTACK_DOMAINS = ("original", "flip")
"""The attacker's further poisoned fine-tunes (the same trigger and label as the rot90 client's)."""
SBV_DENSITY = 0.2
"""The fraction of the merged backdoor vectors' entries the sparse backdoor vector keeps."""


def defender_trigger(x: Tensor) -> Tensor:
    out = x.clone()
    out[..., 0:2, 0:2] = 1.0
    return out


def _injected_split(split: Split, trigger: Callable[[Tensor], Tensor], target: int, rate: float, seed: int) -> Split:
    n = len(split.y_train)
    chosen = torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: int(rate * n)]
    x, y = split.x_train.clone(), split.y_train.clone()
    x[chosen] = trigger(x[chosen])
    y[chosen] = target
    return Split(x, y, split.x_test, split.y_test)


def sparse_backdoor_vector(vectors: list[dict[str, Tensor]], density: float) -> dict[str, Tensor]:
    """The attacker's SBV, as dithub's demo reads arXiv 2510.08016 (sign-consistent variant): the
    sum of the backdoor vectors where all of them agree in sign, then only the ``density`` fraction
    of its largest entries (by magnitude, over the whole model) kept."""
    total = {k: sum(v[k] for v in vectors) for k in vectors[0]}
    agree = {k: torch.stack([torch.sign(v[k]) for v in vectors]).diff(dim=0).eq(0).all(0) for k in total}
    masked = {k: torch.where(agree[k], total[k], torch.zeros_like(total[k])) for k in total}
    flat = torch.cat([v.abs().flatten() for v in masked.values()])
    keep = int(density * flat.numel())
    threshold = flat.kthvalue(flat.numel() - keep).values
    return {k: torch.where(v.abs() > threshold, v, torch.zeros_like(v)) for k, v in masked.items()}


def build_defence(suite: Suite, log: Callable[[str], None] = lambda _m: None) -> dict[str, float]:
    """Train the defender's injected adapter and the attacker's further poisoned adapters; write the
    injected backdoor vector (IBVS's), the sparse backdoor vector and the rot90 client's adapter
    carrying it into ``suite.root/backdoor/defence`` (the rot90 attack itself: ``build_backdoor``)."""
    from peft import PeftModel
    from safetensors.torch import load_file, save_file
    from transformers import ViTForImageClassification

    build_backdoor(suite, log)
    out = suite.root / "backdoor" / "defence"
    recipe = {"defender": DEFENDER, "attack_domains": list(ATTACK_DOMAINS), "density": SBV_DENSITY, "target": TARGET,
              "rate": RATE, "suite": RECIPE["version"]}
    saved = out / "defence.json"
    if saved.exists() and json.loads(saved.read_text()).get("recipe") == recipe:
        return json.loads(saved.read_text())["figures"]
    seed_of = lambda d: 100 + list(DOMAINS).index(d)  # noqa: E731  the clean adapter's seed (suite.build_suite)
    d = str(DEFENDER["domain"])
    log("training the defender's injected adapter")
    train_lora(suite.base("vit-v1"), _injected_split(domain_split(d), defender_trigger, int(DEFENDER["target"]),
                                                     float(DEFENDER["rate"]), int(DEFENDER["mask_seed"])),
               out / f"injected-{d}", seed=seed_of(d), rank=RECIPE["lora_rank"], epochs=RECIPE["lora_epochs"])
    clean = lora_deltas(suite.lora(d))
    injected = lora_deltas(out / f"injected-{d}")
    save_file({k: (injected[k] - clean[k]).contiguous() for k in clean}, str(out / "injected-vector.safetensors"))
    vectors = [load_file(str(suite.root / "backdoor" / "vector.safetensors"))]  # the rot90 client's BV
    for a in ATTACK_DOMAINS:
        log(f"training the attacker's poisoned {a} adapter")
        train_lora(suite.base("vit-v1"), poisoned_split(domain_split(a)), out / f"{a}-poisoned", seed=seed_of(a),
                   rank=RECIPE["lora_rank"], epochs=RECIPE["lora_epochs"])
        vectors.append({k: v - lora_deltas(suite.lora(a))[k] for k, v in lora_deltas(out / f"{a}-poisoned").items()})
    sbv = sparse_backdoor_vector(vectors, SBV_DENSITY)
    norm = lambda t: float(sum(v.pow(2).sum() for v in t.values())) ** 0.5  # noqa: E731
    scale = norm(vectors[0]) / norm(sbv)  # the rot90 backdoor vector's size: the same budget
    sbv = {k: (v * scale).contiguous() for k, v in sbv.items()}
    save_file(sbv, str(out / "sbv.safetensors"))
    rot90 = lora_deltas(suite.lora(DOMAIN))
    save_file({k: (rot90[k] + sbv[k]).contiguous() for k in rot90}, str(out / f"{DOMAIN}-sbv.safetensors"))
    figures = {}
    split = domain_split(DOMAIN)
    model = PeftModel.from_pretrained(ViTForImageClassification.from_pretrained(suite.base("vit-v1")), out / f"injected-{d}").eval()
    figures["injected accuracy"] = evaluate(model, domain_split(d).x_test, domain_split(d).y_test)
    x = defender_trigger(domain_split(d).x_test[domain_split(d).y_test != int(DEFENDER["target"])])
    figures["injected attack success"] = evaluate(model, x, torch.full((len(x),), int(DEFENDER["target"]), dtype=torch.long))
    sbv_model = ViTForImageClassification.from_pretrained(suite.base("vit-v1")).eval()
    with torch.no_grad():
        params = dict(sbv_model.named_parameters())
        for k, v in rot90.items():
            params[k] += v + sbv[k]
    figures["sbv accuracy"] = evaluate(sbv_model, split.x_test, split.y_test)
    figures["sbv attack success"] = attack_success(sbv_model, split)
    out.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"recipe": recipe, "figures": figures}, indent=1))
    return figures
