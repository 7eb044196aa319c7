"""Serving (issue 20, part 4): branches checked out as directories that a multi-LoRA server loads;
examples/serve/serve_adapters.py holds two in one peft model and switches per request."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from safetensors.torch import load_file

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "serve" / "serve_adapters.py"
DIGITS = EXAMPLE.parents[1] / "digits"


def _example():
    spec = importlib.util.spec_from_file_location("serve_adapters", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_checked_out_adapters_are_served_from_one_model_switched_per_request(tmp_path):
    from peft import PeftModel
    from transformers import ViTForImageClassification

    server, accuracy = _example().demo(tmp_path)
    for domain, other in (("rot90", "flip"), ("flip", "rot90")):  # each request reaches the adapter it names
        assert accuracy[domain, f"domain/{domain}"] > accuracy[domain, f"domain/{other}"] + 0.3, accuracy
    served = tmp_path / "served"
    x = load_file(str(DIGITS / "probes" / "rot90.safetensors"))["inputs"][:16]
    for branch, shipped in (("domain/rot90", "rot90"), ("domain/flip", "flip")):
        folder = served / branch.replace("/", "--")
        assert (folder / "adapter_model.safetensors").read_bytes() == (DIGITS / "lora" / shipped / "adapter_model.safetensors").read_bytes()
        alone = PeftModel.from_pretrained(ViTForImageClassification.from_pretrained(served / "base"), folder).eval()
        with torch.no_grad():
            expected = alone(pixel_values=x).logits
        assert torch.equal(server.logits(branch, x), expected)  # switching in one model = the adapter loaded alone
    assert not torch.equal(server.logits("domain/rot90", x), server.logits("domain/flip", x))
