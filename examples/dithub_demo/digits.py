"""scikit-learn's bundled 8x8 digits, in eight domains that each need their own adapter.

In the spirit of the 8-task CLIP benchmark of the merging papers: the same ten classes, seen
through eight input distributions. Fixed train/test split (seed 0, 1,200 / 597 images), pixels
in [0, 1], shape (N, 1, 8, 8); the noise of ``noisy`` is drawn once from a fixed seed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from dithub.errors import BadInput

N_TRAIN = 1200


@dataclass(frozen=True)
class Split:
    """Images (N, 1, 8, 8) in [0, 1] and integer labels, for training and for testing."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def _blur(x: Tensor) -> Tensor:
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16
    return torch.nn.functional.conv2d(x, kernel.view(1, 1, 3, 3), padding=1)


def _noisy(x: Tensor) -> Tensor:
    g = torch.Generator().manual_seed(1234 + x.shape[0])
    return (x + 0.35 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _shift_scale(x: Tensor) -> Tensor:
    """Shrink to 6x6 and move to the bottom-right corner."""
    small = torch.nn.functional.interpolate(x, size=(6, 6), mode="bilinear", align_corners=False)
    return torch.nn.functional.pad(small, (2, 0, 2, 0))


DOMAINS: dict[str, Callable[[Tensor], Tensor]] = {
    "original": lambda x: x,
    "rot90": lambda x: torch.rot90(x, 1, (2, 3)),
    "rot180": lambda x: torch.rot90(x, 2, (2, 3)),
    "flip": lambda x: torch.flip(x, (3,)),
    "invert": lambda x: 1.0 - x,
    "noisy": _noisy,
    "blur": _blur,
    "shift": _shift_scale,
}
"""The eight domains, by name, in benchmark order."""


@lru_cache(maxsize=1)
def _digits() -> tuple[Tensor, Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise BadInput("the digits demo needs scikit-learn", "pip install 'dithub[demo]' (or scikit-learn)") from None
    data = load_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    return x[order], y[order]


def domain_split(domain: str) -> Split:
    """The fixed train/test split of one domain."""
    if domain not in DOMAINS:
        raise BadInput(f"unknown digits domain {domain!r}", f"choose one of {', '.join(DOMAINS)}")
    x, y = _digits()
    f = DOMAINS[domain]
    return Split(f(x[:N_TRAIN]).contiguous(), y[:N_TRAIN], f(x[N_TRAIN:]).contiguous(), y[N_TRAIN:])


CLASS_DOMAIN = "noisy"
"""The class-incremental tasks see the noisy digits: the base is middling there (58 %), so each
class pair's adapter has something to learn while the shared 10-way head stays useful."""
CLASS_TASKS = ("class/0-1", "class/2-3", "class/4-5", "class/6-7", "class/8-9")
"""The class-incremental split: one task (and one branch) per pair of classes, in order."""


def class_split(classes: tuple[int, ...], domain: str = CLASS_DOMAIN) -> Split:
    """Images of only ``classes`` in ``domain`` (a class-incremental task; labels stay 10-way)."""
    full = domain_split(domain)
    keep_train = torch.isin(full.y_train, torch.tensor(classes))
    keep_test = torch.isin(full.y_test, torch.tensor(classes))
    return Split(full.x_train[keep_train], full.y_train[keep_train], full.x_test[keep_test], full.y_test[keep_test])


def task_split(task: str) -> Split:
    """The split of a task: a domain name (``rot90``) or a class task (``class/0-1``)."""
    if task.startswith("class/"):
        try:
            classes = tuple(int(c) for c in task.removeprefix("class/").split("-"))
        except ValueError:
            classes = ()
        if not classes or not all(0 <= c <= 9 for c in classes):
            raise BadInput(f"bad class task {task!r}", "name it class/A-B… with digits 0-9, e.g. class/0-1")
        return class_split(classes)
    return domain_split(task)
