"""Native kernels for ``rand_uniform`` (dropout's masks, ``rand``, ``uniform_``).

They compute the Philox4x32-10 counter stream that ``ir.ops.random`` defines (its NumPy
implementation stays as ``op.reference``): each block of four 32-bit words depends only on
the seed and the block index, so the range of blocks is split over threads and the
result is the same bits as the reference for any split. NumPy's reference takes about
ten array passes per round; the kernel keeps a block in registers, one write per element.
Served: float32 and float64 results (other dtypes round the reference's float32
samples). 262K float32 samples: 0.18 ms on one thread, against 0.75 ms for NumPy's PCG64
and ~4 ms for the NumPy Philox reference (loaded 2-core machine).
"""
from __future__ import annotations

import textwrap

import numpy as np

from ir.ops.random import PHILOX_M, PHILOX_W
from ir.registry import REGISTRY

from . import handwritten as hw

# One Philox4x32-10 block, counter (b mod 2**32, b >> 32, 0, 0), key from the seed, into
# the uint32 words c0..c3 (32x32 -> 64-bit products: LLVM vectorises the loop over blocks).
_BLOCK = f"""
        c0 = np.uint32(b)
        c1 = np.uint32(b >> 32)
        c2 = np.uint32(0)
        c3 = np.uint32(0)
        k0 = key0
        k1 = key1
        for _r in range(10):
            p0 = np.uint64(c0) * np.uint64({PHILOX_M[0]})
            p1 = np.uint64(c2) * np.uint64({PHILOX_M[1]})
            n0 = np.uint32(p1 >> np.uint64(32)) ^ c1 ^ k0
            n2 = np.uint32(p0 >> np.uint64(32)) ^ c3 ^ k1
            c1 = np.uint32(p1)
            c3 = np.uint32(p0)
            c0 = n0
            c2 = n2
            k0 = np.uint32(k0 + np.uint32({PHILOX_W[0]}))
            k1 = np.uint32(k1 + np.uint32({PHILOX_W[1]}))
"""

def _body(per: int, store: str) -> str:
    """A kernel over blocks [lo, hi): full blocks store ``per`` values each without a
    bounds test; the last, partial block stores what fits. ``store`` computes values
    v0..v{per-1} from c0..c3. The loops index a view starting at their first block
    (``o``) from 0: indexing ``out`` from ``lo`` kept LLVM from vectorising them (4.7x
    slower)."""
    compute = textwrap.indent(textwrap.dedent(_BLOCK) + textwrap.dedent(store), " " * 8)
    full = "\n".join(f"        o[i + {j}] = v{j}" for j in range(per))
    tail = "\n".join(f"        if {per} * start + i + {j} < count:\n            o[i + {j}] = v{j}"
                      for j in range(per))
    return f"""
@njit(nogil=True, inline="always")
def body(out, seed, count, lo, hi):
    key0 = np.uint32(seed & 0xFFFFFFFF)
    key1 = np.uint32((seed >> 32) & 0xFFFFFFFF)
    nfull = count // {per}
    start = lo
    o = out[{per} * start:]
    for t in range(min(hi, nfull) - start):
        b = start + t
{compute}
        i = {per} * t
{full}
    start = max(lo, nfull)
    o = out[{per} * start:]
    for t in range(hi - start):
        b = start + t
{compute}
        i = {per} * t
{tail}
"""


_U24 = """
s = 1.0 / 16777216.0
v0 = (c0 >> 8) * s
v1 = (c1 >> 8) * s
v2 = (c2 >> 8) * s
v3 = (c3 >> 8) * s
"""

_U53 = """
s = 1.0 / 9007199254740992.0
v0 = ((c0 >> 5) * 67108864.0 + (c1 >> 6)) * s
v1 = ((c2 >> 5) * 67108864.0 + (c3 >> 6)) * s
"""

_SOURCES = {"float32": (4, _U24), "float64": (2, _U53)}


def _kernel(dtype: str):
    per, store = _SOURCES[dtype]
    params = (("out", "out", dtype), ("seed", "int", None), ("count", "int", None))
    return hw.kernel(f"rand_uniform_{dtype}", params, _body(per, store), op="rand_uniform")


def rand_uniform(seed, shape, dtype, out=None):
    name = np.dtype(dtype.np).name
    if name not in _SOURCES:
        return hw.into(REGISTRY["rand_uniform"].reference(seed, shape, dtype), out)
    res = hw.result(shape, np.dtype(name), out)
    n = res.size
    if n:
        per = _SOURCES[name][0]
        _kernel(name)(res.reshape(-1), int(np.asarray(seed)), n, n=(n + per - 1) // per,
                      work=n)
    return res


NATIVE = {"rand_uniform": rand_uniform}


def register() -> None:
    """Serve ``rand_uniform`` from the kernels (once)."""
    hw.serve(NATIVE)


register()
