"""Random draws as ops: a seed in, a tensor of samples out.

The seed is a 0-d int64 tensor drawn from the user's Generator. Eager code
draws it when the op runs; a compiled plan has it as an input drawn again from
the same Generator on every call, in program order. So a plan gives fresh
samples each call, advances the Generator exactly as eager code does, and
(for the same seed) draws the very same numbers as eager code: compiled
training with dropout equals eager training.

``rand_uniform``'s samples come from Philox4x32-10 (Salmon et al., "Parallel random numbers:
as easy as 1, 2, 3", 2011; the generator of cuRAND and of PyTorch's CUDA ops)
in counter mode: block ``b`` of four 32-bit words is the cipher of counter
``(b mod 2**32, b >> 32, 0, 0)`` under the key ``(seed mod 2**32, seed >> 32)``.
Every element depends only on (seed, its index), so a kernel draws any part of
a tensor on any thread with the same result as this NumPy reference
(``kernels.cpu.random_native`` serves float32/float64 natively):

- uniform float32: element ``i`` is word ``i % 4`` of block ``i // 4``, top 24
  bits times 2**-24;
- uniform float64: element ``i`` takes words ``2(i % 2)``, ``2(i % 2) + 1`` of
  block ``i // 2``: 27 + 26 bits times 2**-53;
float16/bfloat16 samples are the float32 ones rounded.

``rand_normal`` draws NumPy's PCG64 stream seeded by the seed (its ziggurat sampler
is 1.5-3x faster here than Box-Muller over Philox in a Numba kernel, whose log and
sin/cos calls do not vectorise).
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register

PHILOX_M = (0xD2511F53, 0xCD9E8D57)
PHILOX_W = (0x9E3779B9, 0xBB67AE85)
_MASK = np.uint64(0xFFFFFFFF)


def philox_blocks(seed: int, nblocks: int) -> tuple[np.ndarray, ...]:
    """The four words (uint64 arrays holding 32-bit values) of blocks 0..nblocks-1."""
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    b = np.arange(nblocks, dtype=np.uint64)
    c0, c1 = b & _MASK, b >> np.uint64(32)
    c2 = np.zeros(nblocks, np.uint64)
    c3 = np.zeros(nblocks, np.uint64)
    k0, k1 = seed & 0xFFFFFFFF, seed >> 32
    m0, m1 = np.uint64(PHILOX_M[0]), np.uint64(PHILOX_M[1])
    s32 = np.uint64(32)
    for _ in range(10):
        p0 = m0 * c0
        p1 = m1 * c2
        c0, c1, c2, c3 = ((p1 >> s32) ^ c1 ^ np.uint64(k0), p1 & _MASK,
                          (p0 >> s32) ^ c3 ^ np.uint64(k1), p0 & _MASK)
        k0 = (k0 + PHILOX_W[0]) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W[1]) & 0xFFFFFFFF
    return c0, c1, c2, c3


def _u53(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    return ((hi >> np.uint64(5)).astype(np.float64) * 67108864.0
            + (lo >> np.uint64(6)).astype(np.float64)) * (1.0 / 9007199254740992.0)


def _uniform_np(seed, n: int, f64: bool) -> np.ndarray:
    if f64:
        w = philox_blocks(seed, (n + 1) // 2)
        u = np.empty(2 * len(w[0]), np.float64)
        u[0::2] = _u53(w[0], w[1])
        u[1::2] = _u53(w[2], w[3])
        return u[:n]
    w = philox_blocks(seed, (n + 3) // 4)
    u = np.empty((len(w[0]), 4), np.float32)
    for j in range(4):
        u[:, j] = (w[j] >> np.uint64(8)).astype(np.float64) * (1.0 / 16777216.0)
    return u.reshape(-1)[:n]


def _size(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def _uniform_impl(seed, shape, dtype):
    u = _uniform_np(int(np.asarray(seed)), _size(shape), dtype is dt.float64)
    return u.reshape(shape).astype(dtype.np, copy=False)


def _normal_impl(seed, shape, dtype):
    rng = np.random.Generator(np.random.PCG64(int(np.asarray(seed))))
    return rng.standard_normal(shape, dtype=np.float64 if dtype is dt.float64 else
                               np.float32).astype(dtype.np, copy=False)


def _infer(specs, attrs):
    (sshape, sdtype), = specs
    if tuple(sshape) != () or sdtype is not dt.int64:
        raise TypeError("random ops take a 0-d int64 seed")
    return tuple(attrs["shape"]), attrs["dtype"]


register(OpDef("rand_uniform", "other", _uniform_impl, infer=_infer, attrs=("shape", "dtype"),
               doc="samples from U[0, 1) of the given shape from the Philox4x32-10 stream "
                   "of the seed input"))
register(OpDef("rand_normal", "other", _normal_impl, infer=_infer, attrs=("shape", "dtype"),
               doc="standard normal samples of the given shape from NumPy's PCG64 stream "
                   "seeded by the seed input"))
