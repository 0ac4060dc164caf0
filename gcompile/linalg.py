"""torch.linalg: norms, inverses, solves and factorisations.

The factorisations are registered ops (``ir/ops/lapack.py``, NumPy's LAPACK) with torch's
gradient formulas; everything else is composed of ops, so it traces and differentiates.
"""
from __future__ import annotations

import builtins
import math

from ir import dtypes as dt
from ir.ops.lapack import LinAlgError
from ir.shapes import normalize_dim

from . import _functions as F
from ._tensor import Tensor, apply_op
from ._tensor_base import named_result as _result

__all__ = ["LinAlgError", "vector_norm", "matrix_norm", "norm", "inv", "inv_ex", "solve",
           "det", "slogdet", "cholesky", "eigh", "eigvalsh", "svd", "svdvals", "qr", "pinv",
           "cross", "matmul", "vecdot", "diagonal", "multi_dot", "matrix_power", "cond",
           "matrix_rank", "solve_triangular", "lstsq"]


def _mT(x: Tensor) -> Tensor:
    return x.transpose(-2, -1)


def vector_norm(x: Tensor, ord=2, dim=None, keepdim: bool = False, *,  # noqa: A002
                dtype=None) -> Tensor:
    """The ord-norm of x flattened (or over dim): sum(|x|^ord)^(1/ord), max/min for +-inf."""
    x = F._t(x)
    if dtype is not None:
        x = x.to(dtype)
    if not x.dtype.is_floating_point:
        raise RuntimeError(f"linalg.vector_norm: Expected a floating point or complex tensor as "
                           f"input. Got {x.dtype.name.capitalize()}")
    if dim is None and x.dim() > 0:
        dims = tuple(range(x.dim()))
    elif dim is None:
        dims = ()
    else:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
    return F.norm(x, p=ord, dim=list(dims) if dims else None, keepdim=keepdim)


def matrix_norm(A: Tensor, ord="fro", dim=(-2, -1), keepdim: bool = False, *,  # noqa: A002
                dtype=None) -> Tensor:
    """Frobenius, nuclear, +-1, +-2 and +-inf matrix norms over the two dims."""
    A = F._t(A)
    if dtype is not None:
        A = A.to(dtype)
    if A.dim() < 2:
        raise RuntimeError("linalg.matrix_norm: The input tensor A must have at least 2 "
                           "dimensions.")
    d0, d1 = normalize_dim(dim[0], A.dim()), normalize_dim(dim[1], A.dim())
    if ord == "fro":
        r = F.sqrt(F.sum(F.mul(A, A), (d0, d1), keepdim=True))
    elif ord == "nuc" or ord in (2, -2):
        s = svdvals(F.movedim(A, (d0, d1), (-2, -1)))
        if ord == "nuc":
            r = F.sum(s, -1)
        else:
            r = F.amax(s, -1) if ord == 2 else F.amin(s, -1)
        r = r.unsqueeze(-1).unsqueeze(-1)
        r = F.movedim(r, (-2, -1), (d0, d1)) if keepdim else r
        return r if keepdim else r.squeeze(-1).squeeze(-1)
    elif ord in (1, -1, math.inf, -math.inf):
        red, keep = (d0, d1) if ord in (1, -1) else (d1, d0)
        s = F.sum(F.abs(A), red, keepdim=True)
        r = F.amax(s, keep, keepdim=True) if ord > 0 else F.amin(s, keep, keepdim=True)
    else:
        raise RuntimeError(f"linalg.matrix_norm: Order {ord} not supported.")
    if not keepdim:
        r = r.squeeze(builtins.max(d0, d1)).squeeze(builtins.min(d0, d1))
    return r


def norm(A: Tensor, ord=None, dim=None, keepdim: bool = False, *,  # noqa: A002
         dtype=None) -> Tensor:
    """vector_norm for 1 dim (or ord None over everything), matrix_norm for 2."""
    A = F._t(A)
    if dim is not None:
        dims = (dim,) if isinstance(dim, int) else tuple(dim)
        if len(dims) == 2:
            return matrix_norm(A, "fro" if ord is None else ord, dims, keepdim, dtype=dtype)
        return vector_norm(A, 2 if ord is None else ord, dims, keepdim, dtype=dtype)
    if ord is None:
        return vector_norm(A, 2, None, keepdim, dtype=dtype)
    if A.dim() == 2:
        return matrix_norm(A, ord, (-2, -1), keepdim, dtype=dtype)
    if A.dim() == 1:
        return vector_norm(A, ord, None, keepdim, dtype=dtype)
    raise RuntimeError(f"linalg.norm: If dim is not specified but ord is, the input must be "
                       f"1D or 2D. Got {A.dim()}D.")


def inv(A: Tensor) -> Tensor:
    """The inverse; raises LinAlgError for a singular matrix."""
    return apply_op("linalg_inv", (F._t(A),))


def inv_ex(A: Tensor, *, check_errors: bool = False):
    """inv with an info tensor (0: success)."""
    return _result("inv_ex", "inverse info", inv(A), F._zeros(tuple(A.shape[:-2]), dtype=dt.int32))


def solve(A: Tensor, B: Tensor, *, left: bool = True) -> Tensor:
    """X with A X = B (X A = B when left=False); B may be a vector (or a batch of them)."""
    A, B = F._t(A), F._t(B)
    if not left:
        return _mT(solve(_mT(A), _mT(B)))
    vec = B.dim() == 1 or (B.dim() == A.dim() - 1 and tuple(B.shape) == tuple(A.shape[:-1]))
    if vec:
        return apply_op("linalg_solve", (A, B.unsqueeze(-1))).squeeze(-1)
    return apply_op("linalg_solve", (A, B))


def det(A: Tensor) -> Tensor:
    """The determinant."""
    return apply_op("linalg_det", (F._t(A),))


def slogdet(A: Tensor):
    """(sign, log|det|)."""
    A = F._t(A)
    sign = F.sign(det(A.detach()))
    return _result("slogdet", "sign logabsdet", sign, apply_op("linalg_logabsdet", (A,)))


def cholesky(A: Tensor, *, upper: bool = False) -> Tensor:
    """Lower (or upper) Cholesky factor; LinAlgError when A is not positive-definite."""
    L = apply_op("linalg_cholesky", (F._t(A),))
    return _mT(L) if upper else L


def eigh(A: Tensor, UPLO: str = "L"):  # noqa: N803 - torch's name
    """Eigenvalues (ascending) and orthonormal eigenvectors of a symmetric matrix."""
    A = F._t(A)
    if UPLO == "U":
        A = _mT(A)
    elif UPLO != "L":
        raise RuntimeError(f"Expected UPLO argument to be 'L' or 'U', but got {UPLO}")
    n = A.shape[-1]
    packed = apply_op("linalg_eigh", (A,))
    return _result("eigh", "eigenvalues eigenvectors", packed[..., 0, :], packed[..., 1:n + 1, :])


def eigvalsh(A: Tensor, UPLO: str = "L") -> Tensor:  # noqa: N803
    return eigh(A, UPLO).eigenvalues


def svd(A: Tensor, full_matrices: bool = True, *, driver=None):
    """U, S, Vh with A = U diag(S) Vh. Only the reduced form is computed (full_matrices=True
    for a non-square matrix is refused rather than padded with arbitrary columns)."""
    A = F._t(A)
    m, n = A.shape[-2:]
    if full_matrices and m != n:
        raise NotImplementedError("linalg.svd: full_matrices=True for a non-square matrix is not "
                                  "supported; pass full_matrices=False")
    packed = apply_op("linalg_svd", (A,))
    U = packed[..., :m, :]
    S = packed[..., m, :]
    Vh = _mT(packed[..., m + 1:, :])
    return _result("svd", "U S Vh", U, S, Vh)


def svdvals(A: Tensor, *, driver=None) -> Tensor:
    return svd(A, full_matrices=False).S


def qr(A: Tensor, mode: str = "reduced"):
    """Q, R by modified Gram-Schmidt in ops (differentiable); R's diagonal
    is positive. mode 'reduced' or 'r'; 'complete' only for m <= n."""
    A = F._t(A)
    if mode not in ("reduced", "r", "complete"):
        raise RuntimeError(f"qr received unrecognized mode '{mode}' but expected one of "
                           "'reduced' (default), 'r', or 'complete'")
    m, n = A.shape[-2:]
    k = builtins.min(m, n)
    if mode == "complete" and m > n:
        raise NotImplementedError("linalg.qr: mode='complete' with m > n is not supported")
    qs, rows = [], []
    cols = [A[..., :, j] for j in range(n)]
    for j in range(k):
        v = cols[j]  # already orthogonal to the earlier q's
        r_jj = vector_norm(v, dim=-1)
        q = F.div(v, r_jj.unsqueeze(-1))
        qs.append(q)
        row = [F._zeros_like(r_jj) for _ in range(j)] + [r_jj]
        for c in range(j + 1, n):
            row.append(F.sum(F.mul(q, cols[c]), -1))
        # orthogonalise the remaining columns against q now (modified Gram-Schmidt)
        for c in range(j + 1, n):
            cols[c] = F.sub(cols[c], F.mul(q, row[c].unsqueeze(-1)))
        rows.append(row)
    Q = F.stack(qs, -1)
    R = F.stack([F.stack(r, -1) for r in rows], -2)
    if mode == "r":
        return _result("qr", "Q R", F._zeros((0,), dtype=A.dtype), R)
    return _result("qr", "Q R", Q, R)


def pinv(A: Tensor, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """Pseudo-inverse through the SVD, singular values below the tolerance dropped."""
    A = F._t(A)
    U, S, Vh = svd(A, full_matrices=False)
    smax = F.amax(S, -1, keepdim=True)
    if rtol is None:
        rtol = (builtins.max(A.shape[-2:]) * float(_eps(A.dtype))) if atol is None else 0.0
    tol = F.mul(smax, rtol)
    if atol is not None:
        tol = F.maximum(tol, F._t(atol) if not isinstance(atol, Tensor) else atol)
    keep = F.gt(S, tol)
    sinv = F.where(keep, F.div(1.0, F.where(keep, S, 1.0)), 0.0)
    return F.matmul(_mT(Vh), F.mul(sinv.unsqueeze(-1), _mT(U)))


def _eps(d):
    import numpy as np
    return np.finfo(d.np).eps


def cross(input: Tensor, other: Tensor, *, dim: int = -1) -> Tensor:  # noqa: A002
    return F.cross(input, other, dim=dim)


def matmul(input: Tensor, other: Tensor) -> Tensor:  # noqa: A002
    return F.matmul(input, other)


def vecdot(x: Tensor, y: Tensor, *, dim: int = -1) -> Tensor:
    return F.sum(F.mul(x, y), dim)


def diagonal(A: Tensor, *, offset: int = 0, dim1: int = -2, dim2: int = -1) -> Tensor:
    return F.diagonal(A, offset, dim1, dim2)


def multi_dot(tensors) -> Tensor:
    """A chain of matmuls (first may be 1-d, last may be 1-d), left to right."""
    ts = list(tensors)
    if len(ts) < 2:
        raise RuntimeError(f"multi_dot(): expected at least 2 tensors but got {len(ts)}")
    out = ts[0]
    for t in ts[1:]:
        out = F.matmul(out, t)
    return out


def matrix_power(A: Tensor, n: int) -> Tensor:
    """A^n by repeated squaring (inverse first for negative n)."""
    A = F._t(A)
    if n < 0:
        A, n = inv(A), -n
    from ._creation import eye
    result = eye(A.shape[-1], dtype=A.dtype).expand(*A.shape) if n == 0 else None
    base = A
    while n:
        if n & 1:
            result = base if result is None else F.matmul(result, base)
        n >>= 1
        if n:
            base = F.matmul(base, base)
    return result


def cond(A: Tensor, p=None) -> Tensor:
    """Condition number (2-norm: largest / smallest singular value)."""
    if p in (None, 2, -2):
        s = svdvals(A)
        r = F.div(F.amax(s, -1), F.amin(s, -1))
        return r if p != -2 else F.reciprocal(r)
    return F.mul(matrix_norm(A, p), matrix_norm(inv(A), p))


def matrix_rank(A: Tensor, *, atol=None, rtol=None, hermitian: bool = False) -> Tensor:
    """Number of singular values above the tolerance."""
    A = F._t(A)
    s = svdvals(A)
    if rtol is None:
        rtol = builtins.max(A.shape[-2:]) * float(_eps(A.dtype)) if atol is None else 0.0
    tol = F.mul(F.amax(s, -1, keepdim=True), rtol)
    if atol is not None:
        tol = F.maximum(tol, F._t(float(atol)))
    return F.sum(F.gt(s, tol), -1)


def solve_triangular(A: Tensor, B: Tensor, *, upper: bool, left: bool = True,
                     unitriangular: bool = False) -> Tensor:
    """Solve with the triangle of A (the other triangle ignored, as torch)."""
    A = F._t(A)
    T = F.triu(A) if upper else F.tril(A)
    if unitriangular:
        from ._creation import eye
        e = eye(A.shape[-1], dtype=A.dtype)
        T = F.add(F.mul(T, F.rsub(e, 1.0)), e)
    return solve(T, B, left=left)


def lstsq(A: Tensor, B: Tensor, rcond=None, *, driver=None):
    """Least-squares solution through the pseudo-inverse."""
    A, B = F._t(A), F._t(B)
    X = F.matmul(pinv(A), B)
    return _result("lstsq", "solution residuals rank singular_values", X,
                   F._zeros((0,), dtype=A.dtype), F._zeros((0,), dtype=dt.int64),
                   F._zeros((0,), dtype=A.dtype))
