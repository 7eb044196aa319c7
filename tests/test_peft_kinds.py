"""DoRA, LoHa, LoKr and IA3 adapters made by peft itself on a tiny ViT (issue 20, part 2): committed
and checked out byte for byte; what dithub does not compute for them yet is refused by name."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import tiny_vit
from dithub import Repo
from dithub.errors import BadInput, IncompatibleAdapters


def _configs() -> dict:
    from peft import IA3Config, LoHaConfig, LoKrConfig, LoraConfig

    return {
        "dora": LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], use_dora=True, init_lora_weights=False),
        "loha": LoHaConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"], init_weights=False),
        "lokr": LoKrConfig(r=4, alpha=8, target_modules=["q_proj", "v_proj"], init_weights=False),
        "ia3": IA3Config(target_modules=["q_proj", "v_proj", "fc2"], feedforward_modules=["fc2"], init_ia3_weights=False),
    }


@pytest.fixture(scope="module")
def kinds(tmp_path_factory) -> tuple[Path, dict[str, Path], torch.Tensor]:
    from peft import get_peft_model

    root = tmp_path_factory.mktemp("kinds")
    tiny_vit().save_pretrained(root / "base")
    dirs = {}
    for name, cfg in _configs().items():
        torch.manual_seed(7)
        get_peft_model(tiny_vit(), cfg).save_pretrained(root / name)
        dirs[name] = root / name
    torch.manual_seed(3)
    return root / "base", dirs, torch.randn(2, 1, 8, 8)


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def repo_with(tmp_path: Path, kinds, *names: str) -> Repo:
    """A repository with the ViT base and adapters ``names`` committed on branches a/NAME."""
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", kinds[0])
    for name in names:
        repo.commit(kinds[1][name], name, branch=f"a/{name}", base="vit")
    return repo


@pytest.mark.parametrize("kind", ["dora", "loha", "lokr", "ia3"])
def test_each_kind_commits_and_checks_out_byte_for_byte(kinds, kind, tmp_path):
    from peft import PeftModel

    base_dir, dirs, pixels = kinds
    repo = repo_with(tmp_path, kinds, kind)
    tree = repo.tree_of(f"a/{kind}")
    assert tree.kind == "peft" and "README.md" in tree.files  # peft's own model card, kept
    out = repo.export(f"a/{kind}", tmp_path / "out")
    assert files_of(out) == files_of(dirs[kind])
    with torch.no_grad():
        expected = PeftModel.from_pretrained(tiny_vit(), dirs[kind]).eval()(pixel_values=pixels).logits
        got = PeftModel.from_pretrained(tiny_vit(), out).eval()(pixel_values=pixels).logits
    assert torch.equal(expected, got)
    report = repo.verify(f"a/{kind}", checks=["integrity", "structure", "security"])
    assert report.ok and [c.status for c in report.checks] == ["pass", "pass", "skip"]


@pytest.mark.parametrize("kind", ["dora", "loha", "lokr", "ia3"])
def test_export_merged_is_peft_merge_and_unload_bit_for_bit(kinds, kind, tmp_path):
    from peft import PeftModel

    from transformers import ViTForImageClassification

    _base_dir, dirs, _ = kinds
    repo = repo_with(tmp_path, kinds, kind)
    ours = ViTForImageClassification.from_pretrained(repo.export_merged(f"a/{kind}", None, tmp_path / "merged")).state_dict()
    theirs = PeftModel.from_pretrained(tiny_vit(), dirs[kind]).merge_and_unload().state_dict()
    base = tiny_vit().state_dict()  # all three by the loaded model's names
    changed = [n for n in base if not torch.equal(theirs[n], base[n])]
    assert changed  # the adapter really changes the model (and, for IA3, q/v biases too)
    assert set(ours) == set(base) and all(torch.equal(ours[n], theirs[n]) for n in base), \
        [n for n in base if not torch.equal(ours[n], theirs[n])]


def test_full_space_merges_take_their_exact_updates(kinds, tmp_path):
    """τ of a DoRA/LoHa/LoKr/IA3 adapter is the change peft's merge makes to each base tensor: task
    arithmetic of two is the sum of those changes (computed here through peft itself)."""
    from peft import PeftModel

    _base_dir, dirs, _ = kinds
    repo = repo_with(tmp_path, kinds, "loha", "dora")
    repo.merge(["a/loha", "a/dora"], "task_arithmetic", {"alpha": 1.0}, into="m")
    from dithub.formats.hf_names import model_names

    base = tiny_vit().state_dict()
    changes = []
    for kind in ("loha", "dora"):
        merged = PeftModel.from_pretrained(tiny_vit(), dirs[kind]).merge_and_unload().state_dict()
        changes.append({n: merged[n].float() - base[n].float() for n in base if not torch.equal(merged[n], base[n])})
    tree, names = repo.tree_of("m"), model_names(repo.tree_of("vit").config, repo.tree_of("vit").tensors)
    assert tree.kind == "task_vector" and {names[n] for n in tree.tensors} == set(changes[0]) == set(changes[1])
    for n in tree.tensors:
        want = changes[0][names[n]] + changes[1][names[n]]
        got = torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors[n].id).data), dtype=torch.float32).reshape(want.shape)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    tiny_vit(1).save_pretrained(tmp_path / "vit2")
    repo.base_add("vit2", tmp_path / "vit2")
    with pytest.raises(IncompatibleAdapters, match="LOHA adapters .* not rebased yet"):
        repo.rebase("vit2", "a/loha", "naive")
    with pytest.raises(BadInput, match="LoRA-native methods"):
        repo.merge(["a/loha", "a/dora"], "mean_ba", into="nope")


def test_an_unknown_type_or_an_incomplete_module_is_refused(kinds, tmp_path):
    import shutil

    base_dir, dirs, _ = kinds
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", base_dir)
    odd = tmp_path / "vera"
    shutil.copytree(dirs["loha"], odd)
    config = json.loads((odd / "adapter_config.json").read_text())
    (odd / "adapter_config.json").write_text(json.dumps({**config, "peft_type": "VERA"}))
    with pytest.raises(BadInput, match="peft_type 'VERA' is not supported"):
        repo.commit(odd, "vera", branch="a/vera", base="vit")
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(dirs["loha"], broken)
    tensors = load_file(str(broken / "adapter_model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.endswith("layers.0.attention.q_proj.hada_w2_b")},
              str(broken / "adapter_model.safetensors"))
    with pytest.raises(BadInput, match="module 'vit.layers.0.attention.q_proj' has no hada_w2_b"):
        repo.commit(broken, "broken", branch="a/broken", base="vit")
    assert repo.branches() == {}
