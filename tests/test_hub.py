"""Models and adapters named on the Hugging Face Hub (issue 20, part 3): ``hf://org/name[@revision]``
resolved through huggingface_hub's cache, offline, from a cache laid out as the library documents it."""
from __future__ import annotations

import json
import shutil
import socket
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from conftest import lora_adapter, tiny_vit
from dithub import Repo
from dithub.errors import BadInput

SHA = "0123456789abcdef0123456789abcdef01234567"


def put_in_cache(cache: Path, repo_id: str, folder: Path, sha: str = SHA, ref: str = "main") -> Path:
    """A snapshot in huggingface_hub's cache layout: models--org--name/{refs/<ref>, snapshots/<sha>/…}."""
    root = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, root / "snapshots" / sha)
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(sha)
    return root / "snapshots" / sha


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty cache the library reads, offline; any attempt to open a connection fails the test."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_network(*args, **kwargs):
        raise AssertionError("the network was touched")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return cache


def test_bases_and_adapters_come_from_the_cache_and_record_their_revision(offline_cache, tmp_path, cli):
    tiny_vit().save_pretrained(tmp_path / "vit")
    lora_adapter(tiny_vit(), tmp_path / "lora", seed=1)
    put_in_cache(offline_cache, "acme/tiny-vit", tmp_path / "vit")
    put_in_cache(offline_cache, "acme/dog-lora", tmp_path / "lora", sha="f" * 40)
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", "hf://acme/tiny-vit")
    res = repo.commit(f"hf://acme/dog-lora@{'f' * 40}", "dog", branch="class/dog", base="vit")
    assert repo.show("vit").commit.op.params == {"hub": "acme/tiny-vit", "revision": SHA}
    assert repo.commit_object(res.id).op.params == {"hub": "acme/dog-lora", "revision": "f" * 40}
    local = Repo.init(tmp_path / "local")
    local.base_add("vit", tmp_path / "vit")
    assert repo.tree_of("vit").tensors == local.tree_of("vit").tensors  # the same files, the same objects
    shown = cli(["-C", str(tmp_path / "repo"), "show", "class/dog"])
    assert shown.code == 0 and f"hf://acme/dog-lora@{'f' * 40}" in shown.out
    logged = cli(["-C", str(tmp_path / "repo"), "log", "class/dog"])
    assert "hf://acme/dog-lora@ffffffffffff" in logged.out
    card = cli(["-C", str(tmp_path / "repo"), "checkout", "class/dog", "-o", str(tmp_path / "out"), "--card"])
    assert card.code == 0 and ModelCard.load(tmp_path / "out" / "README.md").data.base_model == "acme/tiny-vit"  # the hub id
    for into, out in (("hf://acme/tiny-vit", "from-hub"), (None, "recorded")):  # --merge-into a hub id: the same weights
        args = ["--merge-into", into] if into else ["--merged"]
        assert cli(["-C", str(tmp_path / "repo"), "export", "class/dog", *args, "-o", str(tmp_path / out)]).code == 0
    assert (tmp_path / "from-hub" / "model.safetensors").read_bytes() == (tmp_path / "recorded" / "model.safetensors").read_bytes()
    assert ModelCard.load(tmp_path / "from-hub" / "README.md").data.base_model == "acme/tiny-vit"
    tiny_vit(seed=1).save_pretrained(tmp_path / "vit2")
    put_in_cache(offline_cache, "acme/tiny-vit", tmp_path / "vit2", sha="e" * 40, ref="v2")  # a new release
    repo.base_add("vit2", "hf://acme/tiny-vit@v2")
    repo.rebase("vit2", "class/dog", "naive")
    config = json.loads((repo.export("class/dog", tmp_path / "rebased") / "adapter_config.json").read_text())
    assert (config["base_model_name_or_path"], config["revision"]) == ("acme/tiny-vit", "e" * 40)  # what a server checks


def test_a_path_wins_and_an_unmarked_name_is_never_looked_up(offline_cache, tmp_path, monkeypatch):
    tiny_vit().save_pretrained(tmp_path / "vit")
    put_in_cache(offline_cache, "acme/tiny-vit", tmp_path / "vit")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hf:" / "acme").mkdir(parents=True)
    shutil.copytree(tmp_path / "vit", tmp_path / "hf:" / "acme" / "tiny-vit")  # a local folder the text also names
    repo = Repo.init(tmp_path / "repo")
    repo.base_add("vit", "hf://acme/tiny-vit")  # also an existing path (hf:/acme/tiny-vit): the path wins, nothing recorded
    assert repo.show("vit").commit.op.params == {}
    with pytest.raises(BadInput, match="no config.json|no such file"):
        repo.base_add("other", "acme/tiny-vit")  # unmarked: a path that does not exist, never a hub lookup
    with pytest.raises(BadInput, match="hf://acme/missing is not in the Hugging Face cache .HF_HUB_OFFLINE is set"):
        repo.base_add("missing", "hf://acme/missing")
    with pytest.raises(BadInput, match="is not a hub reference"):
        repo.base_add("bad", "hf://../etc")
    assert sorted(repo.bases()) == ["vit"]
