"""Conversions between stored tensors (raw bytes) and torch tensors."""
from __future__ import annotations

import sys

import torch

from ..errors import BadInput
from ..store import TensorData

if sys.byteorder != "little":  # pragma: no cover - every supported platform is little-endian
    raise ImportError("dithub stores little-endian tensors and needs a little-endian host")

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8,
    "I16": torch.int16, "I32": torch.int32, "I64": torch.int64,
    "U16": torch.uint16, "U32": torch.uint32, "U64": torch.uint64,
    "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}


def to_torch(t: TensorData) -> torch.Tensor:
    """A torch view of stored bytes (zero-copy when the buffer is writable)."""
    dtype = TORCH_DTYPES[t.dtype]
    if len(t.data) == 0:
        return torch.empty(t.shape, dtype=dtype)
    data = t.data if not t.data.readonly else bytearray(t.data)
    return torch.frombuffer(data, dtype=dtype).reshape(t.shape)


def from_torch(tensor: torch.Tensor) -> TensorData:
    """Raw bytes of a tensor (moved to CPU, made contiguous; no copy otherwise)."""
    try:
        name = DTYPE_NAMES[tensor.dtype]
    except KeyError:
        raise BadInput(f"tensor dtype {tensor.dtype} cannot be stored") from None
    t = tensor.detach().to("cpu").contiguous()
    shape = tuple(t.shape)
    if t.numel() == 0:
        return TensorData(name, shape, memoryview(b""))
    raw = t.reshape(-1).view(torch.uint8).numpy()
    return TensorData(name, shape, memoryview(raw).cast("B"))  # type: ignore[arg-type]  # numpy arrays are buffers
