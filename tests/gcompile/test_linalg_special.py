"""torch.linalg and torch.special (issue 13 dtypes/namespaces group): results against NumPy
written independently, gradients by finite differences, errors as torch."""
from __future__ import annotations

import math

import numpy as np
import pytest

import gcompile as torch
from gcompile.autograd import gradcheck

RNG = np.random.default_rng(3)


def T(a, **kw):
    return torch.tensor(np.asarray(a), **kw)


def spd(n, batch=()):
    a = RNG.uniform(-1, 1, batch + (n, n))
    return a @ np.swapaxes(a, -1, -2) + n * np.eye(n)


def wc(*shape):
    return RNG.uniform(-0.4, 0.4, shape) + 2 * np.eye(shape[-1])


def leaf(a):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=True)


def test_inv_det_slogdet_solve():
    a = wc(2, 4, 4)
    np.testing.assert_allclose((torch.linalg.inv(T(a)) @ T(a)).numpy(),
                               np.broadcast_to(np.eye(4), (2, 4, 4)), atol=1e-12)
    np.testing.assert_allclose(torch.linalg.det(T(a)).numpy(), np.linalg.det(a))
    sign, logabs = torch.linalg.slogdet(T(-a[0]))
    np.testing.assert_allclose(sign.item() * math.exp(logabs.item()), np.linalg.det(-a[0]))
    b = RNG.standard_normal((4, 3))
    x = torch.linalg.solve(T(a), T(b))
    np.testing.assert_allclose((T(a) @ x).numpy(), np.broadcast_to(b, (2, 4, 3)), atol=1e-12)
    v = torch.linalg.solve(T(a[0]), T(b[:, 0]))
    assert v.shape == (4,)
    np.testing.assert_allclose(a[0] @ v.numpy(), b[:, 0], atol=1e-12)
    xl = torch.linalg.solve(T(a[0]), T(b.T), left=False)
    np.testing.assert_allclose(xl.numpy() @ a[0], b.T, atol=1e-12)
    assert gradcheck(torch.linalg.inv, (leaf(wc(3, 3)),))
    assert gradcheck(torch.linalg.det, (leaf(wc(2, 3, 3)),))
    assert gradcheck(lambda m: torch.linalg.slogdet(m).logabsdet, (leaf(wc(3, 3)),))
    assert gradcheck(torch.linalg.solve, (leaf(wc(3, 3)), leaf(RNG.standard_normal((3, 2)))))


def test_singular_and_not_positive_definite_raise_linalg_error():
    with pytest.raises(torch.linalg.LinAlgError, match="singular"):
        torch.linalg.inv(T(np.ones((3, 3))))
    assert issubclass(torch.linalg.LinAlgError, RuntimeError)
    with pytest.raises(torch.linalg.LinAlgError, match="positive-definite"):
        torch.linalg.cholesky(T(-np.eye(2)))
    with pytest.raises(RuntimeError, match="square"):
        torch.linalg.inv(T(np.ones((2, 3))))
    with pytest.raises(RuntimeError, match="floating point"):
        torch.linalg.det(T(np.eye(2, dtype=np.int64)))


def test_cholesky_and_eigh_gradients_through_symmetric_inputs():
    s = spd(3)
    L = torch.linalg.cholesky(T(s))
    np.testing.assert_allclose((L @ L.mT).numpy(), s, atol=1e-12)
    assert np.allclose(np.triu(L.numpy(), 1), 0)
    np.testing.assert_allclose(torch.linalg.cholesky(T(s), upper=True).numpy(), L.numpy().T)
    w, V = torch.linalg.eigh(T(s))
    np.testing.assert_allclose((T(s) @ V).numpy(), (V * w).numpy(), atol=1e-10)
    np.testing.assert_allclose((V.mT @ V).numpy(), np.eye(3), atol=1e-12)
    np.testing.assert_allclose(w.numpy(), np.sort(np.roots(np.poly(s)).real), rtol=1e-10)
    np.testing.assert_allclose(torch.linalg.eigvalsh(T(s)).numpy(), w.numpy())

    def sym(b):
        return b @ b.mT + 3 * torch.eye(3, dtype=torch.float64)

    b = leaf(RNG.uniform(-1, 1, (3, 3)))
    assert gradcheck(lambda m: torch.linalg.cholesky(sym(m)), (b,))
    # sign-invariant functions of the eigenvectors
    assert gradcheck(lambda m: torch.linalg.eigh(sym(m)).eigenvalues, (b,))
    assert gradcheck(lambda m: torch.linalg.eigh(sym(m)).eigenvectors ** 2, (b,))


@pytest.mark.parametrize("shape", [(4, 4), (5, 3), (3, 5), (2, 4, 3)])
def test_svd_and_friends(shape):
    a = RNG.standard_normal(shape)
    U, S, Vh = torch.linalg.svd(T(a), full_matrices=False)
    np.testing.assert_allclose((U * S.unsqueeze(-2) @ Vh).numpy(), a, atol=1e-12)
    np.testing.assert_allclose(S.numpy(), np.sqrt(np.sort(np.linalg.eigvalsh(
        np.swapaxes(a, -1, -2) @ a if shape[-2] >= shape[-1] else a @ np.swapaxes(a, -1, -2)),
        axis=-1)[..., ::-1]), rtol=1e-8)
    np.testing.assert_allclose(torch.linalg.svdvals(T(a)).numpy(), S.numpy())
    p = torch.linalg.pinv(T(a)).numpy()
    np.testing.assert_allclose(a @ p @ a, a, atol=1e-10)
    np.testing.assert_allclose(p @ a @ p, p, atol=1e-10)
    x = leaf(a)
    assert gradcheck(lambda m: torch.linalg.svdvals(m), (x,))
    assert gradcheck(lambda m: (lambda r: (r.U * r.S.unsqueeze(-2)) @ r.Vh)(
        torch.linalg.svd(m, full_matrices=False)), (x,))
    assert gradcheck(lambda m: torch.linalg.svd(m, full_matrices=False).U ** 2, (x,))


def test_qr():
    for shape in ((5, 3), (3, 3), (2, 4, 3)):
        a = RNG.standard_normal(shape)
        Q, R = torch.linalg.qr(T(a))
        np.testing.assert_allclose((Q @ R).numpy(), a, atol=1e-12)
        k = min(shape[-2:])
        np.testing.assert_allclose((Q.mT @ Q).numpy(), np.broadcast_to(np.eye(k), Q.shape[:-2]
                                                                       + (k, k)), atol=1e-12)
        assert np.allclose(np.tril(R.numpy(), -1), 0)
    assert gradcheck(lambda m: torch.linalg.qr(m).R, (leaf(RNG.standard_normal((4, 3))),))
    with pytest.raises(RuntimeError, match="unrecognized mode"):
        torch.linalg.qr(T(np.eye(2)), mode="bogus")


def test_norms_match_numpy():
    a = RNG.standard_normal((3, 4))
    for ord in ("fro", "nuc", 1, -1, 2, -2, math.inf, -math.inf):
        np.testing.assert_allclose(torch.linalg.matrix_norm(T(a), ord).item(),
                                   np.linalg.norm(a, ord), rtol=1e-10, err_msg=str(ord))
        np.testing.assert_allclose(torch.linalg.norm(T(a), ord).item(),
                                   np.linalg.norm(a, ord), rtol=1e-10)
    for ord in (1, 2, 3, math.inf, -math.inf, 0.5):
        np.testing.assert_allclose(torch.linalg.vector_norm(T(a), ord, dim=1).numpy(),
                                   np.linalg.norm(a, ord, axis=1), rtol=1e-10)
    np.testing.assert_allclose(torch.linalg.norm(T(a)).item(), np.linalg.norm(a))
    np.testing.assert_allclose(torch.linalg.matrix_norm(T(a[None]), keepdim=True).numpy(),
                               np.linalg.norm(a[None], axis=(1, 2), keepdims=True))
    assert gradcheck(lambda m: torch.linalg.matrix_norm(m, "nuc"), (leaf(a),))
    assert gradcheck(lambda m: torch.linalg.vector_norm(m, 3, dim=0), (leaf(a),))


def test_matrix_power_multi_dot_cond_rank_triangular_lstsq():
    a = wc(3, 3)
    np.testing.assert_allclose(torch.linalg.matrix_power(T(a), 3).numpy(), a @ a @ a)
    np.testing.assert_allclose(torch.linalg.matrix_power(T(a), -2).numpy(),
                               np.linalg.inv(a @ a), rtol=1e-10)
    np.testing.assert_allclose(torch.linalg.matrix_power(T(a), 0).numpy(), np.eye(3))
    b, c = RNG.standard_normal((3, 5)), RNG.standard_normal(5)
    np.testing.assert_allclose(torch.linalg.multi_dot([T(a), T(b), T(c)]).numpy(), a @ b @ c)
    np.testing.assert_allclose(torch.linalg.cond(T(a)).item(), np.linalg.cond(a), rtol=1e-10)
    low = np.tril(RNG.standard_normal((4, 4))) + 4 * np.eye(4)
    assert torch.linalg.matrix_rank(T(b @ b.T)).item() == 3
    assert torch.linalg.matrix_rank(T(np.outer(c, c))).item() == 1
    rhs = RNG.standard_normal((4, 2))
    x = torch.linalg.solve_triangular(T(low + np.triu(np.ones((4, 4)), 1)), T(rhs), upper=False)
    np.testing.assert_allclose(low @ x.numpy(), rhs, atol=1e-12)
    tall, y = RNG.standard_normal((6, 3)), RNG.standard_normal((6, 2))
    np.testing.assert_allclose(torch.linalg.lstsq(T(tall), T(y)).solution.numpy(),
                               np.linalg.lstsq(tall, y, rcond=None)[0], atol=1e-10)


def test_linalg_compiles_into_one_plan():
    def f(a, b):
        return torch.linalg.solve(a, b).sum() + torch.linalg.det(a) + \
            torch.linalg.eigh(a @ a.mT).eigenvalues.sum()
    a, b = T(wc(3, 3)), T(RNG.standard_normal((3, 2)))
    cf = torch.compile(f)
    got = cf(a, b)
    assert cf.entries and not cf.graph_breaks
    np.testing.assert_allclose(got.numpy(), f(a, b).numpy(), rtol=1e-10)


def test_special_namespace():
    x = RNG.uniform(0.1, 3, 6)
    sp = torch.special
    np.testing.assert_allclose(sp.gammaln(T(x)).numpy(), [math.lgamma(v) for v in x])
    np.testing.assert_allclose(sp.expit(T(x)).numpy(), 1 / (1 + np.exp(-x)))
    np.testing.assert_allclose(sp.ndtr(T(x)).numpy(),
                               [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in x])
    p = RNG.uniform(0.05, 0.95, 6)
    np.testing.assert_allclose(sp.ndtr(sp.ndtri(T(p))).numpy(), p, rtol=1e-12)
    np.testing.assert_allclose(sp.erfcx(T(x)).numpy(),
                               [math.exp(v * v) * math.erfc(v) for v in x], rtol=1e-12)
    np.testing.assert_allclose(sp.entr(T([0.0, 0.5, -1.0])).numpy(),
                               [0.0, -0.5 * math.log(0.5), -math.inf])
    np.testing.assert_allclose(sp.xlog1py(T([0.0, 2.0]), T([-1.0, 1.0])).numpy(),
                               [0.0, 2 * math.log(2)])
    np.testing.assert_allclose(sp.multigammaln(T(x + 2), 3).numpy(),
                               [3 * 2 / 4 * math.log(math.pi) + sum(math.lgamma(v + 2 - j / 2)
                                                                   for j in range(3))
                                for v in x], rtol=1e-12)
    np.testing.assert_allclose(sp.i0(T(x)).numpy(), np.i0(x), rtol=1e-12)
    np.testing.assert_allclose(sp.psi(T(x)).numpy(), torch.digamma(T(x)).numpy())
    np.testing.assert_allclose(sp.softmax(T(x), 0).numpy(), np.exp(x) / np.exp(x).sum())


def test_backends_and_accelerator(monkeypatch):
    # the suite may run on the CUDA simulator (tests/conftest.py): make CUDA absent
    monkeypatch.setattr(torch.cuda, "_probe", lambda: (False, "No CUDA GPUs are available"))
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.is_available() is False
    assert torch.backends.mps.is_available() is False
    assert torch.accelerator.is_available() is False
    assert torch.accelerator.current_accelerator() is None
    assert torch.accelerator.device_count() == 0
    torch.backends.cudnn.benchmark = False
