"""The CPU merge kernels of ``merge_kernels.c``, built once with the system C compiler.

torch.compile fused these passes before; its runtime (dynamo, inductor, sympy) is ~210 MB
of resident memory and 4-9 s of loading per process, which every ``dithub merge`` command
paid, and which weighed more than the tensors themselves in a merge of a small model. The
same loops in C are a 40 KB library, built by ``dithub kernels build`` (``make`` runs it at install)
or in about a second on first use, and cached under ``$DITHUB_CACHE`` (default ``~/.cache/dithub``),
keyed by the source, the compiler and the flags, and checked (owner, permissions, its recorded
hash) before every load. Built without FMA contraction, they give the plain torch expressions' bits (tested).
Without a working compiler the plain torch functions run (exact too, slower).
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

import torch
import xxhash
from torch import Tensor

_SOURCE = Path(__file__).with_name("merge_kernels.c")
_FLAGS = ["-O3", "-march=native", "-ffp-contract=off", "-fno-math-errno", "-fno-trapping-math", "-fPIC", "-shared"]
_OPENMP = "-fopenmp"
"""Without OpenMP (Apple's clang) the kernels build single-threaded."""
_CHUNK = 1 << 20
"""Entries converted to float32 at a time for inputs in another dtype."""

_log = logging.getLogger("dithub.kernels")
_state: dict[str, object] = {"threads": None}


def _forked() -> None:
    _state["threads"] = 1  # GNU OpenMP's thread pool does not survive fork: a child runs one thread


os.register_at_fork(after_in_child=_forked)


def _threads() -> ctypes.c_int:
    return ctypes.c_int(_state["threads"] or torch.get_num_threads())  # type: ignore[arg-type]


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


def _loaded() -> ctypes.CDLL:
    """The library, for callers that checked ``available()``."""
    lib = library()
    if lib is None:
        raise RuntimeError("the native merge kernels are not available")
    return lib


def available() -> bool:
    return library() is not None


def _pointers(tensors: Sequence[Tensor], ctype: type) -> ctypes.Array:
    return (ctypes.POINTER(ctype) * len(tensors))(*[ctypes.cast(t.data_ptr(), ctypes.POINTER(ctype)) for t in tensors])


def _f32(t: Tensor) -> ctypes.Array:
    return (ctypes.c_float * t.numel())(*t.float().tolist())


def _chunks(xs: Sequence[Tensor], aux: Sequence[Tensor]) -> list[tuple[int, int, list[Tensor], list[Tensor]]]:
    """(start, stop, float32 inputs, aux) pieces: the whole range when the inputs are float32."""
    n = xs[0].numel()
    if all(x.dtype == torch.float32 and x.is_contiguous() for x in xs) and all(a.is_contiguous() for a in aux):
        return [(0, n, list(xs), list(aux))]
    return [(s, min(n, s + _CHUNK), [x[s:s + _CHUNK].float().contiguous() for x in xs],
             [a[s:s + _CHUNK].contiguous() for a in aux]) for s in range(0, n, _CHUNK)]


def _run(name: str, xs: Sequence[Tensor], aux: Sequence[Tensor], args: tuple, aux_type: type | None = None,
         stats: ctypes.Array | None = None) -> Tensor:
    """``name``(xs, [aux,] N, n, *args, out, [stats,] nt) over the inputs, chunk by chunk where
    converted; ``stats`` (the sign election's counts) are summed over the chunks."""
    fn = getattr(_loaded(), name)
    out = torch.empty(xs[0].numel(), dtype=torch.float32)
    nt = _threads()
    part = (ctypes.c_int64 * 3)()
    for start, stop, fx, fa in _chunks(xs, aux):
        ptrs = [_pointers(fx, ctypes.c_float)] + ([_pointers(fa, aux_type)] if aux_type else [])
        dest = ctypes.cast(out.data_ptr() + 4 * start, ctypes.POINTER(ctypes.c_float))
        fn(*ptrs, ctypes.c_int(len(fx)), ctypes.c_int64(stop - start), *args, dest, *([part] if stats is not None else []), nt)
        if stats is not None:
            for i in range(3):
                stats[i] += part[i]
    return out


def _elected(name: str, xs: Sequence[Tensor], aux: Sequence[Tensor], args: tuple, zero_positive: Tensor,
             aux_type: type | None = None) -> tuple[Tensor, Tensor]:
    stats = (ctypes.c_int64 * 3)()
    out = _run(name, xs, aux, (*args, ctypes.c_int(int(bool(zero_positive)))), aux_type, stats)
    return out, torch.tensor(list(stats), dtype=torch.int64)


def ties(xs: Sequence[Tensor], thresholds: Tensor, lam: Tensor, zero_positive: Tensor) -> tuple[Tensor, Tensor]:
    """(merged, [#sums > 0, #sums < 0, #zero sums with agreeing entries]): see ``full_space._sign_mean``."""
    return _elected("ties", xs, [], (_f32(thresholds), ctypes.c_float(float(lam))), zero_positive)


def _dare_args(draws: Sequence[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor) -> tuple[str, type, tuple]:
    suffix, ctype = ("i16", ctypes.c_int16) if draws[0].dtype == torch.int16 else ("u8", ctypes.c_uint8)
    return suffix, ctype, (ctype(int(limit)), ctypes.c_float(float(keep_prob)), ctypes.c_float(float(lam)))


def dare_ta(xs: Sequence[Tensor], draws: Sequence[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor) -> Tensor:
    suffix, ctype, args = _dare_args(draws, limit, keep_prob, lam)
    return _run(f"dare_ta_{suffix}", xs, draws, args, ctype)


def dare_ties(xs: Sequence[Tensor], draws: Sequence[Tensor], limit: Tensor, keep_prob: Tensor, lam: Tensor,
              zero_positive: Tensor) -> tuple[Tensor, Tensor]:
    suffix, ctype, args = _dare_args(draws, limit, keep_prob, lam)
    return _elected(f"dare_ties_{suffix}", xs, draws, args, zero_positive, ctype)


def band(xs: Sequence[Tensor], lows: Tensor, highs: Tensor, alpha: Tensor) -> Tensor:
    return _run("band", xs, [], (_f32(lows), _f32(highs), ctypes.c_float(float(alpha))))


def magmax(xs: Sequence[Tensor], alpha: Tensor, later: Tensor) -> Tensor:
    return _run("magmax", xs, [], (ctypes.c_float(float(alpha)), ctypes.c_int(int(bool(later)))))


def kth_largest_abs_rows(rows: Tensor, k: int) -> Tensor:
    """The k-th largest |x| of each row of a 2-D CPU tensor (float32 [rows])."""
    x = rows.detach().float().contiguous()
    out = torch.empty(x.shape[0], dtype=torch.float32)
    _loaded().kth_largest_abs_rows(ctypes.cast(x.data_ptr(), ctypes.POINTER(ctypes.c_float)), ctypes.c_int64(x.shape[0]),
                                   ctypes.c_int64(x.shape[1]), ctypes.c_int64(k),
                                   ctypes.cast(out.data_ptr(), ctypes.POINTER(ctypes.c_float)), _threads())
    return out


def count_at_least(x: Tensor, values: Tensor) -> Tensor:
    """[#(|x| ≥ values[i]) for the four values] (int64)."""
    counts = (ctypes.c_int64 * 4)()
    fn, vals, nt = _loaded().count_at_least, _f32(values), _threads()
    for start, stop, (fx,), _ in _chunks([x], []):
        fn(ctypes.cast(fx.data_ptr(), ctypes.POINTER(ctypes.c_float)), ctypes.c_int64(stop - start), vals, counts, nt)
    return torch.tensor(list(counts), dtype=torch.int64)
