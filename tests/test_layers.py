"""The layering rules of DESIGN.md, checked on the source."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dithub"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _calls_print(path: Path) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"
               for n in ast.walk(ast.parse(path.read_text())))


def test_store_knows_nothing_of_ml():
    for f in (PKG / "store").rglob("*.py"):
        assert not _imports(f) & {"torch", "numpy", "transformers", "peft", "safetensors"}, f


def test_nothing_below_cli_renders_or_prints():
    for f in PKG.rglob("*.py"):
        if "cli" in f.relative_to(PKG).parts or f.name == "__main__.py":
            continue
        assert not _imports(f) & {"typer", "rich", "click"}, f
        assert not _calls_print(f), f


def test_every_package_declares_all():
    for init in PKG.rglob("__init__.py"):
        if init.parent.name == "commands":
            continue
        assert "__all__" in init.read_text(), init


def test_cli_starts_without_torch():
    code = "import sys, dithub.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_commit_log_and_checkout_do_not_load_torch(tmp_path):
    """Storing and writing out adapters is I/O: torch (1-2 s to import) loads only for commands that
    compute. Checkout loaded it once the facade moved (measured 2.5x slower in benchmarks/ab.py)."""
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"base_model.model.l.lora_A.weight": np.ones((2, 4), np.float32),
               "base_model.model.l.lora_B.weight": np.ones((4, 2), np.float32)}, str(tmp_path / "a.safetensors"))
    code = ("import sys; from dithub import Repo; r = Repo.init(sys.argv[1]); r.commit(sys.argv[2], 'one'); "
            "r.log(); r.export('HEAD', sys.argv[3]); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "repo"), str(tmp_path / "a.safetensors"), str(tmp_path / "out")],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_committing_an_adapter_on_its_base_loads_neither_torch_nor_transformers(tmp_path, vit):
    """Issue 20, part 5: the checkpoint-to-model name map an adapter is checked through is computed once,
    at base add, and stored with the base; a commit reads it instead of building a model."""
    from dithub import Repo

    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", vit.base_dir)
    assert repo.tree_of("vit").names  # the loaded model renames ViT's checkpoint keys: recorded
    code = ("import sys; from dithub.cli import main; rc = main(['-C', sys.argv[1], 'commit', sys.argv[2], '-m', 'dog', "
            "'-b', 'class/dog', '--base', 'vit']); print(rc, 'torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "repo"), str(vit.adapter_dir)],
                         capture_output=True, text=True, check=True).stdout
    assert out.split()[-3:] == ["0", "False", "False"]
    legacy = Repo.init(tmp_path / "legacy")  # a base recorded before the names were: computed when needed
    legacy.base_add("vit", vit.base_dir)
    tree = legacy.tree_of("vit")
    from dataclasses import replace

    old = legacy.store.write_tree(replace(tree, names=None))
    legacy.commit_tree(old, "as before", ref="refs/bases/vit")
    legacy.commit(vit.adapter_dir, "dog", branch="class/dog", base="vit")
    assert legacy.tree_of("class/dog").tensors == repo.tree_of("class/dog").tensors


READ_AND_WRITE_COMMANDS = [
    ["status"], ["log", "class/a"], ["show", "class/a"], ["branch"], ["branch", "new", "class/a"], ["tag", "v1", "class/a"],
    ["tag"], ["checkout", "class/a", "-o", "{tmp}/co"], ["export", "class/b", "-o", "{tmp}/ex"],
    ["commit", "{tmp}/tv.safetensors", "-m", "tv", "-b", "tv/a"], ["export", "tv/a", "-o", "{tmp}/tv-out"],
    ["diff", "class/a", "class/b"], ["merge", "class/a", "class/b", "--method", "ties", "--dry-run"],
    ["merge", "class/a", "class/b", "--method", "concat", "--dry-run"], ["remote", "add", "origin", "{tmp}/bare"], ["push", "origin", "class/a"],
    ["fetch", "origin"], ["kernels", "build"], ["merge", "class/a", "class/b", "--method", "mean_ba", "--into", "merged"],
]


def test_adapter_commands_load_neither_torch_nor_transformers(tmp_path, vit):
    """Issue 20, part 5: the commands that store, move, show, compare and plan merges of adapters (and,
    since issue 24, merge them and build the C kernels) import no torch,
    transformers, peft or scipy (nor pydantic, which typer 0.29 loads on every command: 60-80 ms of a
    0.3 s budget). One process runs them in turn; the first command that loads one is named."""
    from dithub import Repo

    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", vit.base_dir)
    repo.commit(vit.adapter_dir, "a", branch="class/a", base="vit")
    repo.commit(vit.adapter2_dir, "b", branch="class/b", base="vit")
    from safetensors.numpy import save_file
    import numpy as np

    save_file({"w": np.ones((3, 4), np.float32)}, str(tmp_path / "tv.safetensors"))
    commands = [[arg.replace("{tmp}", str(tmp_path)) for arg in cmd] for cmd in READ_AND_WRITE_COMMANDS]
    code = ("import json, sys; from dithub.cli import main\n"
            "for cmd in json.loads(sys.argv[2]):\n"
            "    rc = main(['-C', sys.argv[1], *cmd])\n"
            "    heavy = [m for m in ('torch', 'transformers', 'peft', 'scipy', 'pydantic', 'ray') if m in sys.modules]\n"
            "    if rc or heavy:\n"
            "        print('FAILED', ' '.join(cmd), rc, heavy); break\n")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "repo"), json.dumps(commands)],
                         capture_output=True, text=True, check=True).stdout
    assert "FAILED" not in out, out[out.index("FAILED"):]
    assert (tmp_path / "co" / "adapter_model.safetensors").is_file() and (tmp_path / "ex").exists()
    assert (tmp_path / "tv-out" / "task_vector.safetensors").read_bytes() == (tmp_path / "tv.safetensors").read_bytes()
