"""The torch-namespace forms of torch.linalg and torch.special functions (``torch.det``,
``torch.svd``, ``torch.cholesky_solve``, ``torch.mvlgamma``, ``torch.i0`` ...) and the
Tensor methods bound to them.

Why a module of its own: ``linalg`` and ``special`` are written on the eager core's
functions, so their older torch-namespace names sit above both, outside the core, and the
package imports them from here.
"""
from __future__ import annotations

import math

from . import linalg, special
from ._functions import _t, eq, lt, matmul, where
from ._tensor_base import Tensor

__all__ = ["inverse", "det", "logdet", "slogdet", "cholesky", "cholesky_solve",
           "cholesky_inverse", "triangular_solve", "pinverse", "matrix_power", "chain_matmul",
           "qr", "svd", "mvlgamma", "i0"]


def inverse(input):
    return linalg.inv(input)


def det(input):
    return linalg.det(input)


def logdet(input):
    """log det: nan for a negative determinant, -inf for zero."""
    sign_, logabs = linalg.slogdet(input)
    return where(lt(sign_, 0), math.nan, where(eq(sign_, 0), -math.inf, logabs))


def slogdet(input):
    return linalg.slogdet(input)


def cholesky(input, upper=False):
    return linalg.cholesky(input, upper=upper)


def cholesky_solve(B, L, upper=False):  # noqa: N803 - torch's names
    """X with (L L^T) X = B."""
    L = _t(L)
    lo = L.mT if upper else L
    return linalg.solve(matmul(lo, lo.mT), B)


def cholesky_inverse(L, upper=False):  # noqa: N803
    L = _t(L)
    lo = L.mT if upper else L
    return linalg.inv(matmul(lo, lo.mT))


def triangular_solve(b, A, upper=True, transpose=False, unitriangular=False):  # noqa: N803
    """(solution, the coefficient matrix) with op(A) X = b, A triangular."""
    A = _t(A)
    At = A.mT if transpose else A
    X = linalg.solve_triangular(At, b, upper=upper != transpose, unitriangular=unitriangular)
    return linalg._result("triangular_solve", "solution cloned_coefficient", X, A.clone())


def pinverse(input, rcond=1e-15):
    return linalg.pinv(input, rtol=rcond)


def matrix_power(input, n):
    return linalg.matrix_power(input, n)


def chain_matmul(*matrices):
    return linalg.multi_dot(matrices)


def qr(input, some=True):
    return linalg.qr(input, "reduced" if some else "complete")


def svd(input, some=True, compute_uv=True):
    """U, S, V (not Vh) with input = U diag(S) V^T (torch.svd's convention)."""
    U, S, Vh = linalg.svd(input, full_matrices=not some)
    return linalg._result("svd_UV", "U S V", U, S, Vh.mT)


def mvlgamma(input, p):
    return special.multigammaln(input, p)


def i0(input):
    return special.i0(input)


for _m in ("inverse", "det", "logdet", "slogdet", "cholesky", "pinverse", "matrix_power", "svd",
           "qr", "cholesky_solve", "cholesky_inverse", "triangular_solve"):
    if not hasattr(Tensor, _m):
        setattr(Tensor, _m, globals()[_m])
Tensor.mvlgamma = lambda self, p: mvlgamma(self, p)
