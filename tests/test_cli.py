"""The command line: bad input is one line and a distinct exit code, nothing written; --json output."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys

import pytest

from dithub import Repo
from dithub.errors import BadInput, RefNotFound


def _snapshot(repo_dir):
    return sorted(str(p.relative_to(repo_dir)) for p in (repo_dir / ".dithub").rglob("*") if p.is_file())


@pytest.fixture
def work(tmp_path, vit, cli):
    assert cli("init").code == 0
    bad = tmp_path / "inputs"
    bad.mkdir()
    (bad / "empty_dir").mkdir()
    truncated = bad / "truncated"
    shutil.copytree(vit.adapter_dir, truncated)
    raw = (truncated / "adapter_model.safetensors").read_bytes()
    (truncated / "adapter_model.safetensors").write_bytes(raw[:-100])
    lying = bad / "lying.safetensors"
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    key = next(k for k in header if k != "__metadata__")
    header[key]["data_offsets"][1] += 4
    head = json.dumps(header).encode()
    lying.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n :])
    mismatch = bad / "mismatch"
    shutil.copytree(vit.adapter_dir, mismatch)
    cfg = json.loads((mismatch / "adapter_config.json").read_text())
    cfg["target_modules"] = ["q_proj"]
    (mismatch / "adapter_config.json").write_text(json.dumps(cfg))
    return bad


BAD = [
    ("commit {bad}/nope -m x", BadInput, "no such file"),
    ("commit {bad}/empty_dir -m x", BadInput, "no adapter_config.json"),
    ("commit {bad}/truncated -m x", BadInput, "truncated"),
    ("commit {bad}/lying.safetensors -m x", BadInput, "header says"),
    ("commit {bad}/mismatch -m x", BadInput, "target_modules"),
    ("commit {adapter} -m x --base vit-v9", RefNotFound, "unknown base 'vit-v9'"),
    ("commit {adapter} -m x -b 'class/a b'", BadInput, "invalid branch name"),
    ("commit {adapter} -m x -b class/../dog", BadInput, "'..'"),
    ("branch 'bad name'", BadInput, "invalid branch name"),
    ("show no-such-ref", RefNotFound, "unknown revision 'no-such-ref'"),
    ("checkout no-such-ref", RefNotFound, "unknown revision"),
    ("diff main no-such-ref", RefNotFound, "unknown revision"),
]


@pytest.mark.parametrize("args, error, text", BAD)
def test_bad_input_is_one_line_and_writes_nothing(work, vit, cli, tmp_path, args, error, text):
    before = _snapshot(tmp_path)
    res = cli(args.format(bad=work, adapter=vit.adapter_dir))
    assert res.code == error.exit_code != 0
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and text in lines[0], res.err
    assert "Traceback" not in res.err + res.out
    assert _snapshot(tmp_path) == before


def test_exit_codes_are_distinct():
    from dithub import errors

    codes = [c.exit_code for c in vars(errors).values() if isinstance(c, type) and issubclass(c, errors.DithubError)]
    assert len(codes) == len(set(codes)) and 2 not in codes  # 2 is click's usage error


def test_not_a_repository(cli, tmp_path):
    res = cli("log", cwd=tmp_path / "nowhere")
    assert res.code == 4 and "dithub init" in res.err


def test_usage_error_is_not_a_traceback(cli):
    res = cli("commit")
    assert res.code == 2 and "Traceback" not in res.err


def test_workflow_and_json(work, vit, cli, tmp_path):
    assert cli(f"base add vit-v1 {vit.base_dir}").code == 0
    r1 = cli(f"commit {vit.adapter_dir} -m dog -b class/dog --base vit-v1 --json")
    assert r1.code == 0
    dog = json.loads(r1.out)
    assert dog["branch"] == "class/dog" and dog["new_objects"] > 0
    assert cli(f"commit {vit.adapter2_dir} -m cat -b class/cat").code == 0
    heads = json.loads(cli("branch --json").out)
    assert set(heads["branches"]) == {"class/dog", "class/cat"}
    log = json.loads(cli("log class/dog --json").out)
    assert [e["id"] for e in log] == [dog["id"]] and log[0]["refs"] == ["class/dog"]
    show = json.loads(cli("show class/dog --json").out)
    assert show["kind"] == "lora" and show["base_name"] == "vit-v1" and show["config"]["r"] == 4
    diff = json.loads(cli("diff class/dog class/cat --json").out)
    assert diff["kind_a"] == "lora" and len(diff["modules"]) == 4
    assert all(t["status"] in {"changed", "same"} for t in diff["tensors"])
    assert cli(f"checkout class/cat -o {tmp_path}/cat").code == 0
    assert (tmp_path / "cat" / "adapter_model.safetensors").is_file()
    assert cli("tag v1 class/dog").code == 0 and json.loads(cli("tag --json").out) == {"v1": dog["id"]}
    assert cli("checkout class/dog").code == 0
    st = json.loads(cli("status --json").out)
    assert st["branch"] == "class/dog" and st["base"] == "vit-v1"
    graph = cli("log --all --graph")
    assert graph.code == 0 and graph.out.count("*") == 3  # two adapters and the base
    assert json.loads(cli("fsck --json").out)["ok"] is True
    assert cli(f"export class/dog --merged -o {tmp_path}/full").code == 0
    assert (tmp_path / "full" / "config.json").is_file()


def test_python_dash_m_and_console_script(tmp_path):
    res = subprocess.run([sys.executable, "-m", "dithub", "-C", str(tmp_path), "init"], capture_output=True, text=True)
    assert res.returncode == 0 and (tmp_path / ".dithub" / "HEAD").is_file()
    res = subprocess.run([sys.executable, "-m", "dithub", "-C", str(tmp_path), "show", "x"], capture_output=True, text=True)
    assert res.returncode == RefNotFound.exit_code and res.stderr.count("\n") == 1
    assert Repo.open(tmp_path).branches() == {}


def test_every_command_help_renders(cli):
    """--help of every command and subcommand prints (rich markup in help texts is escaped)."""
    from dithub.cli.app import app

    commands = [[c.name or c.callback.__name__] for c in app.registered_commands]
    for group in app.registered_groups:
        commands += [[group.name, c.name or c.callback.__name__] for c in group.typer_instance.registered_commands]
    assert ["verify"] in commands and ["hooks", "install"] in commands
    for words in commands:
        res = cli([*words, "--help"])
        assert res.code == 0 and "Usage" in res.out, (words, res.err)


def test_docs_cli_lists_every_command_and_option():
    """docs/cli.md ends with the reference generated from the commands (python -m dithub.cli.reference)."""
    from pathlib import Path

    from dithub.cli.reference import MARK, reference

    text = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    assert text[text.index(MARK):] == reference(), "regenerate: python -m dithub.cli.reference (replace the section in docs/cli.md)"
