"""Stored tensors as numpy float64 arrays, for commands that measure but do not merge (``diff``):
numpy loads in tens of milliseconds where torch takes one to two seconds."""
from __future__ import annotations

import numpy as np

from ..errors import BadInput
from ..store import TensorData

_NUMPY = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "I16": np.int16, "U16": np.uint16, "F16": np.float16,
          "I32": np.int32, "U32": np.uint32, "F32": np.float32, "I64": np.int64, "U64": np.uint64, "F64": np.float64}


def _fp8_table(exponent_bits: int, bias: int, finite_only: bool) -> np.ndarray:
    """The value of each of the 256 bit patterns of an 8-bit float (OCP FP8: E4M3FN has no infinities
    and one NaN pattern per sign; E5M2 follows IEEE 754)."""
    mantissa_bits = 7 - exponent_bits
    bits = np.arange(256)
    sign = np.where(bits & 0x80, -1.0, 1.0)
    exp = (bits >> mantissa_bits) & ((1 << exponent_bits) - 1)
    man = (bits & ((1 << mantissa_bits) - 1)) / (1 << mantissa_bits)
    values = sign * np.where(exp == 0, man * 2.0 ** (1 - bias), (1 + man) * 2.0 ** (exp - bias))
    if finite_only:
        values[(bits & 0x7F) == 0x7F] = np.nan
    else:
        top = exp == (1 << exponent_bits) - 1
        values[top] = np.where(man[top] == 0, sign[top] * np.inf, np.nan)
    return values


_FP8 = {"F8_E4M3": _fp8_table(4, 7, True), "F8_E5M2": _fp8_table(5, 15, False)}


FLOATS = ("F32", "F16", "BF16")
"""The dtypes ``to_float32`` reads exactly and ``encode_float32`` writes."""


def to_float32(t: TensorData) -> np.ndarray:
    """A float32, float16 or bfloat16 tensor's values as flat float32, exactly (float32 itself
    without a copy: read-only)."""
    if t.dtype == "F32":
        return np.frombuffer(t.data, dtype=np.float32)
    if t.dtype == "BF16":  # the upper half of a float32
        return (np.frombuffer(t.data, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    if t.dtype == "F16":
        return np.frombuffer(t.data, dtype=np.float16).astype(np.float32)
    raise BadInput(f"tensor dtype {t.dtype} is not one of {', '.join(FLOATS)}")


def encode_float32(values: np.ndarray, dtype: str) -> memoryview:
    """Flat, contiguous float32 ``values`` as ``dtype``'s bytes, rounded as torch rounds (float32:
    the array's own memory, not a copy; bfloat16 to nearest even, and a tensor holding NaN converted
    by torch itself: the NaN's pattern is its CPU kernels' choice, 0xFFFF with AVX2)."""
    if dtype == "F32":
        return values.data
    if dtype == "F16":
        return values.astype(np.float16).data
    if dtype != "BF16":
        raise BadInput(f"tensor dtype {dtype} is not one of {', '.join(FLOATS)}")
    if np.isnan(values).any():
        import torch  # only for a tensor holding NaN

        return torch.from_numpy(values).to(torch.bfloat16).view(torch.int16).numpy().data
    bits = values.view(np.uint32)
    return ((bits.astype(np.uint64) + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16).data


def to_float64(t: TensorData) -> np.ndarray:
    """The tensor's values as float64, shaped (exact: every stored dtype but 64-bit integers beyond 2^53)."""
    if t.dtype == "BF16":
        return to_float32(t).astype(np.float64).reshape(t.shape)
    if t.dtype in _FP8:
        return _FP8[t.dtype][np.frombuffer(t.data, dtype=np.uint8)].reshape(t.shape)
    if t.dtype not in _NUMPY:
        raise BadInput(f"tensor dtype {t.dtype} cannot be read")
    return np.frombuffer(t.data, dtype=_NUMPY[t.dtype]).astype(np.float64).reshape(t.shape)
