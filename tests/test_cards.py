"""What comes out is what the ecosystem reads (issue 20, part 4): model cards parsed back with
huggingface_hub's ``ModelCard``, weight files with ``{"format": "pt"}``, committed files verbatim."""
from __future__ import annotations

import re
from pathlib import Path

import torch
import yaml
from huggingface_hub import ModelCard
from safetensors import safe_open
from safetensors.torch import save_file

from dithub import Repo


def recipe_of(card: ModelCard) -> dict:
    """The op the card's body embeds as YAML."""
    block = re.search(r"```yaml\n(.*?)```", card.text, re.S)
    assert block, card.text
    return yaml.safe_load(block.group(1))


def metadata(path: Path) -> dict | None:
    with safe_open(str(path), "np") as f:
        return f.metadata()


def test_a_committed_card_comes_back_verbatim_and_a_generated_one_parses(vit, tmp_path, cli):
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", vit.base_dir)
    repo.commit(vit.adapter_dir, "dog", branch="class/dog", base="vit")
    peft_card = (vit.adapter_dir / "README.md").read_bytes()
    out = repo.export("class/dog", tmp_path / "out")
    assert (out / "README.md").read_bytes() == peft_card  # committed with the adapter: kept, byte for byte
    assert (out / "adapter_model.safetensors").read_bytes() == (vit.adapter_dir / "adapter_model.safetensors").read_bytes()
    assert cli(["-C", str(tmp_path / "repo"), "checkout", "class/dog", "-o", str(tmp_path / "carded"), "--card"]).code == 0
    card = ModelCard.load(tmp_path / "carded" / "README.md")
    assert (card.data.library_name, card.data.base_model, card.data.base_model_relation) == ("peft", "vit", "adapter")
    assert "dithub" in card.data.tags and "lora" in card.data.tags
    assert recipe_of(card) == {"op": "commit", "base": "vit"}
    assert repo.resolve("class/dog") in card.text and "dog" in card.text


def test_a_merge_card_lists_its_inputs_op_and_verify_results(vit, tmp_path):
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", vit.base_dir)
    repo.commit(vit.adapter_dir, "dog", branch="class/dog", base="vit")
    repo.commit(vit.adapter2_dir, "cat", branch="class/cat", base="vit")
    oid = repo.merge(["class/dog", "class/cat"], "ties", {"density": 0.5}, into="merged", message="pets")
    out = repo.export("merged", tmp_path / "before")
    card = ModelCard.load(out.parent / "README.md")
    assert card.data.base_model == ["class/dog", "class/cat"] and card.data.base_model_relation == "merge"
    assert card.data.library_name is None and {"merge", "ties", "task-vector"} <= set(card.data.tags)
    recipe = recipe_of(card)
    op = repo.store.read_commit(oid).op
    assert recipe["method"] == "ties" and recipe["parameters"] == op.params and recipe["parameters"]["density"] == 0.5
    assert recipe["inputs"] == [{"name": "class/dog", "commit": repo.resolve("class/dog")},
                                {"name": "class/cat", "commit": repo.resolve("class/cat")}]
    assert card.data.eval_results is None  # never verified: no model-index
    assert metadata(out) == {"format": "pt"}  # a merge's weights are generated: marked as save_pretrained marks them
    report = repo.verify("merged")
    figures = {c.check: c.figure for c in report.checks if c.figure is not None}
    card = ModelCard.load(repo.export("merged", tmp_path / "after").parent / "README.md")
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == figures
    assert "## Verification" in card.text


def test_committed_task_vectors_come_back_verbatim_metadata_and_all(tmp_path):
    """Written as the safetensors library writes: tensors by dtype (largest first), then by name."""
    repo = Repo.init(tmp_path / "repo")
    tau = {"w": torch.randn(3, 4), "b": torch.randn(4).to(torch.bfloat16), "a": torch.arange(3), "m": torch.ones(2, dtype=torch.bool)}
    save_file(tau, str(tmp_path / "plain.safetensors"))  # no metadata: none added
    save_file(tau, str(tmp_path / "tagged.safetensors"), metadata={"task": "dog"})
    for name in ("plain", "tagged"):
        repo.commit(tmp_path / f"{name}.safetensors", name, branch=f"tv/{name}")
        out = repo.export(f"tv/{name}", tmp_path / f"{name}-out.safetensors")
        assert out.read_bytes() == (tmp_path / f"{name}.safetensors").read_bytes()
    assert metadata(tmp_path / "plain-out.safetensors") is None
