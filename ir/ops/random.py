"""Random draws as ops: a seed in, a tensor of samples out.

The seed is a 0-d int64 tensor drawn from the user's Generator. Eager code
draws it when the op runs; a compiled plan has it as an input drawn again from
the same Generator on every call, in program order. So a plan gives fresh
samples each call, advances the Generator exactly as eager code does, and
(for the same seed) draws the very same numbers as eager code: compiled
training with dropout equals eager training.
"""
from __future__ import annotations

import numpy as np

from .. import dtypes as dt
from ..registry import OpDef, register


def _stream(seed) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(int(np.asarray(seed))))


def _float_kind(dtype: dt.DType):
    # NumPy draws float32 or float64; float16/bfloat16 round from float32
    return np.float64 if dtype is dt.float64 else np.float32


def _uniform_impl(seed, shape, dtype):
    return _stream(seed).random(shape, dtype=_float_kind(dtype)).astype(dtype.np, copy=False)


def _normal_impl(seed, shape, dtype):
    return _stream(seed).standard_normal(shape, dtype=_float_kind(dtype)).astype(
        dtype.np, copy=False)


def _infer(specs, attrs):
    (sshape, sdtype), = specs
    if tuple(sshape) != () or sdtype is not dt.int64:
        raise TypeError("random ops take a 0-d int64 seed")
    return tuple(attrs["shape"]), attrs["dtype"]


register(OpDef("rand_uniform", "other", _uniform_impl, infer=_infer, attrs=("shape", "dtype"),
               doc="samples from U[0, 1) of the given shape from a PCG64 stream seeded by "
                   "the input"))
register(OpDef("rand_normal", "other", _normal_impl, infer=_infer, attrs=("shape", "dtype"),
               doc="standard normal samples of the given shape from a PCG64 stream seeded by "
                   "the input"))
