"""safetensors reading/writing and LoRA structure checks, against the safetensors library."""
from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from dithub.errors import BadInput
from dithub.formats import check_lora, from_torch, read_safetensors, scaling, to_torch, write_safetensors


def _rewrite_header(path, mutate):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    mutate(header)
    head = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(head)) + head + raw[8 + n :])


@pytest.fixture
def st_file(tmp_path):
    path = tmp_path / "tv.safetensors"
    save_file({"a": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b": torch.ones(5, dtype=torch.bfloat16)},
              str(path), metadata={"task": "dog"})
    return path


def test_reader_matches_safetensors_library(st_file):
    f = read_safetensors(st_file)
    ref = load_file(str(st_file))
    assert f.metadata == {"task": "dog"}
    for name, t in f.tensors.items():
        assert torch.equal(to_torch(t), ref[name])


def test_writer_output_loads_with_safetensors_library(tmp_path):
    tensors = {"x.weight": torch.randn(3, 2), "y": torch.randint(0, 9, (4,)), "z": torch.randn(2).half(),
               "s": torch.tensor(1.5)}
    out = tmp_path / "w.safetensors"
    write_safetensors(out, {k: from_torch(v) for k, v in tensors.items()}, metadata={"format": "pt"})
    back = load_file(str(out))
    assert set(back) == set(tensors) and all(torch.equal(back[k], v) for k, v in tensors.items())
    (n,) = struct.unpack("<Q", out.read_bytes()[:8])
    assert n % 8 == 0


def test_truncated_file(st_file):
    st_file.write_bytes(st_file.read_bytes()[:-7])
    with pytest.raises(BadInput, match="truncated"):
        read_safetensors(st_file)


def test_header_lying_about_sizes(st_file):
    _rewrite_header(st_file, lambda h: h["a"].update(data_offsets=[0, 40]))
    with pytest.raises(BadInput, match="'a'.*40 bytes.*needs 48"):
        read_safetensors(st_file)


def test_header_longer_than_file(st_file):
    raw = st_file.read_bytes()
    st_file.write_bytes(struct.pack("<Q", 10**6) + raw[8:])
    with pytest.raises(BadInput, match="header claims"):
        read_safetensors(st_file)


def test_overlapping_tensors(st_file):
    def overlap(h):
        h["b"]["data_offsets"] = [40, 50]
    _rewrite_header(st_file, overlap)
    with pytest.raises(BadInput, match="overlap"):
        read_safetensors(st_file)


def test_not_json(tmp_path):
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", 4) + b"{{{{")
    with pytest.raises(BadInput, match="not valid JSON"):
        read_safetensors(p)


SHAPES = {
    "base_model.model.enc.0.q.lora_A.weight": (4, 16), "base_model.model.enc.0.q.lora_B.weight": (8, 4),
    "base_model.model.enc.0.v.lora_A.weight": (4, 16), "base_model.model.enc.0.v.lora_B.weight": (8, 4),
}


def test_check_lora_accepts_matching_config():
    mods = check_lora({"r": 4, "lora_alpha": 8, "target_modules": ["q", "v"]}, SHAPES, "x")
    assert set(mods) == {"enc.0.q", "enc.0.v"}


@pytest.mark.parametrize("config, match", [
    ({"r": 4, "target_modules": ["q"]}, "'enc.0.v'.*does not name"),
    ({"r": 4, "target_modules": ["q", "v", "k"]}, "'k' has no lora tensors"),
    ({"r": 8, "target_modules": ["q", "v"]}, "rank 4 but the config says r=8"),
    ({"r": 4, "target_modules": r".*\.q"}, "does not name"),
])
def test_check_lora_rejects_mismatches(config, match):
    with pytest.raises(BadInput, match=match):
        check_lora(config, SHAPES, "x")


def test_unpaired_factor():
    shapes = dict(SHAPES)
    del shapes["base_model.model.enc.0.v.lora_B.weight"]
    with pytest.raises(BadInput, match="no matching lora_B"):
        check_lora({"r": 4, "target_modules": ["q", "v"]}, shapes, "x")


def test_scaling_rules_follow_peft():
    cfg = {"r": 4, "lora_alpha": 8, "rank_pattern": {"v": 2}, "alpha_pattern": {"v": 6}}
    assert scaling(cfg, "enc.0.q") == 2.0
    assert scaling(cfg, "enc.0.v") == 3.0
    assert scaling({**cfg, "use_rslora": True}, "enc.0.q") == 4.0


def test_numpy_reads_every_stored_dtype_as_torch_does():
    """``diff`` reads tensors through numpy (no torch): every dtype, FP8's 256 bit patterns included,
    must give torch's values."""
    import numpy as np

    from dithub.formats.numpy_io import to_float64
    from dithub.formats.torch_io import TORCH_DTYPES, from_torch

    for name, dtype in TORCH_DTYPES.items():
        if dtype.is_floating_point and dtype.itemsize == 1:
            x = torch.arange(256, dtype=torch.uint8).view(dtype)
        elif dtype == torch.bool:
            x = torch.tensor([[True, False], [False, True]])
        else:
            x = (torch.randn(3, 5) * 50).to(dtype)
        got = to_float64(from_torch(x))
        assert got.shape == tuple(x.shape) and np.array_equal(got, x.double().numpy(), equal_nan=True), name
