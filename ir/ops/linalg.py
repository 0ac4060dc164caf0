"""Matrix products (BLAS through NumPy eagerly)."""
from __future__ import annotations

import math

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register
from ..shapes import broadcast_shapes


def matmul_shape(a, b):
    """torch.matmul's result shape, with torch's error for a mismatch."""
    if len(a) == 0 or len(b) == 0:
        raise RuntimeError("matmul: both arguments to matmul need to be at least 1D, but they are "
                           f"{len(a)}D and {len(b)}D")
    a2 = (1,) + tuple(a) if len(a) == 1 else tuple(a)
    b2 = tuple(b) + (1,) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        sa = "x".join(map(str, a2[-2:])) if len(a) > 1 else f"1x{a[0]}"
        sb = "x".join(map(str, b2[-2:]))
        raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({sa} and {sb})"
                           f" [matmul of {tuple(a)} and {tuple(b)}]")
    batch = broadcast_shapes(a2[:-2], b2[:-2], op="matmul")
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def _matmul_infer(specs, attrs):
    (sa, da), (sb, db) = specs
    if da is not db:
        raise RuntimeError(f"expected m1 and m2 to have the same dtype, but got: {da.name} != "
                           f"{db.name}")
    if da is dt.bool_:
        raise RuntimeError("matmul: not implemented for 'Bool'")
    return matmul_shape(sa, sb), da


def _mT(b, x):
    n = len(x.shape)
    return b.permute(x, dims=tuple(range(n - 2)) + (n - 1, n - 2))


def _matmul_grad(b, g, xs, out):
    a, m = xs
    # an eager builder says which inputs need a gradient (``needs``): a GEMM for an input
    # that needs none (the first layer's activations) is skipped; a graph builder has no
    # ``needs`` and an unused result is removed as dead code
    needs = getattr(b, "needs", None)
    want_a = needs is None or needs[0]
    want_m = needs is None or needs[1]
    if len(a.shape) > 2 and len(m.shape) == 2:
        # x [*, K] @ W [K, N] (a Linear): the weight gradient summed over every leading
        # dim is one [K, R] @ [R, N] GEMM of the stacked rows, not one GEMM per leading
        # index and a reduction of their [*, K, N] results
        K, N = m.shape
        R = math.prod(a.shape[:-1])
        ga = b.matmul(g, _mT(b, m)) if want_a else None
        gm = None
        if want_m:
            rows = b.reshape(a, shape=(R, K))
            gm = b.matmul(_mT(b, rows), b.reshape(g, shape=(R, N)))
        return ga, gm
    a2 = a if len(a.shape) > 1 else b.reshape(a, shape=(1,) + tuple(a.shape))
    m2 = m if len(m.shape) > 1 else b.reshape(m, shape=tuple(m.shape) + (1,))
    g2 = g
    if len(a.shape) == 1:
        g2 = b.reshape(g2, shape=tuple(g2.shape[:-1]) + (1,) + tuple(g2.shape[-1:]))
    if len(m.shape) == 1:
        g2 = b.reshape(g2, shape=tuple(g2.shape) + (1,))
    ga = gm = None
    if want_a:
        ga = b.matmul(g2, _mT(b, m2))
        ga = b.reshape(b.sum_to(ga, a2.shape), shape=tuple(a.shape))
    if want_m:
        gm = b.matmul(_mT(b, a2), g2)
        gm = b.reshape(b.sum_to(gm, m2.shape), shape=tuple(m.shape))
    return ga, gm


def matmul_flops(n) -> int:
    """Multiplies and adds of a ``matmul`` node: 2 * (output elements) * K (the
    profiler's, the benchmark's and the plan's pairing count it so)."""
    a = n.inputs[0]
    return 2 * n.out.numel * (a.shape[-1] if a.ndim else 1)


def gemm_swaps_operands(a, b) -> bool:
    """Whether the 2-D float GEMM ``a (M, K) @ b (K, N)``, ``a`` C-contiguous and ``b`` the
    transpose of a C-contiguous ``(N, K)`` array (a weight gradient ``g @ cols^T``), with a
    long reduction and N > M, runs faster as ``(b^T @ a^T)^T`` (the product computed
    transposed, then copied): OpenBLAS ran the swapped form 1.3-2x faster on one and two
    threads (conv2's weight gradient in the MNIST CNN, 64 x 36864 @ 36864 x 289: ~8.5 ->
    ~5.7 ms; 16 x 6272 @ 6272 x 73: 0.29 -> 0.14 ms), and slower where M > N."""
    if a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype or \
            a.dtype not in (np.float32, np.float64):
        return False
    m, k = a.shape
    n = b.shape[1]
    return 1 < m < n and k >= 4 * n and a.flags.c_contiguous and b.T.flags.c_contiguous


def _matmul_impl(a, b):
    if gemm_swaps_operands(a, b):
        return np.ascontiguousarray(np.matmul(b.T, a.T).T)
    if a.ndim > 2 and b.ndim == 2 and a.shape[-1] == b.shape[0]:
        # np.matmul runs one GEMM per leading index of ``a``; the stacked rows are one
        # GEMM (a view where ``a``'s leading dims collapse; BLAS takes a transposed ``b``
        # as it is)
        out = np.matmul(a.reshape(math.prod(a.shape[:-1]), a.shape[-1]), b)
        return out.reshape(a.shape[:-1] + (b.shape[1],))
    return np.asarray(np.matmul(a, b))


register(OpDef("matmul", "matmul", _matmul_impl, infer=_matmul_infer, grad=_matmul_grad,
               saves=(0, 1), backward_name="MmBackward0"))


# ---- einsum ----------------------------------------------------------------
def parse_einsum(eq, nops):
    eq = eq.replace(" ", "")
    if "..." in eq:
        raise NotImplementedError("einsum: ellipsis ('...') is not supported yet")
    if "->" in eq:
        lhs, rhs = eq.split("->")
    else:
        lhs = eq
        letters = [c for c in lhs.replace(",", "")]
        rhs = "".join(sorted(c for c in set(letters) if letters.count(c) == 1))
    ins = lhs.split(",")
    if len(ins) != nops:
        raise RuntimeError(f"einsum(): {len(ins)} operands in the equation but {nops} given")
    return ins, rhs


def _einsum_infer(specs, attrs):
    ins, rhs = parse_einsum(attrs["equation"], len(specs))
    sizes = {}
    d = specs[0][1]
    for sub, (shape, sd) in zip(ins, specs):
        d = dt.promote_types(d, sd)
        if len(sub) != len(shape):
            raise RuntimeError(f"einsum(): the number of subscripts in '{sub}' does not match the "
                               f"number of dimensions ({len(shape)}) of operand {tuple(shape)}")
        for c, n in zip(sub, shape):
            if c in sizes and sizes[c] != n and 1 not in (n, sizes[c]):
                raise RuntimeError(f"einsum(): subscript {c} has size {n} which does not match "
                                   f"size {sizes[c]} seen before")
            sizes[c] = max(sizes.get(c, 1), n)
    return tuple(sizes[c] for c in rhs), d


def _einsum_grad(b, g, xs, out, equation):
    ins, rhs = parse_einsum(equation, len(xs))
    grads = []
    for i, sub in enumerate(ins):
        if len(set(sub)) != len(sub):
            raise NotImplementedError(f"einsum: gradient for repeated subscripts in '{sub}'")
        others = [(s, x) for j, (s, x) in enumerate(zip(ins, xs)) if j != i]
        avail = set(rhs) | {c for s, _ in others for c in s}
        kept = "".join(c for c in sub if c in avail)
        eq = ",".join([rhs] + [s for s, _ in others]) + "->" + kept
        gi = b.einsum(g, *[x for _, x in others], equation=eq)
        if kept != sub:
            shape = tuple(xs[i].shape[k] if c in kept else 1 for k, c in enumerate(sub))
            gi = b.expand(b.reshape(gi, shape=shape), shape=tuple(xs[i].shape))
        grads.append(gi)
    return tuple(grads)


register(OpDef("einsum", "matmul", lambda *xs, equation: np.asarray(np.einsum(equation, *xs)),
               infer=_einsum_infer, grad=_einsum_grad, attrs=("equation",),
               saves=tuple(range(16))))
