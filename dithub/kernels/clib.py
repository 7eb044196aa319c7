"""The CPU merge kernels of ``merge_kernels.c``: built once with the system C compiler, loaded with
ctypes, called on numpy arrays. Nothing here imports torch, so a merge that needs no more than these
loops (``ops.merge.elementwise``) does not pay its 1-2 s of loading; ``native`` calls the same
functions on torch tensors (their memory, shared).

torch.compile fused these passes before; its runtime (dynamo, inductor, sympy) is ~210 MB of resident
memory and 4-9 s of loading per process. The same loops in C are a 40 KB library, built by ``dithub
kernels build`` (``make`` runs it at install) or in about a second on first use, and cached under
``$DITHUB_CACHE`` (default ``~/.cache/dithub``), keyed by the source, the compiler and the flags, and
checked (owner, permissions, its recorded hash) before every load; the warm path runs no compiler.
Built without FMA contraction, they give the plain torch expressions' bits (tested).
"""
from __future__ import annotations

import ctypes
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xxhash

from ..errors import BadInput

_SOURCE = Path(__file__).with_name("merge_kernels.c")
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
_OPENMP = "-fopenmp"
"""Without OpenMP (Apple's clang) the kernels build single-threaded."""

_log = logging.getLogger("dithub.kernels")
_state: dict[str, object] = {"threads": None}

KERNELS = ("fused", "plain")
"""``DITHUB_KERNELS``: fused kernels where they run (the default), or the plain torch functions everywhere."""


def enabled() -> bool:
    """Whether fused kernels may run (``DITHUB_KERNELS=plain`` turns them off: plain torch everywhere)."""
    value = os.environ.get("DITHUB_KERNELS", "fused").strip().lower()
    if value not in KERNELS:
        raise BadInput(f"DITHUB_KERNELS is {value!r}, not one of {', '.join(KERNELS)}", "unset it, or set it to plain")
    return value == "fused"


def _forked() -> None:
    _state["threads"] = 1  # GNU OpenMP's thread pool does not survive fork: a child runs one thread


os.register_at_fork(after_in_child=_forked)


def threads(requested: int | None = None) -> ctypes.c_int:
    """The OpenMP threads of a call: one in a forked child, else ``requested`` (torch's intra-op
    count, from ``native``), else ``OMP_NUM_THREADS`` or the CPUs this process may run on."""
    if _state["threads"]:
        return ctypes.c_int(int(_state["threads"]))  # type: ignore[call-overload]
    if requested:
        return ctypes.c_int(requested)
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return ctypes.c_int(int(env))
    return ctypes.c_int(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def _cache_dir() -> Path:
    return Path(os.environ.get("DITHUB_CACHE") or Path.home() / ".cache" / "dithub") / "kernels"


def _compiler() -> str | None:
    return os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")


def _digest(path: Path) -> str:
    return xxhash.xxh3_128_hexdigest(path.read_bytes())


def _trusted(target: Path) -> bool:
    """Whether the cached library may be loaded: a regular file owned by this user, writable by no
    one else (nor its folder), whose bytes hash to what the build recorded beside it. Anything else
    (a truncated copy, a file another user could have replaced) is built again."""
    seal = target.with_suffix(".xxh3")
    try:
        for path in (target, target.parent):
            st = path.lstat()
            if st.st_uid != os.getuid() or st.st_mode & 0o022:
                return False
        return target.is_file() and not target.is_symlink() and seal.read_text().strip() == _digest(target)
    except OSError:
        return False


def _compiler_identity(cc: str) -> str:
    """The compiler as the cache key knows it, without running it (the warm path invokes no
    compiler): its resolved file, size and modification time, which an upgrade changes."""
    path = Path(shutil.which(cc) or cc).resolve()
    st = path.stat()
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def build(force: bool = False) -> Path:
    """The library for this source, compiler and machine, built if needed (``dithub kernels build``;
    the first merge builds it otherwise). Keyed by the source, the compiler (its file, not a run of
    it), the flags and the host (``-march=native``), for caches shared between machines; built in a
    temp folder, sealed with its hash, then renamed into place. RuntimeError when it cannot be built."""
    cc = _compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc, gcc or $CC) on PATH")
    key = xxhash.xxh3_64_hexdigest(_SOURCE.read_bytes() + "\0".join([_compiler_identity(cc), *_FLAGS, platform.machine(),
                                                                      platform.node()]).encode())
    target = _cache_dir() / f"merge_kernels-{key}.so"
    if target.exists() and not force and _trusted(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder = target.parent.lstat()
    if folder.st_uid != os.getuid():
        raise RuntimeError(f"{target.parent} belongs to another user: the kernels are not built or loaded there (set DITHUB_CACHE)")
    if folder.st_mode & 0o022:  # ours, but others could write (a umask of 002): closed, and what it held is built again
        target.parent.chmod(0o700)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        for flags in ([*_FLAGS, _OPENMP], _FLAGS):
            proc = subprocess.run([cc, *flags, str(_SOURCE), "-o", str(built), "-lm"], capture_output=True, text=True, timeout=300)
            if proc.returncode == 0:
                break
        else:
            raise RuntimeError(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"{cc} failed")
        built.chmod(0o755)
        seal = Path(tmp) / "seal"
        seal.write_text(_digest(built) + "\n")
        os.replace(seal, target.with_suffix(".xxh3"))
        os.replace(built, target)
    if not _trusted(target):
        raise RuntimeError(f"the kernels built in {target.parent} do not check out: they are not loaded (set DITHUB_CACHE)")
    return target


def library() -> ctypes.CDLL | None:
    """The loaded kernels, or None (no compiler, or a failed build)."""
    if "lib" not in _state:
        try:
            _state["lib"] = ctypes.CDLL(str(build()))
        except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
            _state["lib"] = None
            _log.warning("dithub: native merge kernels unavailable (%s); using plain torch", exc)
    return _state["lib"]  # type: ignore[return-value]


def available() -> bool:
    return library() is not None


def _loaded() -> ctypes.CDLL:
    """The library, for callers that checked ``available()``."""
    lib = library()
    if lib is None:
        raise RuntimeError("the native merge kernels are not available")
    return lib


# Calls on numpy arrays: inputs are flat, C-contiguous float32 arrays of one length (draws: int16 or
# uint8 arrays of that length); results go to ``out`` (float32, that length), written in place.

Stats = np.ndarray
"""The sign election's counts, int64 [#sums > 0, #sums < 0, #zero sums with an agreeing entry]."""


def _pointers(arrays: Sequence[np.ndarray], ctype: type) -> ctypes.Array:
    for a in arrays:
        if not a.flags.c_contiguous:
            raise ValueError("the C kernels take contiguous arrays")
    return (ctypes.POINTER(ctype) * len(arrays))(*[a.ctypes.data_as(ctypes.POINTER(ctype)) for a in arrays])


def _floats(values: Sequence[float]) -> ctypes.Array:
    return (ctypes.c_float * len(values))(*[float(v) for v in values])


def _dest(out: np.ndarray | None, n: int) -> np.ndarray:
    return np.empty(n, dtype=np.float32) if out is None else out


def _call(name: str, xs: Sequence[np.ndarray], aux: Sequence[np.ndarray] | None, args: tuple, out: np.ndarray | None,
          electing: bool, nt: int | None) -> tuple[np.ndarray, Stats]:
    """``name``(xs, [aux,] N, n, *args, out, [stats,] nt): the merged entries and (electing) the counts."""
    n = xs[0].size
    dest = _dest(out, n)
    stats = np.zeros(3, dtype=np.int64)
    lead = [_pointers(xs, ctypes.c_float)]
    if aux is not None:
        lead.append(_pointers(aux, ctypes.c_int16 if aux[0].dtype == np.int16 else ctypes.c_uint8))
    tail = [stats.ctypes.data_as(ctypes.POINTER(ctypes.c_int64))] if electing else []
    getattr(_loaded(), name)(*lead, ctypes.c_int(len(xs)), ctypes.c_int64(n), *args,
                             dest.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), *tail, threads(nt))
    return dest, stats


def ties(xs: Sequence[np.ndarray], thresholds: Sequence[float], lam: float, zero_positive: bool, out: np.ndarray | None = None,
         nt: int | None = None) -> tuple[np.ndarray, Stats]:
    """TIES' trim at ``thresholds``, sign election and disjoint mean, times λ (``full_space._sign_mean``)."""
    return _call("ties", xs, None, (_floats(thresholds), ctypes.c_float(lam), ctypes.c_int(int(zero_positive))), out, True, nt)


def _dare_args(draws: Sequence[np.ndarray], limit: int, keep_prob: float, lam: float) -> tuple[str, tuple]:
    suffix, ctype = ("i16", ctypes.c_int16) if draws[0].dtype == np.int16 else ("u8", ctypes.c_uint8)
    return suffix, (ctype(limit), ctypes.c_float(keep_prob), ctypes.c_float(lam))


def dare_ta(xs: Sequence[np.ndarray], draws: Sequence[np.ndarray], limit: int, keep_prob: float, lam: float,
            out: np.ndarray | None = None, nt: int | None = None) -> np.ndarray:
    """Σ x·[draw ≤ limit] / keep_prob, times λ."""
    suffix, args = _dare_args(draws, limit, keep_prob, lam)
    return _call(f"dare_ta_{suffix}", xs, draws, args, out, False, nt)[0]


def dare_ties(xs: Sequence[np.ndarray], draws: Sequence[np.ndarray], limit: int, keep_prob: float, lam: float,
              zero_positive: bool, out: np.ndarray | None = None, nt: int | None = None) -> tuple[np.ndarray, Stats]:
    """DARE's kept and rescaled entries, combined by TIES' election and disjoint mean."""
    suffix, args = _dare_args(draws, limit, keep_prob, lam)
    return _call(f"dare_ties_{suffix}", xs, draws, (*args, ctypes.c_int(int(zero_positive))), out, True, nt)


def band(xs: Sequence[np.ndarray], lows: Sequence[float], highs: Sequence[float], alpha: float, out: np.ndarray | None = None,
         nt: int | None = None) -> np.ndarray:
    """α · Σ x·[low ≤ |x| < high] (Breadcrumbs' band)."""
    return _call("band", xs, None, (_floats(lows), _floats(highs), ctypes.c_float(alpha)), out, False, nt)[0]


def magmax(xs: Sequence[np.ndarray], alpha: float, later: bool, out: np.ndarray | None = None, nt: int | None = None) -> np.ndarray:
    """α · the entry of largest magnitude (ties: the later input's if ``later``)."""
    return _call("magmax", xs, None, (ctypes.c_float(alpha), ctypes.c_int(int(later))), out, False, nt)[0]


def kth_largest_abs_rows(rows: np.ndarray, k: int, nt: int | None = None) -> np.ndarray:
    """The k-th largest |x| of each row of a C-contiguous 2-D float32 array (float32 [rows])."""
    out = np.empty(rows.shape[0], dtype=np.float32)
    _loaded().kth_largest_abs_rows(rows.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), ctypes.c_int64(rows.shape[0]),
                                   ctypes.c_int64(rows.shape[1]), ctypes.c_int64(k),
                                   out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), threads(nt))
    return out


def count_at_least(x: np.ndarray, values: Sequence[float], counts: np.ndarray, nt: int | None = None) -> None:
    """Adds #(|x| ≥ values[i]) for the four values to ``counts`` (int64 [4])."""
    _loaded().count_at_least(x.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), ctypes.c_int64(x.size), _floats(values),
                             counts.ctypes.data_as(ctypes.POINTER(ctypes.c_int64)), threads(nt))


def philox_draws(seed: int, start: int, n: int, row: int, nt: int | None = None) -> np.ndarray:
    """DARE's 16-bit Philox draws (int16) of entries start..start+n−1 of input ``row`` under the
    64-bit key ``seed``: ``philox.dare_draws`` computed in C."""
    out = np.empty(n, dtype=np.int16)
    _loaded().philox_i16(ctypes.c_uint64(seed), ctypes.c_int64(start), ctypes.c_int64(n), ctypes.c_uint32(row & 0xFFFFFFFF),
                         out.ctypes.data_as(ctypes.POINTER(ctypes.c_int16)), threads(nt))
    return out
