"""dithub verify and its hooks, on the shipped digits ViT and its domain LoRA adapters.

Each check is made to fail for its own reason on a crafted bad adapter (tampered object, wrong
shape, NaN, exploded norm, accuracy drop, backdoor-aligned update) and to pass on a good merge;
figures are compared with computations written here (dense ΔW, a model exported by another path).
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from dithub import Repo
from dithub.errors import BadInput
from dithub.store import Op, Tree
from dithub.verify import load_policy

DIGITS = Path(__file__).resolve().parents[1] / "examples" / "digits"
PROBES = DIGITS / "probes"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("verify") / "repo"
    repo = Repo.init(root)
    repo.base_add("vit-v1", DIGITS / "bases" / "vit-v1")
    for d in ("rot90", "flip", "invert"):
        repo.commit(DIGITS / "lora" / d, d, branch=f"lora/{d}", base="vit-v1")
    repo.merge(["lora/rot90", "lora/flip"], "task_arithmetic", into="good")
    repo.merge(["lora/rot90", "lora/flip", "lora/invert"], "ties", into="poor")
    return root


@pytest.fixture
def repo(built, tmp_path) -> Repo:
    shutil.copytree(built, tmp_path / "repo")
    return Repo.open(tmp_path / "repo")


def _policy(repo: Repo, text: str) -> Path:
    path = repo.path / "dithub.toml"
    path.write_text(text)
    return path


GOOD_POLICY = f"""
[verify]
probe = "{PROBES / 'original.safetensors'}"
min_accuracy = 0.6
max_drop = 0.5
[tasks]
"lora/*" = "{PROBES}/{{name}}.safetensors"
"""


def _statuses(report) -> dict[str, str]:
    return {c.check: c.status for c in report.checks}


def _row(report, check: str):
    return next(c for c in report.checks if c.check == check)


def _dense(repo: Repo, rev: str) -> dict[str, torch.Tensor]:
    """The update per base tensor written out: a task vector's tensors; each LoRA module's
    (alpha/r)·B@A (the demo adapters adapt modules only, named as in the checkpoint)."""
    tree = repo.tree_of(rev)
    load = lambda k: torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors[k].id).data),  # noqa: E731
                                      dtype=torch.float32).reshape(tree.tensors[k].shape)
    if tree.kind == "task_vector":
        return {k: load(k) for k in tree.tensors}
    scale = tree.config["lora_alpha"] / tree.config["r"]
    return {k.split("base_model.model.", 1)[1].split(".lora_A.")[0] + ".weight": scale * load(k.replace(".lora_A.", ".lora_B.")) @ load(k)
            for k in tree.tensors if ".lora_A." in k}


def test_a_good_merge_passes_every_check(repo):
    repo.tag("known-bad/noise", "lora/invert")  # an unrelated update: the screen measures, and passes
    policy = _policy(repo, GOOD_POLICY + "[branches.good]\nmax_backdoor_cosine = 0.9\n")
    report = repo.verify("good", policy=policy)
    statuses = _statuses(report)
    assert statuses.pop("signature") == "skip"  # unsigned, and the default policy does not require signatures
    assert report.ok and set(statuses.values()) == {"pass"}, report.checks
    assert report.branch == "good" and report.policy == str(policy)


def test_accuracy_floor_and_task_drop_fail_on_a_poor_merge(repo, tmp_path):
    from transformers import ViTForImageClassification

    from dithub.formats import read_safetensors, to_torch

    report = repo.verify("poor", policy=_policy(repo, GOOD_POLICY))
    acc, drop = _row(report, "behaviour.accuracy"), _row(report, "behaviour.drop")
    assert acc.status == "fail" and drop.status == "fail" and not report.ok
    # independently: the merged weights written out by export (another code path), loaded by transformers
    repo.export_merged("poor", None, tmp_path / "merged")
    model = ViTForImageClassification.from_pretrained(tmp_path / "merged").eval()

    def accuracy(probe: Path) -> float:
        t = read_safetensors(probe).tensors
        with torch.no_grad():
            return float((model(pixel_values=to_torch(t["inputs"])).logits.argmax(-1) == to_torch(t["labels"])).float().mean())

    assert acc.figure == pytest.approx(accuracy(PROBES / "original.safetensors"), abs=1e-6)
    assert "lora/" in drop.detail and drop.figure > 0.5
    task = drop.detail.split("task ")[1].split(" ")[0].split("/")[1]
    alone = float(drop.detail.split("): ")[1].split(" alone")[0])
    assert drop.figure == pytest.approx(alone - accuracy(PROBES / f"{task}.safetensors"), abs=2e-4)


def _craft(repo: Repo, name: str, edit, *, like: str = "good", merge: bool = True) -> None:
    """Commit a copy of ``like``'s tree with ``edit(key, tensor) -> tensor | None`` applied."""
    from dithub.ops.deltas import put_tensor

    commit = repo.commit_object(like)
    tree = repo.store.read_tree(commit.tree)
    tensors = dict(tree.tensors)
    for key, entry in tree.tensors.items():
        t = torch.frombuffer(bytearray(repo.store.read_tensor(entry.id).data), dtype=torch.float32).reshape(entry.shape)
        new = edit(key, t.clone())
        if new is not None:
            tensors[key] = put_tensor(repo, new)
    oid = repo.store.write_tree(Tree(tree.kind, tree.config, tensors))
    op = commit.op if merge else Op()
    repo.commit_tree(oid, name, branch=name, base=commit.base, op=op, parents=[])


def test_nan_and_an_exploded_layer_fail_numeric(repo):
    key = "vit.layers.1.attention.q_proj.weight"
    _craft(repo, "nan", lambda k, t: t.index_fill_(0, torch.tensor([0]), float("nan")) if k == key else None)
    report = repo.verify("nan", checks=["numeric"])
    finite = _row(report, "numeric.finite")
    assert finite.status == "fail" and key in finite.detail and finite.figure == 64  # one row of a 64 x 64 update
    _craft(repo, "exploded", lambda k, t: t * 100 if k == key else None)
    report = repo.verify("exploded", checks=["numeric"])
    norms = _row(report, "numeric.norms")
    assert norms.status == "fail" and norms.detail.startswith(key)
    merged, inputs = _dense(repo, "exploded"), [_dense(repo, "lora/rot90"), _dense(repo, "lora/flip")]
    expected = merged[key].norm() / sum(i[key].norm() for i in inputs)
    assert norms.figure == pytest.approx(float(expected), rel=1e-4)
    assert _row(repo.verify("good", checks=["numeric"]), "numeric.norms").status == "pass"


def test_a_wrong_shape_or_dtype_fails_structure(repo):
    key = "vit.layers.0.attention.o_proj.weight"
    _craft(repo, "wide", lambda k, t: torch.zeros(t.shape[0], t.shape[1] + 4) if k == key else None, merge=False)
    row = _row(repo.verify("wide", checks=["structure"]), "structure")
    assert row.status == "fail" and key in row.detail and "[64, 68]" in row.detail
    _craft(repo, "half", lambda k, t: t.half() if k == key else None, merge=False)
    policy = _policy(repo, '[verify]\ndtypes = ["F32"]\n')
    row = _row(repo.verify("half", checks=["structure"], policy=policy), "structure")
    assert row.status == "fail" and key in row.detail and "F16" in row.detail
    assert _row(repo.verify("good", checks=["structure"], policy=policy), "structure").status == "pass"


@pytest.mark.parametrize("config, message", [({"r": 4}, "has rank 8 but the config says r=4"),
                                             ({"lora_alpha": -16}, "has lora_alpha -16.0"),
                                             ({"target_modules": ["q_proj"]}, "which target_modules")])
def test_a_lora_config_that_disagrees_with_its_tensors_fails_structure(repo, config, message):
    tree = repo.tree_of("lora/rot90")
    bad = repo.store.write_tree(Tree("lora", {**tree.config, **config}, dict(tree.tensors)))
    repo.commit_tree(bad, "bad config", branch="badcfg", base=repo.commit_object("lora/rot90").base, parents=[])
    row = _row(repo.verify("badcfg", checks=["structure"]), "structure")
    assert row.status == "fail" and message in row.detail
    assert _row(repo.verify("lora/rot90", checks=["structure"]), "structure").status == "pass"


def test_a_tampered_object_fails_integrity_and_skips_the_rest(repo):
    victim = repo.tree_of("good").tensors[next(iter(repo.tree_of("good").tensors))].id
    path = repo.store.path(victim)
    path.chmod(0o644)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    report = repo.verify("good")
    row = _row(report, "integrity")
    assert row.status == "fail" and victim in row.detail and row.figure == 1
    assert {c.status for c in report.checks if c.check != "integrity"} == {"skip"}


def test_a_backdoor_aligned_update_is_flagged(repo):
    from dithub.ops.deltas import put_tensor

    # the known-bad vector: in each query projection, a direction as large as rot90's own update there
    rot = repo.tree_of("lora/rot90")
    scale = rot.config["lora_alpha"] / rot.config["r"]
    load = lambda k: torch.frombuffer(bytearray(repo.store.read_tensor(rot.tensors[k].id).data),  # noqa: E731
                                      dtype=torch.float32).reshape(rot.tensors[k].shape)
    g = torch.Generator().manual_seed(0)
    bd, extra_b = {}, {}
    for key in rot.tensors:
        if "q_proj.lora_A" in key:
            a, b = load(key), load(key.replace("lora_A", "lora_B"))
            direction = torch.randn(b.shape, generator=g)
            direction *= (scale * b @ a).norm() / (scale * direction @ a).norm()
            module = key.split("base_model.model.", 1)[1].split(".lora_A.")[0] + ".weight"
            bd[module], extra_b[key.replace("lora_A", "lora_B")] = scale * direction @ a, direction
    tv = repo.store.write_tree(Tree("task_vector", {}, {k: put_tensor(repo, v) for k, v in bd.items()}))
    repo.commit_tree(tv, "backdoor vector", branch="bd", base=repo.commit_object("lora/rot90").base, parents=[])
    repo.tag("known-bad/trigger", "bd")
    # an adapter that carries it: rot90 with the direction added to its query modules' B
    poison = lambda key, t: t + extra_b[key] if key in extra_b else None  # noqa: E731
    _craft(repo, "poisoned", poison, like="lora/rot90", merge=False)
    repo.merge(["poisoned", "lora/flip"], "task_arithmetic", into="carrier")
    report = repo.verify("carrier", checks=["security"])
    row = _row(report, "security.backdoor")
    merged, bad = _dense(repo, "carrier"), bd
    dot = sum(float((merged[k] * bad[k]).sum()) for k in bad)
    norm_m = math.sqrt(sum(float(v.pow(2).sum()) for v in merged.values()))
    norm_b = math.sqrt(sum(float(v.pow(2).sum()) for v in bad.values()))
    assert row.figure == pytest.approx(dot / (norm_m * norm_b), rel=1e-4)
    clean = _row(repo.verify("good", checks=["security"]), "security.backdoor")
    assert row.status == "fail" and "known-bad/trigger" in row.detail and clean.status == "pass" and abs(clean.figure) < 0.05
    assert _row(repo.verify("good", checks=["security"], against=["refs/tags/none/*"]), "security.backdoor").status == "skip"


def test_a_user_metric_function(repo, tmp_path, monkeypatch):
    (tmp_path / "mymetric.py").write_text(
        "import torch\n"
        "def neg_loss(model, probe):\n"
        "    x, y = probe.batches[0]\n"
        "    with torch.no_grad():\n"
        "        return -float(torch.nn.functional.cross_entropy(model(pixel_values=x).logits, y))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    policy = _policy(repo, f'[verify]\nprobe = "{PROBES / "rot90.safetensors"}"\nmetric = "mymetric:neg_loss"\nmin_accuracy = 0.0\n')
    with pytest.raises(BadInput, match="allow-code"):  # a policy file names code only with the user's opt-in
        repo.verify("good", checks=["behaviour"], policy=policy)
    row = _row(repo.verify("good", checks=["behaviour"], policy=policy, allow_code=True), "behaviour.accuracy")
    assert row.status == "fail" and row.figure < 0  # a loss is never above 0 when negated: the floor 0 fails
    assert "mymetric:neg_loss" in row.detail


@pytest.mark.parametrize("text, message", [
    ("[verify]\nmin_acc = 0.5\n", "verify.min_acc: unknown key"),
    ("[verify]\nmin_accuracy = 'high'\n", "verify.min_accuracy: must be a number, got str"),
    ("[verify]\nmin_accuracy = 1.5\n", "verify.min_accuracy: 1.5 is out of range"),
    ("[verify]\nchecks = ['integrity', 'speling']\n", "verify.checks: unknown value 'speling'"),
    ("[verify]\ndtypes = 'F32'\n", "verify.dtypes: must be a list"),
    ("[branches.'class/*']\nmax_drop = true\n", "branches.'class/\\*'.max_drop: must be a number"),
    ("[hooks]\nrefs = 'main'\n", "hooks.refs: must be a list"),
    ("[hooks]\nbranches = ['main']\n", "hooks.branches: unknown key"),
    ("[verfy]\n", "verfy: unknown table"),
    ("[verify\n", "not valid TOML"),
])
def test_the_policy_is_validated_key_by_key(tmp_path, text, message):
    path = tmp_path / "dithub.toml"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        load_policy(path)


def test_branch_patterns_and_task_probes(tmp_path):
    path = tmp_path / "dithub.toml"
    path.write_text('[verify]\nmin_accuracy = 0.5\n[branches."class/*"]\nmin_accuracy = 0.8\n[branches."class/dog"]\nmax_drop = 0.1\n'
                    '[tasks]\n"domain/*" = "probes/{name}.safetensors"\n"class/*" = "pkg.probes:{branch}"\n[hooks]\nrefs = ["main"]\n')
    with pytest.raises(BadInput, match="tasks.'class/\\*'.*names Python code"):
        load_policy(path)
    policy = load_policy(path, allow_code=True)
    assert policy.for_branch("main").min_accuracy == 0.5 and policy.for_branch(None).min_accuracy == 0.5
    dog = policy.for_branch("class/dog")
    assert (dog.min_accuracy, dog.max_drop) == (0.8, 0.1) and policy.for_branch("class/cat").max_drop is None
    assert policy.task_probe("domain/aerial") == str(tmp_path / "probes" / "aerial.safetensors")
    assert policy.task_probe("class/dog") == "pkg.probes:class/dog" and policy.task_probe("main") is None
    assert policy.hooks_cover("main") and not policy.hooks_cover("class/dog")


def test_cli_json_is_stable_and_exit_codes(cli, repo):
    _policy(repo, GOOD_POLICY)
    res = cli(["-C", str(repo.path), "verify", "good", "--json"])
    assert res.code == 0, res.err
    doc = json.loads(res.out)
    assert set(doc) == {"format", "ref", "commit", "branch", "policy", "ok", "checks"} and doc["format"] == 1 and doc["ok"]
    assert [c["check"] for c in doc["checks"]] == ["integrity", "structure", "numeric.finite", "numeric.norms",
                                                   "behaviour.accuracy", "behaviour.drop", "security.backdoor", "signature"]
    assert all(set(c) == {"check", "status", "figure", "threshold", "detail"} for c in doc["checks"])
    res = cli(["-C", str(repo.path), "verify", "poor"])
    assert res.code == 11 and "verify failed: poor: behaviour.accuracy, behaviour.drop" in res.err
    assert "behaviour.accuracy" in res.out and "fail" in res.out  # the table
    res = cli(["-C", str(repo.path), "verify", "good", "--policy", str(repo.path / "nope.toml")])
    assert res.code == 3 and "no such policy file" in res.err
    res = cli(["-C", str(repo.path), "verify", "nobranch"])
    assert res.code == 6


@pytest.mark.slow
def test_git_hooks_block_a_bad_merge_and_let_a_good_one_through(repo):
    import git

    host = git.Repo.init(repo.path)
    with host.config_writer() as c:
        c.set_value("user", "name", "t").set_value("user", "email", "t@example.com")
    (repo.path / ".gitignore").write_text(".dithub/\n")
    _policy(repo, GOOD_POLICY + '[hooks]\nrefs = ["main"]\n')
    from dithub.verify.hooks import install, uninstall

    (Path(host.git_dir) / "hooks").mkdir(exist_ok=True)
    (Path(host.git_dir) / "hooks" / "pre-commit").write_text("#!/bin/sh\nexit 0\n")  # a hook of the user's own
    with pytest.raises(BadInput, match="was not written by dithub"):
        install(repo)
    paths = install(repo, force=True)
    assert [p.name for p in paths] == ["pre-commit", "pre-push"]

    def git_commit(message: str) -> None:
        (repo.path / "notes.txt").write_text(message)
        host.index.add(["notes.txt", ".gitignore", "dithub.toml"])
        host.git.commit("-m", message)  # the git CLI: runs the hooks

    good = repo.resolve("good")
    repo.refs.set_if_equals("refs/heads/main", repo.refs.resolve("refs/heads/main"), good, "test")
    git_commit("good merge")
    _craft(repo, "nan", lambda k, t: t.fill_(float("nan")) if k.endswith("q_proj.weight") else None)
    repo.refs.set_if_equals("refs/heads/main", good, repo.resolve("nan"), "test")
    with pytest.raises(git.GitCommandError) as blocked:
        git_commit("nan merge")
    assert "numeric.finite" in blocked.value.stderr and len(list(host.iter_commits())) == 1
    repo.refs.set_if_equals("refs/heads/main", repo.resolve("nan"), repo.resolve("poor"), "test")
    with pytest.raises(git.GitCommandError) as blocked:
        git_commit("poor merge")
    assert "behaviour.accuracy" in blocked.value.stderr
    repo.refs.set_if_equals("refs/heads/main", repo.resolve("poor"), good, "test")
    git_commit("back to the good merge")  # verified before: passes at once
    assert len(list(host.iter_commits())) == 2
    uninstall(repo)
    assert (Path(host.git_dir) / "hooks" / "pre-commit").read_text() == "#!/bin/sh\nexit 0\n"  # the user's hook is back
    assert not (Path(host.git_dir) / "hooks" / "pre-push").exists()


def test_a_commit_without_a_base_skips_what_needs_one(repo):
    report = repo.verify("vit-v1")  # the base checkpoint itself: a full tree, no base of its own
    rows = {c.check: c for c in report.checks}
    assert report.ok and rows["integrity"].status == rows["numeric.finite"].status == "pass"
    assert rows["behaviour.accuracy"].status == "skip" and "records no base" in rows["behaviour.accuracy"].detail
    assert rows["security.backdoor"].status == "skip" and "full checkpoint" in rows["security.backdoor"].detail
