"""LoRA-native merges: exact against the definition and against peft's `cat`."""
from __future__ import annotations

import pytest
import torch
from peft import PeftModel

from conftest import lora_adapter, tiny_vit
from dithub import Repo
from dithub.errors import BadInput
from dithub.formats import lora_modules, scaling, to_torch


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("loras")
    lora_adapter(tiny_vit(), root / "a", seed=11, r=4, alpha=8)
    lora_adapter(tiny_vit(), root / "b", seed=12, r=2, alpha=6)  # another rank and scale
    return root


def _delta(repo, rev, module):
    tree = repo.tree_of(rev)
    m = lora_modules(tree.tensors)[module]
    load = lambda k: to_torch(repo.store.read_tensor(tree.tensors[k].id)).double()  # noqa: E731
    return scaling(tree.config, module) * load(m.b_key) @ load(m.a_key)


def test_mean_ba_is_the_mean_of_the_products(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "mean_ba")
    tree = repo.tree_of("main")
    assert tree.kind == "lora" and tree.config["r"] == 6 and tree.config["lora_alpha"] == 6
    for module in lora_modules(tree.tensors):
        expected = (_delta(repo, "class/a", module) + _delta(repo, "class/b", module)) / 2
        torch.testing.assert_close(_delta(repo, "main", module), expected, rtol=1e-5, atol=1e-6)


def test_concat_equals_peft_cat(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    repo.merge(["class/a", "class/b"], "concat", {"alpha": "0.5"})
    out = repo.export("main", tmp_path / "merged")

    peft_model = PeftModel.from_pretrained(tiny_vit(), adapters / "a", adapter_name="a")
    peft_model.load_adapter(adapters / "b", adapter_name="b")
    peft_model.add_weighted_adapter(["a", "b"], [0.5, 0.5], "cat", combination_type="cat")
    peft_model.set_adapter("cat")
    ours = PeftModel.from_pretrained(tiny_vit(), out).eval()
    pixels = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(pixel_values=pixels).logits, peft_model.eval()(pixel_values=pixels).logits,
                                   rtol=1e-5, atol=1e-5)


def test_lora_and_task_vector_methods_are_not_mixed(adapters, tmp_path):
    repo = Repo.init(tmp_path / "r")
    repo.commit(adapters / "a", "a", branch="class/a")
    repo.commit(adapters / "b", "b", branch="class/b")
    with pytest.raises(BadInput, match="merges task_vector inputs.*LoRA-native methods: concat, mean_ba"):
        repo.merge(["class/a", "class/b"], "ties")
