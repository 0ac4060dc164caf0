"""Eager activations (and ``where``) served by generated single-op kernels.

The NumPy implementations of GELU, erf, sigmoid, SiLU, softplus, ELU, leaky ReLU and
GELU's backward take several passes over memory each (``np_erf`` alone is about ten), and
dominated eager training steps of small transformers. Importing this module serves those
ops through ``OpDef.use_native`` from the kernel compiled for a one-statement elementwise
``KernelSpec`` (the op's registry ``expr``, the same code a fused plan would run), one
kernel per (op, dtype, attributes), compiled on first use and kept in the disk cache, so a
warm process never imports Numba. Calls run on threads above ``PARALLEL_THRESHOLD`` as
plan kernels do.

``where`` (bool condition, float arrays or one Python number) is served the same way
(``_NativeWhere``): ``np.where`` costs ~1.7 ns per element, a ReLU gradient's whole pass.

``op.reference`` (the NumPy implementation) serves everything else: arrays below
``MIN_SIZE`` (where the ~5-10 us kernel call costs more than NumPy), dtypes other than
those in ``SERVED`` (float16/bfloat16/integers, and float64 where Numba's scalar libm calls
lose to NumPy's SIMD loops: tanh and exp are ~10x slower per element), Python scalar
operands, byte-swapped or misaligned arrays, any kernel that cannot be built (which
warns once), and a kernel not compiled yet while ``compile()`` traces a function
(``kernels.cpu.defer_compile``: the plan fuses the op into kernels of its own).
float32 kernels use ``kernels.cpu.fastmath`` (polynomial exp/tanh/erf), so they agree
with the reference to ~1e-6 relative; float64 to a few ulps.
"""
from __future__ import annotations

import inspect
import os
import warnings

import numpy as np

from ir.registry import REGISTRY
from kernels.spec import KernelSpec, Phase, Stmt, attrs_tuple, const

from . import compile_kernel
from . import defer_call as _defer

__all__ = ["SERVED", "MIN_SIZE", "set_min_size", "served"]

_F32 = ("float32",)
_BOTH = ("float32", "float64")

# (op, its "approximate" attribute or None) -> (dtypes a kernel serves, size tier).
# Measured on 128K elements, one thread (kernel vs NumPy): float32 gelu 7x, gelu tanh 2x,
# gelu_backward 5x/14x, erf 100x, sigmoid 25x, elu 6x, leaky_relu 30x, silu and softplus
# 1.2-1.3x; float64 gelu/erf/gelu_backward ~8x (the reference is math.erf per element),
# sigmoid 4x, leaky_relu 12x, while float64 gelu tanh, silu, softplus and elu were 1.5-5x
# slower (libm tanh/exp per element against NumPy's AVX-512 loops). tanh is not served:
# np.tanh is one SIMD pass, as fast as the kernel in float32 and 10x faster in float64.
# Tier 1 ops (many NumPy passes, or math.erf per element) beat NumPy from a few hundred
# elements; tier 16 ops (one to three cheap SIMD passes) from ~4-16K.
SERVED: dict[tuple[str, str | None], tuple[tuple[str, ...], int]] = {
    ("gelu", "none"): (_BOTH, 1),
    ("gelu", "tanh"): (_F32, 16),
    ("gelu_backward", "none"): (_BOTH, 1),
    ("gelu_backward", "tanh"): (_F32, 1),
    ("erf", None): (_BOTH, 1),
    ("sigmoid", None): (_BOTH, 1),
    ("leaky_relu", None): (_BOTH, 16),
    ("silu", None): (_F32, 16),
    ("softplus", None): (_F32, 16),
    ("elu", None): (_F32, 16),
}

# Elements below which the reference runs, times the op's tier. A kernel call costs
# ~7 us here (argument marshalling and the ctypes call); measured crossovers: erf, gelu,
# gelu_backward below 512 elements, sigmoid ~512, softplus ~2K, elu/leaky_relu ~4K, gelu
# tanh ~8K, silu ~16K.
MIN_SIZE = int(os.environ.get("GCOMPILE_EAGER_EW_MIN", 1024))

_MISSING = object()
_FAILED: set[tuple] = set()


def set_min_size(n: int) -> int:
    """Set ``MIN_SIZE`` (elements); returns the previous value (tests drive the kernels
    with small arrays through it)."""
    global MIN_SIZE
    old = MIN_SIZE
    MIN_SIZE = int(n)
    return old


def _spec(op: str, dtype: str, inputs: tuple[str, ...], args: tuple, attrs: dict
          ) -> KernelSpec:
    """One ``op`` statement over ``args`` (input refs or constants) computed in ``dtype``."""
    st = Stmt("t0", op, args, attrs_tuple(attrs), dtype)
    return KernelSpec(inputs, ((dtype, "full"),),
                      (Phase("map", (st,), stores=((0, ("v", "t0")),)),), "elementwise")


def _warn_failed(key: tuple, e: Exception) -> None:
    """Warn once per (op, dtype, ...) that its kernel could not be built or run."""
    if key not in _FAILED:
        _FAILED.add(key)
        warnings.warn(f"gcompile: eager kernel for {key[0]} ({key[1]}) could not be built "
                      f"({type(e).__name__}: {e}); using the NumPy implementation",
                      RuntimeWarning, stacklevel=4)


def _launch(k, ins: list, shape: tuple, dtype: np.dtype) -> np.ndarray | None:
    """Run ``k`` over ``ins`` (broadcast to ``shape``) into a new array; the output takes
    the layout of a full-shape input (as NumPy's order="K" does), so a transposed
    activation stays transposed and every operand walks in order. None (the caller runs
    the reference) where the call would compile a variant for a trace alone
    (``kernels.cpu.defer_call``)."""
    like = next((b for b in ins if b.shape == shape and b.dtype == dtype), None)
    out = np.empty_like(like) if like is not None else np.empty(shape, dtype)
    ins = [b if b.shape == shape else np.broadcast_to(b, shape) for b in ins]
    if _defer(k, ins, [out]):
        return None
    k(ins, [out])
    return out


class _Native:
    """``impl`` for one op: the kernel for the call's (dtype, attributes) when it serves
    them, else the reference."""

    def __init__(self, name: str) -> None:
        op = REGISTRY[name]
        self.name = name
        self.ref = op.reference if op.reference is not None else op.impl
        self.nin = 2 if op.category == "binary" else 1
        self.attr_names = tuple(op.attrs)
        params = inspect.signature(self.ref).parameters
        self.defaults = {k: params[k].default for k in self.attr_names
                         if k in params and params[k].default is not inspect.Parameter.empty}
        self.kernels: dict = {}
        self.__name__ = f"{name}_native"
        self.__doc__ = f"{name}: a generated kernel for large float arrays, else NumPy."

    def kernel(self, dtype: np.dtype, attrs: dict):
        """(compiled kernel, size tier, attributes with defaults) for these dtype and
        attributes, or None (not served)."""
        try:
            key = (dtype, tuple(attrs.items()))
            k = self.kernels.get(key, _MISSING)
        except TypeError:  # an unhashable attribute: leave it to the reference
            return None
        if k is _MISSING:
            k = self.kernels[key] = self._build(dtype, attrs)
        return k

    def _build(self, dtype: np.dtype, attrs: dict):
        if not dtype.isnative:
            return None
        if any(a not in self.attr_names for a in attrs):
            return None
        full = dict(self.defaults)
        full.update(attrs)
        if set(full) != set(self.attr_names):
            return None
        approx = full.get("approximate")
        if not isinstance(approx, (str, type(None))):
            return None
        for a, v in full.items():
            if a != "approximate" and (isinstance(v, bool) or not isinstance(v, (int, float))):
                return None
        dtypes, tier = SERVED.get((self.name, approx), ((), 0))
        if dtype.name not in dtypes:
            return None
        norm = {a: (v if a == "approximate" else float(v)) for a, v in full.items()}
        if (self.name, dtype.name, tuple(sorted(norm.items()))) in _FAILED:
            return None
        try:
            spec = _spec(self.name, dtype.name, (dtype.name,) * self.nin,
                         tuple(("in", i) for i in range(self.nin)), norm)
            return compile_kernel(spec), tier, norm
        except Exception as e:  # noqa: BLE001 - a spec codegen rejects: the reference serves
            self._failed(dtype, norm, e)
            return None

    def _failed(self, dtype, norm, e) -> None:
        _warn_failed((self.name, dtype.name, tuple(sorted(norm.items()))), e)

    def __call__(self, *arrays, **attrs):
        a = arrays[0]
        if a.__class__ is not np.ndarray or len(arrays) != self.nin:
            return self.ref(*arrays, **attrs)
        dtype = a.dtype
        shape = a.shape
        for b in arrays:
            if b.__class__ is not np.ndarray or b.dtype != dtype or not b.flags.aligned:
                return self.ref(*arrays, **attrs)
            if b.shape != shape:
                try:
                    shape = np.broadcast_shapes(shape, b.shape)
                except ValueError:
                    return self.ref(*arrays, **attrs)  # raises the usual error
        served = self.kernel(dtype, attrs)
        if served is None:
            return self.ref(*arrays, **attrs)
        k, tier, norm = served
        size = 1
        for n in shape:
            size *= n
        if size < MIN_SIZE * tier:
            return self.ref(*arrays, **attrs)
        try:
            out = _launch(k, list(arrays), shape, dtype)
        except Exception as e:  # noqa: BLE001 - a variant that cannot be built (no Numba
            # on a cold cache, a compiler error): warn once, the reference serves from now on
            self._failed(dtype, norm, e)
            self.kernels[(dtype, tuple(attrs.items()))] = None
            return self.ref(*arrays, **attrs)
        return out if out is not None else self.ref(*arrays, **attrs)


class _NativeWhere:
    """``where(cond, x, y)`` for a bool ``cond`` and float32/float64 ``x``/``y`` (arrays of
    one dtype, or one of them a Python number): one kernel pass, where ``np.where`` took
    ~1.7 ns per element (ReLU's gradient ``where(out > 0, g, 0)`` is three of an eager MLP
    step's ops). The selection is exact, so results equal NumPy's bit for bit."""

    __name__ = "where_native"

    def __init__(self) -> None:
        op = REGISTRY["where"]
        self.ref = op.reference if op.reference is not None else op.impl
        self.kernels: dict = {}

    def __call__(self, c, x, y):
        if c.__class__ is not np.ndarray or c.dtype != np.bool_ or not c.flags.aligned:
            return self.ref(c, x, y)
        arrays = [a for a in (x, y) if a.__class__ is np.ndarray]
        if not arrays:
            return self.ref(c, x, y)
        dtype = arrays[0].dtype
        if dtype.name not in _BOTH or not dtype.isnative:
            return self.ref(c, x, y)
        shape = c.shape
        for a in (x, y):
            if a.__class__ is np.ndarray:
                if a.dtype != dtype or not a.flags.aligned:
                    return self.ref(c, x, y)
            elif not (a.__class__ in (int, float) or
                      (isinstance(a, np.generic) and a.dtype == dtype)):
                # bool, complex, numpy scalars of another dtype: NumPy's promotion rules
                return self.ref(c, x, y)
        for a in arrays:
            if a.shape != shape:
                try:
                    shape = np.broadcast_shapes(shape, a.shape)
                except ValueError:
                    return self.ref(c, x, y)
        size = 1
        for n in shape:
            size *= n
        if size < MIN_SIZE:
            return self.ref(c, x, y)
        # constants by their exact bits (-0.0 == 0.0 and nan != nan as dict keys)
        key = (dtype.name, None if x.__class__ is np.ndarray else float(x).hex(),
               None if y.__class__ is np.ndarray else float(y).hex())
        k = self.kernels.get(key, _MISSING)
        if k is _MISSING:
            k = self.kernels[key] = self._build(*key)
        if k is None:
            return self.ref(c, x, y)
        try:
            out = _launch(k, [c] + arrays, shape, dtype)
        except Exception as e:  # noqa: BLE001 - as _Native: warn once, then NumPy
            _warn_failed(("where",) + key, e)
            self.kernels[key] = None
            return self.ref(c, x, y)
        return out if out is not None else self.ref(c, x, y)

    def _build(self, dtype: str, xs, ys):
        if ("where", dtype, xs, ys) in _FAILED:
            return None
        ins = ["bool"]
        args: list = [("in", 0)]
        for v in (xs, ys):
            if v is None:
                args.append(("in", len(ins)))
                ins.append(dtype)
            else:
                args.append(const(float.fromhex(v), dtype))
        try:
            return compile_kernel(_spec("where", dtype, tuple(ins), tuple(args), {}))
        except Exception as e:  # noqa: BLE001 - codegen rejects it: NumPy serves
            _warn_failed(("where", dtype, xs, ys), e)
            return None


def served() -> tuple[str, ...]:
    """The ops this module serves."""
    return tuple(sorted({op for op, _ in SERVED} | {"where"}))


for _name in served():
    if _name in REGISTRY:
        REGISTRY[_name].use_native(_NativeWhere() if _name == "where" else _Native(_name))
