"""TSV-M, Iso-C and Iso-CTS against their definitions and properties, on small matrices."""
from __future__ import annotations

import pytest
import torch

from dithub.errors import BadInput
from dithub.algorithms.merge import get_method


def _mats(t=3, shape=(12, 9), seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float64) for _ in range(t)]


def _orth(x):
    u, _, vh = torch.linalg.svd(x, full_matrices=False)
    return u @ vh


def test_iso_c_flattens_the_spectrum_of_the_sum():
    mats = _mats()
    out = get_method("iso_c")(mats, alpha=1.0)
    total = sum(mats)
    s_total = torch.linalg.svdvals(total)
    torch.testing.assert_close(torch.linalg.svdvals(out), torch.full_like(s_total, float(s_total.mean())))
    torch.testing.assert_close(out, float(s_total.mean()) * _orth(total))  # same singular vectors


def test_tsv_single_task_and_orthogonal_tasks_are_exact():
    (m,) = _mats(t=1)
    torch.testing.assert_close(get_method("tsv")([m]), m)
    # tasks of rank exactly r/T living in disjoint rows and columns: their kept singular vectors are
    # already mutually orthogonal, so TSV-M returns the plain sum
    a, b = torch.zeros(12, 10, dtype=torch.float64), torch.zeros(12, 10, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    a[:6, :5] = torch.randn(6, 5, generator=g, dtype=torch.float64)
    b[6:, 5:] = torch.randn(6, 5, generator=g, dtype=torch.float64)
    torch.testing.assert_close(get_method("tsv")([a, b]), a + b)


def test_tsv_matches_its_definition():
    mats = _mats(t=3, shape=(10, 8))
    k = 8 // 3
    parts = [torch.linalg.svd(m, full_matrices=False) for m in mats]
    u = torch.cat([p[0][:, :k] for p in parts], 1)
    s = torch.cat([p[1][:k] for p in parts])
    vh = torch.cat([p[2][:k] for p in parts], 0)
    torch.testing.assert_close(get_method("tsv")(mats, alpha=0.5), 0.5 * _orth(u) @ torch.diag(s) @ _orth(vh))


def test_iso_cts_matches_its_definition():
    mats = _mats(t=3, shape=(12, 10))
    r, t = 10, 3
    k = int(r * 0.8)
    per = round((r - k) / t)
    k = r - per * t
    u, s, vh = torch.linalg.svd(sum(mats), full_matrices=False)
    cols, rows, sv = [], [], []
    for m in mats:
        res = m - u[:, :k] @ u[:, :k].T @ m
        ut, st, vt = torch.linalg.svd(res, full_matrices=False)
        cols.append(ut[:, :per])
        rows.append(vt[:per])
        sv.append(st[:per])
    U = torch.cat(cols + [u[:, :k]], 1)
    V = torch.cat(rows + [vh[:k]], 0)
    S = torch.cat(sv + [s[:k]])
    expected = _orth(U) @ (S.mean() * torch.eye(r, dtype=torch.float64)) @ _orth(V)
    torch.testing.assert_close(get_method("iso_cts")(mats), expected)


def test_iso_cts_with_all_common_space_is_iso_c():
    mats = _mats()
    torch.testing.assert_close(get_method("iso_cts")(mats, common=1.0), get_method("iso_c")(mats))


def test_spectral_methods_refuse_vectors():
    with pytest.raises(BadInput, match="2-D"):
        get_method("iso_c")([torch.ones(3), torch.ones(3)])


def test_batched_triplets_equal_one_at_a_time():
    """What CUDA runs (one batched SVD) against what the CPU runs (one matrix at a time): the same
    rank-k parts U_k S_k V_kᵀ of each matrix (singular vectors are defined up to sign)."""
    from dithub.algorithms.merge.spectral import top_triplets

    g = torch.Generator().manual_seed(4)
    mats = [torch.randn(30, 20, generator=g, dtype=torch.float64) for _ in range(3)]
    one = top_triplets(iter(mats), 4, batched=False)
    batch = top_triplets(mats, 4, batched=True)
    for i, m in enumerate(mats):
        u, s, vh = torch.linalg.svd(m, full_matrices=False)
        best = (u[:, :4] * s[:4]) @ vh[:4]
        for us, ss, vhs in (one, batch):
            assert us[i].shape == (30, 4)
            assert us[i].untyped_storage().nbytes() <= 3 * 30 * 4 * 8  # copies of the kept columns, not views of U
            torch.testing.assert_close((us[i] * ss[i]) @ vhs[i], best)
