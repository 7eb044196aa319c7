"""Shared fixtures: tiny real transformers, peft adapters made from them, a CLI runner."""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available():  # Triton's kernels then run in its interpreter, on CPU tensors (set before import)
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DITHUB_AUTHOR", "tester")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without a CUDA device, tests marked ``gpu`` are deselected (the header says so)."""
    if torch.cuda.is_available():
        return
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if gpu:
        config.hook.pytest_deselected(items=gpu)
        items[:] = [item for item in items if not item.get_closest_marker("gpu")]
        config._dithub_gpu_deselected = len(gpu)  # type: ignore[attr-defined]


def pytest_report_header(config: pytest.Config) -> str:
    if torch.cuda.is_available():
        return f"gpu: {torch.cuda.get_device_name()} (tests marked gpu run)"
    return "gpu: no CUDA device: tests marked gpu are deselected (run `pytest -m gpu` on a GPU machine)"


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    count = getattr(config, "_dithub_gpu_deselected", 0)
    if count:
        terminalreporter.write_line(f"{count} gpu tests deselected: no CUDA device on this machine", yellow=True)


def tiny_vit(seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=10)
    return ViTForImageClassification(cfg).eval()


def commit_task_vectors(repo, root: Path, make, n: int = 3) -> list[dict]:
    """Commit ``make(path, i)`` (which saves and returns a task vector) on branch task/i, i < n."""
    tvs = []
    for i in range(n):
        path = root / f"t{i}.safetensors"
        tvs.append(make(path, i))
        repo.commit(path, f"task {i}", branch=f"task/{i}")
    return tvs


def lora_adapter(model, out: Path, seed: int, targets=("q_proj", "v_proj"), r: int = 4, alpha: int = 8, **kw):
    """A peft LoRA with random (non-zero) A and B, saved to ``out``."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    cfg = LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **kw)
    peft_model = get_peft_model(model, cfg)
    peft_model.save_pretrained(out)
    return peft_model


@dataclass
class VitFixture:
    base_dir: Path
    adapter_dir: Path
    adapter2_dir: Path
    pixels: torch.Tensor


@pytest.fixture(scope="session")
def vit(tmp_path_factory) -> VitFixture:
    root = tmp_path_factory.mktemp("vit")
    tiny_vit().save_pretrained(root / "base")
    lora_adapter(tiny_vit(), root / "adapter", seed=1, modules_to_save=["classifier"])
    lora_adapter(tiny_vit(), root / "adapter2", seed=2, modules_to_save=["classifier"])
    torch.manual_seed(3)
    return VitFixture(root / "base", root / "adapter", root / "adapter2", torch.randn(4, 1, 8, 8))


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto) on 127.0.0.1 with bucket ``adapters``: its fsspec options."""
    pytest.importorskip("s3fs", reason="install the test extra: pip install -e '.[test]'")
    from helpers.s3 import s3_server as start

    server, options = start("adapters")
    yield options
    server.stop()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys, tmp_path):
    """Run ``dithub ARGS`` in-process (in ``tmp_path`` unless -C is given)."""
    from dithub.cli import main

    def run(args: str | list[str], cwd: Path | None = None) -> CliResult:
        argv = shlex.split(args) if isinstance(args, str) else list(args)
        capsys.readouterr()
        code = main(["-C", str(cwd or tmp_path), *argv])
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    """Two peft LoRA adapters of ``tiny_vit`` with different ranks and scales (a: r 4, α 8; b: r 2, α 6)."""
    root = tmp_path_factory.mktemp("loras")
    lora_adapter(tiny_vit(), root / "a", seed=11, r=4, alpha=8)
    lora_adapter(tiny_vit(), root / "b", seed=12, r=2, alpha=6)  # another rank and scale
    return root


def stored_f32(repo, rev: str, name: str, shape) -> torch.Tensor:
    """Tensor ``name`` of ``rev``'s tree, read as float32 of ``shape``."""
    tree = repo.tree_of(rev)
    return torch.frombuffer(bytearray(repo.store.read_tensor(tree.tensors[name].id).data), dtype=torch.float32).reshape(shape)
