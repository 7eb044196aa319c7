"""Git habits (issue 21, part 2): clone of a working repository, log --oneline, reset, rev-parse,
ls-tree, cat-file, blame and bisect, through the CLI."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from dithub import Repo
from dithub.errors import RemoteError

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"


def tv(path: Path, **tensors: torch.Tensor) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))
    return path


@pytest.fixture
def history(tmp_path):
    """A branch of task vectors where w1, w2 and w3 change at different commits: c0 adds all three,
    c1 changes w1, c2 changes w2, c3 changes nothing but b, c4 changes w3."""
    g = torch.Generator().manual_seed(0)
    values = {k: torch.randn(4, 3, generator=g) for k in ("w1", "w2", "w3", "b")}
    repo = Repo.init(tmp_path / "repo")
    commits, states = [], []
    for i, change in enumerate([None, "w1", "w2", "b", "w3"]):
        if change:
            values = {**values, change: values[change] + torch.randn(4, 3, generator=g)}
        states.append(dict(values))
        commits.append(repo.commit(tv(tmp_path / f"c{i}.safetensors", **values), f"c{i}", branch="main").id)
    return repo, commits, states


def test_log_oneline_rev_parse_and_reset(history, cli):
    repo, commits, _ = history
    run = lambda *a: cli(["-C", str(repo.path), *a])  # noqa: E731
    lines = run("log", "--oneline").out.splitlines()
    assert lines[0] == f"{commits[4][:12]} (main) c4" and lines[-1] == f"{commits[0][:12]} c0" and len(lines) == 5
    parsed = run("rev-parse", "main~2", "main", "--json")
    assert json.loads(parsed.out) == {"main~2": commits[2], "main": commits[4]}
    assert run("rev-parse", "main~1").out.strip() == commits[3]
    res = run("reset", "main~3", "--json")
    assert res.code == 0 and json.loads(res.out) == {"branch": "main", "old": commits[4], "new": commits[1]}
    assert repo.resolve("main") == commits[1] and repo.resolve("ORIG_HEAD") == commits[4]
    assert repo.reflog("refs/heads/main")[-1].message == "reset: moving to main~3"
    assert run("reset", "ORIG_HEAD").code == 0 and repo.resolve("main") == commits[4]  # undone, as in git
    assert run("reset", "nowhere").code == 6  # RefNotFound


def test_ls_tree_and_cat_file_show_what_is_stored(history, cli, tmp_path):
    repo, commits, states = history
    run = lambda *a: cli(["-C", str(repo.path), *a])  # noqa: E731
    listing = json.loads(run("ls-tree", "main", "--json").out)
    assert [t["name"] for t in listing["tensors"]] == ["b", "w1", "w2", "w3"] and listing["kind"] == "task_vector"
    w3 = next(t for t in listing["tensors"] if t["name"] == "w3")
    assert (w3["dtype"], w3["shape"], w3["bytes"]) == ("F32", [4, 3], 48) and w3["id"] == repo.tree_of("main").tensors["w3"].id
    tensor = json.loads(run("cat-file", "-p", w3["id"], "--json").out)
    expected = states[4]["w3"].double()
    assert tensor["kind"] == "tensor" and tensor["shape"] == [4, 3]
    assert abs(tensor["norm"] - float(expected.norm())) < 1e-9 and np.allclose(tensor["first"], expected.reshape(-1)[:8].numpy())
    commit = json.loads(run("cat-file", "main", "--json").out)
    assert commit["kind"] == "commit" and commit["parents"] == [commits[3]] and commit["message"] == "c4"
    tree = json.loads(run("cat-file", commit["tree"], "--json").out)
    assert tree["kind"] == "tree" and tree["tensors"]["w3"]["id"] == w3["id"]
    assert run("cat-file", "-t", commit["tree"]).out.strip() == "tree"
    assert int(run("cat-file", "-s", w3["id"]).out) == repo.store.size(w3["id"])
    assert "w3" in run("cat-file", "-p", commit["tree"]).out
    assert run("cat-file", "0" * 32).code == 5  # ObjectNotFound


def test_blame_names_the_commit_that_last_changed_each_tensor(history, cli):
    repo, commits, states = history
    blamed = {b["name"]: b for b in json.loads(cli(["-C", str(repo.path), "blame", "main", "--json"]).out)}
    assert {n: b["commit"] for n, b in blamed.items()} == {"w1": commits[1], "w2": commits[2], "b": commits[3], "w3": commits[4]}
    for name, at in (("w1", 1), ("w2", 2), ("b", 3), ("w3", 4)):
        assert blamed[name]["status"] == "changed"
        assert abs(blamed[name]["change"] - float((states[at][name] - states[at - 1][name]).double().norm())) < 1e-6
    assert blamed["w1"]["author"] == "tester" and blamed["w1"]["title"] == "c1"
    early = {b.name: b for b in repo.blame("main~3")}  # at c1: w2, w3, b still as c0 added them
    assert early["w2"].commit == commits[0] and early["w2"].status == "added"
    assert abs(early["w2"].change - float(states[0]["w2"].double().norm())) < 1e-6


def test_blame_takes_a_lora_module_whole(vit, tmp_path):
    """A LoRA module (A, B and scale) is one unit; its change is ‖ΔW_new − ΔW_old‖ of s·B@A."""
    from safetensors.torch import load_file as load

    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", vit.base_dir)
    first = repo.commit(vit.adapter_dir, "one", branch="a", base="vit").id
    second = repo.commit(vit.adapter2_dir, "two", branch="a").id
    blamed = {b.name: b for b in repo.blame("a")}
    module = "vit.layers.0.attention.q_proj"
    assert blamed[module].module and blamed[module].commit == second
    cfg = json.loads((vit.adapter_dir / "adapter_config.json").read_text())
    s = cfg["lora_alpha"] / cfg["r"]
    key = f"base_model.model.{module}.lora_"
    delta = lambda d: s * (load(str(d / "adapter_model.safetensors"))[key + "B.weight"].double()  # noqa: E731
                           @ load(str(d / "adapter_model.safetensors"))[key + "A.weight"].double())
    assert abs(blamed[module].change - float((delta(vit.adapter2_dir) - delta(vit.adapter_dir)).norm())) < 1e-6
    assert first != second


def test_bisect_finds_a_planted_transition_in_33_commits_within_6_tests(tmp_path, cli):
    """33 commits; from #20 on the task vector holds a NaN. bisect --run tests at most ⌈log₂ 32⌉ = 5."""
    repo = Repo.init(tmp_path / "repo")
    ids = []
    for i in range(33):
        value = torch.tensor([float("nan") if i >= 20 else 0.0, float(i)])
        ids.append(repo.commit(tv(tmp_path / f"t{i}.safetensors", w=value), f"step {i}", branch="main").id)
    check = (f"{shlex.quote(sys.executable)} -c \"import os, math; from safetensors.numpy import load_file; "
             "w = load_file(os.environ['DITHUB_BISECT_DIR'] + '/task_vector.safetensors')['w']; "
             "raise SystemExit(0 if all(math.isfinite(x) for x in w) else 1)\"")
    res = cli(["-C", str(repo.path), "bisect", ids[0], "main", "--run", check, "--json"])
    assert res.code == 0, res.err
    found = json.loads(res.out)
    assert found["first_bad"] == ids[20] and found["between"] == 31 and len(found["steps"]) <= 5
    assert all(s["verdict"] == ("good" if ids.index(s["commit"]) < 20 else "bad") for s in found["steps"])
    human = cli(["-C", str(repo.path), "bisect", ids[0], "main", "--run", check])
    assert f"{ids[20][:12]} is the first bad commit" in human.out and human.out.count(" is good") + human.out.count(" is bad") <= 5
    skip = cli(["-C", str(repo.path), "bisect", ids[0], "main", "--run", "exit 125"])
    assert skip.code == 3 and "was skipped" in skip.err
    assert cli(["-C", str(repo.path), "bisect", ids[5], ids[0], "--run", "true"]).code == 3  # GOOD after BAD


def test_bisect_by_probe_accuracy_on_the_digits_adapter(tmp_path, cli):
    """The rot90 adapter is good on its probe (accuracy ~0.74) until a commit breaks its B factors."""
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", DIGITS / "bases" / "vit-v1")
    good = DIGITS / "lora" / "rot90"
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    weights = load_file(str(good / "adapter_model.safetensors"))
    g = torch.Generator().manual_seed(0)
    save_file({k: (v if "lora_A" in k else 40 * torch.randn(v.shape, generator=g)) for k, v in weights.items()},
              str(broken / "adapter_model.safetensors"))
    ids = [repo.commit(good, "rot90", branch="main", base="vit").id]
    for i in range(1, 9):
        ids.append(repo.commit(broken if i >= 6 else good, f"step {i}", branch="main", allow_empty=True).id)
    probe = str(DIGITS / "probes" / "rot90.safetensors")
    res = cli(["-C", str(repo.path), "bisect", ids[0], "main", "--probe", probe, "--min-accuracy", "0.5", "--json"])
    assert res.code == 0, res.err
    found = json.loads(res.out)
    assert found["first_bad"] == ids[6] and len(found["steps"]) <= 3  # ⌈log₂ 8⌉
    scores = {s["commit"]: s["score"] for s in found["steps"]}
    assert all((s >= 0.5) == (ids.index(c) < 6) for c, s in scores.items())
    drop = json.loads(cli(["-C", str(repo.path), "bisect", ids[0], "main", "--probe", probe, "--max-drop", "0.2", "--json"]).out)
    assert drop["first_bad"] == ids[6]
    assert cli(["-C", str(repo.path), "bisect", ids[0], "main", "--probe", probe]).code == 3  # no threshold


def test_clone_and_fetch_from_a_working_repository(history, tmp_path, cli):
    repo, commits, _ = history
    res = cli(["clone", str(repo.path), str(tmp_path / "copy")])
    assert res.code == 0, res.err
    copy = Repo.open(tmp_path / "copy")
    assert copy.resolve("main") == commits[4] and copy.fsck().ok
    other = Repo.init(tmp_path / "other")
    assert cli(["-C", str(other.path), "remote", "add", "up", "../repo"]).code == 0  # relative, as git allows
    assert cli(["-C", str(other.path), "fetch", "up"]).code == 0 and other.resolve("up/main") == commits[4]
    from dithub.ops.sync import push

    with pytest.raises(RemoteError, match="is a working repository"):
        push(copy, "origin", ["main"])
    assert repo.resolve("main") == commits[4]


def _diverged(tmp_path, vit):
    """A remote with class/dog; a clone that commits on it while the remote moves on: diverged."""
    from dithub.ops.sync import push, remote_add

    repo = Repo.init(tmp_path / "a")
    repo.base_add("vit", vit.base_dir)
    first = repo.commit(vit.adapter_dir, "dog", branch="main", base="vit").id
    remote_add(repo, "origin", str(tmp_path / "remote"))
    push(repo, "origin", ["main"])
    other, _ = Repo.clone(str(tmp_path / "remote"), tmp_path / "b")
    ours = repo.commit(vit.adapter2_dir, "ours", branch="main").id
    save_file({k: 2 * v for k, v in load_file(str(vit.adapter_dir / "adapter_model.safetensors")).items()},
              str(tmp_path / "x.safetensors"))
    (tmp_path / "theirs").mkdir()
    (tmp_path / "theirs" / "adapter_config.json").write_text((vit.adapter_dir / "adapter_config.json").read_text())
    (tmp_path / "x.safetensors").rename(tmp_path / "theirs" / "adapter_model.safetensors")
    theirs = other.commit(tmp_path / "theirs", "theirs", branch="main").id
    push(other, "origin", ["main"])
    return repo, first, ours, theirs


def test_pull_merges_diverged_branches_with_the_merge_engine(tmp_path, vit, cli):
    repo, first, ours, theirs = _diverged(tmp_path, vit)
    refused = cli(["-C", str(repo.path), "pull", "origin", "main"])
    assert refused.code == 8 and "have diverged" in refused.err and "--method" in refused.err  # RefConflict
    assert repo.resolve("main") == ours
    res = cli(["-C", str(repo.path), "pull", "origin", "main", "--method", "mean_ba", "--json"])
    assert res.code == 0, res.err
    head = repo.commit_object("main")
    assert head.parents == [ours, theirs] and head.op.name == "merge" and head.op.method == "mean_ba"
    assert head.op.inputs == [ours, theirs]
    expected = repo.merge([ours, theirs], "mean_ba", into="check")  # the same merge, run directly: the same tree
    assert repo.commit_object("check").tree == head.tree and expected


def test_checkout_classes_composes_the_classes_branches(tmp_path, vit, cli):
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", vit.base_dir)
    repo.commit(vit.adapter_dir, "dog", branch="class/dog", base="vit")
    repo.commit(vit.adapter2_dir, "cat", branch="class/cat", base="vit")
    res = cli(["-C", str(repo.path), "checkout", "--classes", "dog,cat,zebra", "-o", str(tmp_path / "out"), "--json"])
    assert res.code == 0, res.err
    assert json.loads(res.out)["used"] == ["class/dog", "class/cat"] and json.loads(res.out)["missing"] == ["zebra"]
    assert "zebra" in res.err and "warning" in res.err
    direct = cli(["-C", str(repo.path), "checkout", "class/dog", "class/cat", "-o", str(tmp_path / "direct")])
    assert direct.code == 0
    assert (tmp_path / "out" / "adapter_model.safetensors").read_bytes() == (tmp_path / "direct" / "adapter_model.safetensors").read_bytes()
    one = cli(["-C", str(repo.path), "checkout", "--classes", "dog", "--prefix", "class/", "-o", str(tmp_path / "one")])
    assert one.code == 0 and (tmp_path / "one" / "adapter_model.safetensors").read_bytes() == (
        vit.adapter_dir / "adapter_model.safetensors").read_bytes()
    none = cli(["-C", str(repo.path), "checkout", "--classes", "zebra", "-o", str(tmp_path / "none")])
    assert none.code == 3 and not (tmp_path / "none").exists()


def test_show_keeps_whole_tensor_names_in_80_columns(vit, tmp_path, cli):
    """Issue 21, part 4: names wrap instead of being cut to '…q_proj.…' (tests print 80 columns)."""
    repo = Repo.init(tmp_path / "repo")
    repo.commit(vit.adapter_dir, "dog", branch="main")
    shown = cli(["-C", str(repo.path), "show", "main"]).out
    rows = shown.splitlines()
    header = next(i for i, line in enumerate(rows) if line.split()[:2] == ["tensor", "dtype"])
    cut = rows[header].index("dtype")
    names: list[str] = []
    for line in rows[header + 1:]:  # a name folded over lines: the other columns are empty on its continuations
        if line[cut:].strip():
            names.append(line[:cut].strip())
        elif line.strip():
            names[-1] += line[:cut].strip()
    assert "…" not in shown and sorted(names) == sorted(repo.tree_of("main").tensors)
    assert max(len(line) for line in rows) <= 80
    assert "…" not in cli(["-C", str(repo.path), "diff", "main", "main"]).out


def test_status_on_an_unborn_branch_names_the_others(vit, tmp_path, cli):
    repo = Repo.init(tmp_path / "repo")
    repo.commit(vit.adapter_dir, "dog", branch="class/dog")
    res = cli(["-C", str(repo.path), "status"])
    assert "No commits on main yet" in res.out and "class/dog" in res.out and "dithub checkout class/dog" in res.out


def test_progress_counts_tensors_as_tensors(monkeypatch):
    """A merge's bar counts tensors ("3/12 tensors"), a transfer's bytes with a speed."""
    import io

    from rich.console import Console

    from dithub.cli import output

    sink = io.StringIO()
    monkeypatch.setattr(output, "err", Console(file=sink, force_terminal=True, width=100))
    monkeypatch.setattr(output, "SHOW_AFTER_SECONDS", 0.0)
    with output.progress_bars() as progress:
        advance = progress("merging with ties", 12, "tensors")
        advance(3)
        sent = progress("pushing", 2_000_000)
        sent(1_000_000)
    text = sink.getvalue()
    assert "3/12 tensors" in text and "1.0/2.0 MB" in text and "tensors/" not in text
