"""Matrix factorisations and inverses (NumPy's LAPACK), with torch's gradient formulas.

Factorisations with several results return them packed in one array (as the scan ops do):
``linalg_eigh`` gives (..., n+1, n) = [eigenvalues; eigenvectors], ``linalg_svd`` gives
(..., m+1+n, k) = [U; S; V] (V = Vh^T); the front end (``gcompile.linalg``) slices them.
"""
from __future__ import annotations

import numpy as np

from ..registry import OpDef, register


class LinAlgError(RuntimeError):
    """torch.linalg.LinAlgError: a matrix the factorisation cannot handle (singular, not
    positive-definite)."""


def _square(shape, name):
    if len(shape) < 2 or shape[-1] != shape[-2]:
        raise RuntimeError(f"linalg.{name}: A must be batches of square matrices, but they are "
                           f"{shape[-2] if len(shape) > 1 else 1} by {shape[-1] if shape else 1} "
                           "matrices")


def _float_check(d, name):
    if not d.is_floating_point:
        raise RuntimeError(f"linalg.{name}: Expected a floating point or complex tensor as "
                           f"input. Got {d.name.capitalize()}")


def _mT(b, x):
    n = len(x.shape)
    return b.permute(x, dims=tuple(range(n - 2)) + (n - 1, n - 2))


def _col(b, v):
    """(..., k) -> (..., k, 1)"""
    return b.reshape(v, shape=tuple(v.shape) + (1,))


def _row(b, v):
    return b.reshape(v, shape=tuple(v.shape[:-1]) + (1,) + tuple(v.shape[-1:]))


def _eye_like(b, v, n):
    # identity (n, n) in v's dtype, built from ops so graphs stay self-contained
    ones = b.ones_like(b.mul(_col(b, v), _row(b, v)))
    return b.triu(b.tril(ones, diagonal=0), diagonal=0)


# ---- inverse -----------------------------------------------------------------------------
def _inv_impl(a):
    try:
        return np.linalg.inv(a)
    except np.linalg.LinAlgError:
        raise LinAlgError("linalg.inv: The diagonal element is zero, the inversion could not "
                          "be completed because the input matrix is singular.") from None


def _inv_infer(specs, attrs):
    shape, d = specs[0]
    _square(shape, "inv")
    _float_check(d, "inv")
    return tuple(shape), d


register(OpDef("linalg_inv", "other", _inv_impl, infer=_inv_infer, saves=(-1,),
               backward_name="LinalgInvExBackward0",
               grad=lambda b, g, xs, out: (b.neg(b.matmul(_mT(b, out), b.matmul(g, _mT(b, out)))),),
               doc="matrix inverse (batched)"))


# ---- determinant -------------------------------------------------------------------------
def _det_infer(specs, attrs):
    shape, d = specs[0]
    _square(shape, "det")
    _float_check(d, "det")
    return tuple(shape[:-2]), d


def _det_grad(b, g, xs, out):
    (a,) = xs
    inv_t = _mT(b, b.linalg_inv(a))
    return (b.mul(b.reshape(b.mul(g, out), shape=tuple(out.shape) + (1, 1)), inv_t),)


register(OpDef("linalg_det", "other", lambda a: np.asarray(np.linalg.det(a), a.dtype),
               infer=_det_infer, saves=(0, -1), grad=_det_grad,
               backward_name="LinalgDetBackward0",
               doc="determinant (its gradient needs an invertible matrix)"))


def _logabsdet_grad(b, g, xs, out):
    (a,) = xs
    inv_t = _mT(b, b.linalg_inv(a))
    return (b.mul(b.reshape(g, shape=tuple(g.shape) + (1, 1)), inv_t),)


register(OpDef("linalg_logabsdet", "other",
               lambda a: np.asarray(np.linalg.slogdet(a)[1], a.dtype),
               infer=_det_infer, saves=(0,), grad=_logabsdet_grad,
               backward_name="LinalgSlogdetBackward0",
               doc="log |det A| (slogdet's second result)"))


# ---- solve -------------------------------------------------------------------------------
def _solve_impl(a, bm):
    try:
        return np.linalg.solve(a, bm)
    except np.linalg.LinAlgError:
        raise LinAlgError("linalg.solve: The solver failed because the input matrix is "
                          "singular.") from None


def _solve_infer(specs, attrs):
    (sa, da), (sb, db) = specs
    _square(sa, "solve")
    _float_check(da, "solve")
    if da is not db:
        raise RuntimeError(f"linalg.solve: Expected A and B to have the same dtype, but found "
                           f"A of type {da.name} and B of type {db.name} instead")
    if len(sb) < 2 or sb[-2] != sa[-1]:
        raise RuntimeError(f"linalg.solve: Incompatible shapes of A and B for the equation "
                           f"AX = B ({sa[-2]}x{sa[-1]} and {'x'.join(map(str, sb[-2:]))})")
    batch = np.broadcast_shapes(tuple(sa[:-2]), tuple(sb[:-2]))
    return tuple(batch) + tuple(sb[-2:]), da


def _solve_grad(b, g, xs, out):
    a, bm = xs
    gb = b.linalg_solve(_mT(b, a), g)
    ga = b.neg(b.matmul(gb, _mT(b, out)))
    return b.sum_to(ga, tuple(a.shape)), b.sum_to(gb, tuple(bm.shape))


register(OpDef("linalg_solve", "other", _solve_impl, infer=_solve_infer, saves=(0, -1),
               grad=_solve_grad, backward_name="LinalgSolveExBackward0",
               doc="X with A X = B (B as (..., n, k) matrices)"))


# ---- cholesky ----------------------------------------------------------------------------
def _cholesky_impl(a):
    try:
        return np.linalg.cholesky(a)
    except np.linalg.LinAlgError:
        raise LinAlgError("linalg.cholesky: The factorization could not be completed because "
                          "the input is not positive-definite.") from None


def _chol_infer(specs, attrs):
    shape, d = specs[0]
    _square(shape, "cholesky")
    _float_check(d, "cholesky")
    return tuple(shape), d


def _cholesky_grad(b, g, xs, out):
    # torch: gA = L^{-H} phi(L^H gL) L^{-1}, phi = tril with a halved diagonal, symmetrised
    lo = out
    lt = _mT(b, lo)
    phi = b.matmul(lt, g)
    phi = b.sub(b.tril(phi, diagonal=0), b.mul(b.mul(phi, _eye_like(
        b, b.sum(phi, dims=(len(phi.shape) - 1,), keepdim=False), phi.shape[-1])), 0.5))
    linv = b.linalg_inv(lo)
    ga = b.matmul(_mT(b, linv), b.matmul(phi, linv))
    return (_lower_sym(b, ga),)


register(OpDef("linalg_cholesky", "other", _cholesky_impl, infer=_chol_infer, saves=(-1,),
               grad=_cholesky_grad, backward_name="LinalgCholeskyExBackward0",
               doc="lower Cholesky factor of a symmetric positive-definite matrix"))


# ---- symmetric eigendecomposition ----------------------------------------------------------
def _sign_of_columns(v):
    """+-1 per column: the sign of its largest-magnitude entry (vectors are defined up to
    sign; this fixes one, so results are deterministic)."""
    idx = np.argmax(np.abs(v), axis=-2)[..., None, :]
    s = np.sign(np.take_along_axis(v, idx, axis=-2))
    return np.where(s == 0, 1, s).astype(v.dtype)


def _lower_sym(b, x):
    """The derivative of a function of A's lower triangle, from its gradient ``x`` with
    respect to the symmetric matrix: the off-diagonal pairs folded into the lower triangle
    (the same chain rule result as torch's symmetric gradient for symmetric inputs)."""
    xs = b.add(x, _mT(b, x))
    return b.sub(b.tril(xs, diagonal=0), b.mul(b.sub(b.tril(xs, diagonal=0),
                                                     b.tril(xs, diagonal=-1)), 0.5))


def _eigh_impl(a):
    w, v = np.linalg.eigh(a)
    v = v * _sign_of_columns(v)
    out = np.empty(a.shape[:-2] + (a.shape[-1] + 1, a.shape[-1]), a.dtype)
    out[..., 0, :] = w
    out[..., 1:, :] = v
    return out


def _eigh_infer(specs, attrs):
    shape, d = specs[0]
    _square(shape, "eigh")
    _float_check(d, "eigh")
    return tuple(shape[:-2]) + (shape[-1] + 1, shape[-1]), d


def _eigh_grad(b, g, xs, out):
    n = out.shape[-1]
    nb = len(out.shape) - 2
    pre = (("s", None, None, None),) * nb
    lam = b.getitem(out, index=pre + (("i", 0),))
    vec = b.getitem(out, index=pre + (("s", 1, n + 1, 1),))
    gl = b.getitem(g, index=pre + (("i", 0),))
    gv = b.getitem(g, index=pre + (("s", 1, n + 1, 1),))
    eye = _eye_like(b, lam, n)
    vhgv = b.matmul(_mT(b, vec), gv)
    vhgv = b.mul(b.sub(vhgv, _mT(b, vhgv)), 0.5)
    e = b.sub(_row(b, lam), _col(b, lam))  # E_ij = lam_j - lam_i
    e = b.where(b.gt(eye, 0.5), 1.0, e)
    inner = b.add(b.mul(b.div(vhgv, e), b.rsub(eye, 1.0)), b.mul(_col(b, gl), eye))
    return (_lower_sym(b, b.matmul(vec, b.matmul(inner, _mT(b, vec)))),)


register(OpDef("linalg_eigh", "other", _eigh_impl, infer=_eigh_infer, saves=(-1,),
               grad=_eigh_grad, backward_name="LinalgEighBackward0",
               doc="eigenvalues (ascending) and eigenvectors of a symmetric matrix (lower "
                   "triangle), packed (..., n+1, n)"))


# ---- singular value decomposition ---------------------------------------------------------
def _svd_impl(a):
    u, s, vh = np.linalg.svd(a, full_matrices=False)
    sg = _sign_of_columns(u)
    u = u * sg
    vh = vh * np.swapaxes(sg, -1, -2)
    m, n = a.shape[-2:]
    k = min(m, n)
    out = np.empty(a.shape[:-2] + (m + 1 + n, k), a.dtype)
    out[..., :m, :] = u
    out[..., m, :] = s
    out[..., m + 1:, :] = np.swapaxes(vh, -1, -2)
    return out


def _svd_infer(specs, attrs):
    shape, d = specs[0]
    if len(shape) < 2:
        raise RuntimeError("linalg.svd: The input tensor A must have at least 2 dimensions.")
    _float_check(d, "svd")
    m, n = shape[-2:]
    return tuple(shape[:-2]) + (m + 1 + n, min(m, n)), d


def _svd_grad(b, g, xs, out):
    (a,) = xs
    m, n = a.shape[-2:]
    k = min(m, n)
    nb = len(out.shape) - 2
    pre = (("s", None, None, None),) * nb
    u = b.getitem(out, index=pre + (("s", 0, m, 1),))
    s = b.getitem(out, index=pre + (("i", m),))
    v = b.getitem(out, index=pre + (("s", m + 1, m + 1 + n, 1),))
    gu = b.getitem(g, index=pre + (("s", 0, m, 1),))
    gs = b.getitem(g, index=pre + (("i", m),))
    gv = b.getitem(g, index=pre + (("s", m + 1, m + 1 + n, 1),))
    eye = _eye_like(b, s, k)
    s2 = b.mul(s, s)
    e = b.sub(_row(b, s2), _col(b, s2))
    e = b.where(b.gt(eye, 0.5), 1.0, e)
    uhgu = b.matmul(_mT(b, u), gu)
    uhgu = b.sub(uhgu, _mT(b, uhgu))
    vhgv = b.matmul(_mT(b, v), gv)
    vhgv = b.sub(vhgv, _mT(b, vhgv))
    ret = b.div(b.add(b.mul(uhgu, _row(b, s)), b.mul(_col(b, s), vhgv)), e)
    ret = b.add(b.mul(ret, b.rsub(eye, 1.0)), b.mul(_col(b, gs), eye))
    vt = _mT(b, v)
    if m > k:
        gusinv = b.div(gu, _row(b, s))
        ga = b.add(b.matmul(u, ret), b.sub(gusinv, b.matmul(u, b.matmul(_mT(b, u), gusinv))))
        ga = b.matmul(ga, vt)
    elif n > k:
        sinvgvh = b.div(_mT(b, gv), _col(b, s))
        ga = b.add(b.matmul(ret, vt), b.sub(sinvgvh, b.matmul(b.matmul(sinvgvh, v), vt)))
        ga = b.matmul(u, ga)
    else:
        ga = b.matmul(u, b.matmul(ret, vt))
    return (ga,)


register(OpDef("linalg_svd", "other", _svd_impl, infer=_svd_infer, saves=(0, -1),
               grad=_svd_grad, backward_name="LinalgSvdBackward0",
               doc="reduced SVD packed (..., m+1+n, k) = [U; S; V]"))
