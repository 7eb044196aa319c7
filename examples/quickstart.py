"""The embedded demo: a real (tiny) ViT base, two peft LoRA adapters, and dithub's verbs.

Runs offline on a CPU in seconds: `make demo` (or `python examples/quickstart.py [--dir DIR]`).
Later verbs (more merge methods, rebase, revert, verify, fetch) add their steps here as they land.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore", category=FutureWarning)

import torch  # noqa: E402
from peft import LoraConfig, PeftModel, get_peft_model  # noqa: E402
from transformers import ViTConfig, ViTForImageClassification  # noqa: E402

from dithub.cli import main as dithub  # noqa: E402


def tiny_vit(seed: int = 0) -> ViTForImageClassification:
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=64, num_hidden_layers=4,
                    num_attention_heads=4, intermediate_size=128, num_labels=10)
    return ViTForImageClassification(cfg).eval()


def make_adapter(out: Path, seed: int) -> None:
    base = tiny_vit()
    torch.manual_seed(seed)  # after building the base, so each adapter differs
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, modules_to_save=["classifier"]))
    model.save_pretrained(out)


def run(line: str, repo: Path) -> None:
    print(f"\n$ dithub {line}", flush=True)
    code = dithub(["-C", str(repo), *shlex.split(line)])
    if code:
        sys.exit(code)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="Work directory (default: a new temporary one).")
    args = parser.parse_args()
    work = args.dir or Path(tempfile.mkdtemp(prefix="dithub-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"Working in {work}")
    tiny_vit().save_pretrained(work / "vit-v1")
    make_adapter(work / "adapters" / "dog", seed=1)
    make_adapter(work / "adapters" / "cat", seed=2)
    repo = work / "repo"
    repo.mkdir(exist_ok=True)

    run("init", repo)
    run(f"base add vit-v1 {work / 'vit-v1'}", repo)
    run(f"commit {work / 'adapters/dog'} -m 'dog adapter' -b class/dog --base vit-v1", repo)
    run(f"commit {work / 'adapters/cat'} -m 'cat adapter' -b class/cat --base vit-v1", repo)
    run("diff class/dog class/cat", repo)
    run("merge class/dog class/cat --method mean_ba --into main -m 'dog+cat (DitHub mean of B·A)'", repo)
    run("log --all --graph", repo)
    run(f"checkout class/dog -o {work / 'out/dog'}", repo)
    run(f"export class/cat --merged -o {work / 'out/cat-full'}", repo)
    run("fsck", repo)

    pixels = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        original = PeftModel.from_pretrained(tiny_vit(), work / "adapters/dog")(pixel_values=pixels).logits
        restored = PeftModel.from_pretrained(tiny_vit(), work / "out/dog")(pixel_values=pixels).logits
        merged = ViTForImageClassification.from_pretrained(work / "out/cat-full")(pixel_values=pixels).logits
        peft_cat = PeftModel.from_pretrained(tiny_vit(), work / "adapters/cat")(pixel_values=pixels).logits
    print(f"\ncheckout reproduces the dog adapter's outputs exactly: {torch.equal(original, restored)}")
    print(f"merged cat weights match peft's outputs: max |diff| = {(merged - peft_cat).abs().max():.2e}")


if __name__ == "__main__":
    main()
