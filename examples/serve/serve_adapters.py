"""Serve dithub branches as LoRA adapters: one base model, several adapters, chosen per request.

A branch checked out into a directory (``dithub checkout BRANCH -o DIR``) is a peft adapter directory
whose ``adapter_config.json`` names its base (``rebase`` keeps that name current), so multi-LoRA
servers load it as it is. This is the smallest such server: one peft model holding every adapter,
``set_adapter`` per request. vLLM serves the same directories on a GPU
(``vllm serve BASE --enable-lora --lora-modules dog=DIR …``).

    python examples/serve/serve_adapters.py REPO BRANCH BRANCH… [--requests FILE.json]
    python examples/serve/serve_adapters.py --demo      # the digits base and two of its domain adapters

A request is ``{"adapter": BRANCH, "inputs": [...]}`` (the model's input tensor as nested lists); the
answer holds the predicted classes.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from dithub import Repo  # noqa: E402

DIGITS = Path(__file__).resolve().parents[1] / "digits"


def check_out(repo: Repo, branches: Sequence[str], into: Path) -> tuple[Path, dict[str, Path]]:
    """The base the branches are on and each branch, written out as directories a server loads."""
    bases = {repo.show(b).base for b in branches}
    if len(bases) != 1 or None in bases:
        raise SystemExit(f"the branches must be adapters on one base (they are on {sorted(map(str, bases))})")
    base = bases.pop()
    assert base is not None
    dirs = {b: repo.export(b, into / b.replace("/", "--")) for b in branches}
    return repo.export(base, into / "base"), dirs


class AdapterServer:
    """One base model with every adapter loaded, switched per request."""

    def __init__(self, base_dir: Path, adapters: dict[str, Path]) -> None:
        import transformers
        from peft import PeftModel

        arch = json.loads((base_dir / "config.json").read_text())["architectures"][0]
        base = getattr(transformers, arch).from_pretrained(base_dir)
        self.names = {branch: f"a{i}" for i, branch in enumerate(adapters)}  # peft's names: no '/' or '.'
        first, *rest = adapters
        self.model = PeftModel.from_pretrained(base, adapters[first], adapter_name=self.names[first]).eval()
        for branch in rest:
            self.model.load_adapter(adapters[branch], adapter_name=self.names[branch])

    def logits(self, adapter: str, inputs: torch.Tensor) -> torch.Tensor:
        if adapter not in self.names:
            raise KeyError(f"no adapter {adapter!r} (serving {', '.join(self.names)})")
        self.model.set_adapter(self.names[adapter])
        with torch.no_grad():
            return self.model(pixel_values=inputs).logits

    def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        inputs = torch.tensor(request["inputs"], dtype=torch.float32)
        return {"adapter": request["adapter"], "classes": self.logits(request["adapter"], inputs).argmax(-1).tolist()}


def demo(root: Path) -> tuple[AdapterServer, dict[str, float]]:
    """The digits ViT and its rot90 and flip adapters committed, checked out and served; each
    domain's probe sent to each adapter. Returns the server and the accuracy of every pairing."""
    from safetensors.torch import load_file

    repo = Repo.init(root / "repo")
    repo.base_add("vit-v1", DIGITS / "bases" / "vit-v1")
    for domain in ("rot90", "flip"):
        repo.commit(DIGITS / "lora" / domain, f"{domain} adapter", branch=f"domain/{domain}", base="vit-v1")
    base_dir, dirs = check_out(repo, ["domain/rot90", "domain/flip"], root / "served")
    server = AdapterServer(base_dir, dirs)
    accuracy = {}
    for domain in ("rot90", "flip"):
        probe = load_file(str(DIGITS / "probes" / f"{domain}.safetensors"))
        for adapter in ("domain/rot90", "domain/flip"):
            answer = server.handle({"adapter": adapter, "inputs": probe["inputs"].tolist()})
            accuracy[domain, adapter] = float((torch.tensor(answer["classes"]) == probe["labels"]).float().mean())
    return server, accuracy


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("repo", nargs="?", help="a dithub repository")
    parser.add_argument("branches", nargs="*", help="the branches to serve (adapters on one base)")
    parser.add_argument("--requests", type=Path, help="a JSON list of requests to answer")
    parser.add_argument("--demo", action="store_true", help="serve the digits demo's rot90 and flip adapters")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        if args.demo:
            _, accuracy = demo(Path(tmp))
            for (domain, adapter), acc in accuracy.items():
                print(f"{domain:>6} digits -> {adapter:<13} accuracy {acc:.3f}")
            return 0
        if not args.repo or not args.branches:
            parser.error("give a repository and the branches to serve, or --demo")
        server = AdapterServer(*check_out(Repo.open(args.repo), args.branches, Path(tmp)))
        for request in json.loads(args.requests.read_text()) if args.requests else []:
            print(json.dumps(server.handle(request)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
