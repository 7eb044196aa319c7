"""Inputs of different float dtypes merge: promoted for the computation, stored in the promoted
dtype unless ``--dtype`` chooses (issue 18, point 8)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from conftest import lora_adapter, tiny_vit
from dithub import Repo
from dithub.errors import IncompatibleAdapters
from dithub.ops.merge.run import replay_merge


def _read(repo, rev, name):
    entry = repo.tree_of(rev).tensors[name]
    dtype = {"F32": torch.float32, "BF16": torch.bfloat16}[entry.dtype]
    return torch.frombuffer(bytearray(repo.store.read_tensor(entry.id).data), dtype=dtype).reshape(entry.shape), entry.dtype


def test_a_bf16_and_an_fp32_task_vector_merge_in_fp32(tmp_path):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    save_file({"w": a.to(torch.bfloat16)}, str(tmp_path / "a.safetensors"))
    save_file({"w": b}, str(tmp_path / "b.safetensors"))
    repo = Repo.init(tmp_path / "r")
    repo.commit(tmp_path / "a.safetensors", "a", branch="a")
    repo.commit(tmp_path / "b.safetensors", "b", branch="b")
    repo.merge(["a", "b"], "task_arithmetic", {"alpha": "0.5"}, into="m")
    got, dtype = _read(repo, "m", "w")
    assert dtype == "F32"
    torch.testing.assert_close(got, 0.5 * (a.to(torch.bfloat16).float() + b))
    assert replay_merge(repo, repo.commit_object("m")) == repo.commit_object("m").tree
    repo.merge(["a", "b"], "task_arithmetic", {"alpha": "0.5", "dtype": "BF16"}, into="m16")
    got16, dtype16 = _read(repo, "m16", "w")
    assert dtype16 == "BF16" and torch.equal(got16, got.to(torch.bfloat16))


def test_a_bf16_and_an_fp32_lora_concatenate(tmp_path):
    lora_adapter(tiny_vit(), tmp_path / "a", seed=1, r=4, alpha=8)
    lora_adapter(tiny_vit(), tmp_path / "b", seed=2, r=4, alpha=8)
    from safetensors.torch import load_file

    path = tmp_path / "a" / "adapter_model.safetensors"
    save_file({k: v.to(torch.bfloat16) for k, v in load_file(str(path)).items()}, str(path))
    repo = Repo.init(tmp_path / "r")
    repo.commit(tmp_path / "a", "a", branch="a")
    repo.commit(tmp_path / "b", "b", branch="b")
    repo.merge(["a", "b"], "concat", into="m", params={"dtype": "F32"})
    tree = repo.tree_of("m")
    key = next(k for k in tree.tensors if k.endswith("lora_A.weight"))
    got, dtype = _read(repo, "m", key)
    a_in, _ = _read(repo, "a", key)
    # concat stores scale 1: the bf16 factor times s = alpha / r = 2, promoted exactly
    assert dtype == "F32" and torch.equal(got[:4], 2 * a_in.float())


def test_a_float_and_an_integer_tensor_do_not_merge(tmp_path):
    save_file({"w": torch.ones(3, 2)}, str(tmp_path / "a.safetensors"))
    save_file({"w": torch.ones(3, 2, dtype=torch.int32)}, str(tmp_path / "b.safetensors"))
    repo = Repo.init(tmp_path / "r")
    repo.commit(tmp_path / "a.safetensors", "a", branch="a")
    repo.commit(tmp_path / "b.safetensors", "b", branch="b")
    with pytest.raises(IncompatibleAdapters, match=r"'w' is F32 \[3, 2\] in a but I32 \[3, 2\] in b"):
        repo.merge(["a", "b"], "task_arithmetic", into="m")


def test_the_planned_dtype_is_torchs_promotion():
    """Plans are made without torch (``merge --dry-run`` loads none): the dtype inputs of several float
    dtypes merge in must still be the one torch promotes them to, which the merge computes in."""
    import functools
    import itertools

    from dithub.formats.torch_io import DTYPE_NAMES, TORCH_DTYPES
    from dithub.ops.delta_specs import promoted

    floats = ["F64", "F32", "F16", "BF16"]
    for n in (1, 2, 3):
        for combo in itertools.product(floats, repeat=n):
            expected = DTYPE_NAMES[functools.reduce(torch.promote_types, [TORCH_DTYPES[d] for d in combo])]
            assert promoted(list(combo)) == expected, combo
