"""The README's demo runs offline and its claims hold."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from dithub import Repo
from dithub_demo import CLASS_TASKS, DOMAINS, TEXT_TASKS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart(tmp_path):
    res = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--dir", str(tmp_path)],
                         capture_output=True, text=True, env={"COLUMNS": "200", **__import__("os").environ})
    assert res.returncode == 0, res.stderr[-2000:]
    repo = Repo.open(tmp_path / "repo")
    assert repo.fsck().ok
    heads = [repo.resolve(f"lora/{d}") for d in DOMAINS]
    for method in ("task_arithmetic", "ties", "tsv", "iso_cts", "core_space", "mean_ba"):
        merge = repo.commit_object(f"merged/lora-{method}")
        assert merge.op.method == method and merge.parents == heads
    assert repo.commit_object("merged/tv-magmax").parents == [repo.resolve(f"tv/{d}") for d in DOMAINS]
    # the table's "individual" rows are the shipped adapters' own accuracies
    shipped = json.loads((ROOT / "examples" / "digits" / "suite.json").read_text())["accuracy"]
    rows = [line for line in res.stdout.splitlines() if line.startswith("│ individual")]
    assert len(rows) == 4
    for row, kind in zip(rows, ("lora", "full")):
        cells = [c.strip() for c in row.split("│") if c.strip()]
        assert cells[1:9] == [f"{100 * shipped[kind][d]:.1f}" for d in DOMAINS]
        assert cells[9] == f"{100 * sum(shipped[kind][d] for d in DOMAINS) / len(DOMAINS):.1f}"  # mean of the eight
    by_class = json.loads((ROOT / "examples" / "digits" / "classes.json").read_text())["accuracy"]["lora"]
    cells = [c.strip() for c in rows[2].split("│") if c.strip()]
    assert cells[1:6] == [f"{100 * by_class[t]:.1f}" for t in CLASS_TASKS]
    text = json.loads((ROOT / "examples" / "minilm" / "text.json").read_text())["accuracy"]["lora"]
    cells = [c.strip() for c in rows[3].split("│") if c.strip()]
    assert cells[1:4] == [f"{100 * text[t]:.1f}" for t in TEXT_TASKS]
    assert repo.commit_object("merged/text-tsv").parents == [repo.resolve(f"text/{t}") for t in TEXT_TASKS]
    assert repo.store.read_tree(repo.commit_object("text/intent").base).kind == "full"  # MiniLM is a stored base
    # full fine-tunes as model directories on their base, merged as θ − θ_base; a DoRA adapter checked out byte for byte
    assert repo.tree_of("ft/rot90").kind == "full" and repo.show("ft/rot90").base == "vit-v1"
    ties = repo.commit_object("merged/ft-ties")
    assert ties.op.method == "ties" and ties.parents == [repo.resolve("ft/rot90"), repo.resolve("ft/rot180")]
    assert repo.tree_of("dora/rot90").kind == "peft" and "byte for byte: True" in res.stdout
    # a mergekit recipe merged and printed back; bisect names the commit that broke rot90 (the 9th after it)
    recipe = repo.commit_object("merged/recipe")
    assert recipe.op.method == "ties" and recipe.op.params["per_tensor"] and "merge_method: ties" in res.stdout
    history = [e.id for e in repo.log(["history/rot90"])][::-1]
    assert f"{history[9][:12]} is the first bad commit" in res.stdout
    # the class-incremental branches, one per pair of classes, merged
    assert repo.commit_object("merged/class-iso_cts").parents == [repo.resolve(t) for t in CLASS_TASKS]
    # checkout wrote back the committed adapter's tensors bit for bit
    from safetensors.torch import load_file

    out = load_file(str(tmp_path / "out" / "rot90" / "adapter_model.safetensors"))
    shipped_rot90 = load_file(str(ROOT / "examples" / "digits" / "lora" / "rot90" / "adapter_model.safetensors"))
    assert out.keys() == shipped_rot90.keys() and all(out[k].equal(shipped_rot90[k]) for k in out)
