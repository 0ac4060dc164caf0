"""Dtypes and torch's type-promotion and casting rules: the one place they are written.

Promotion (``promote_types``, ``result_type``, and the dtype a Python scalar or Python
data takes), casting (``can_cast``, how a Python number is converted to an op's dtype),
and where arithmetic runs (``compute_type``: bfloat16 is a storage type computed in
float32; ``float_type``: what an int -> float op gives). ``ir.registry``'s
``compute_dtype``/``output_dtype`` apply them per op; the eager dispatcher, the functions
and ``gcompile.result_type``/``can_cast`` call them rather than restating them.

Lives in ``ir`` because graph values carry dtypes; ``gcompile`` re-exports the
dtype objects as ``gcompile.float32`` etc.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import ml_dtypes
import numpy as np

__all__ = [
    "DType", "float16", "bfloat16", "float32", "float64", "int8", "int16",
    "int32", "int64", "uint8", "bool_", "all_dtypes", "from_numpy", "as_dtype",
    "promote_types", "result_type", "get_default_dtype", "set_default_dtype", "finfo", "iinfo",
    "category", "can_cast", "scalar_dtype", "category_dtype", "float_type", "compute_type",
    "scalar_converter",
]


class DType:
    """A tensor element type; prints like torch (``torch.float32``)."""

    __slots__ = ("name", "np", "itemsize", "is_floating_point", "is_signed", "kind", "_rank")

    def __init__(self, name: str, np_dtype: np.dtype, kind: str, rank: int) -> None:
        self.name = name
        self.np = np.dtype(np_dtype)
        self.itemsize = self.np.itemsize
        self.kind = kind  # 'b' bool, 'i' integer, 'f' floating
        self.is_floating_point = kind == "f"
        self.is_signed = kind == "f" or (kind == "i" and self.np.kind == "i")
        self._rank = rank

    def __repr__(self) -> str:
        return f"torch.{self.name}"

    def __reduce__(self):
        return (as_dtype, (self.name,))

    @property
    def is_complex(self) -> bool:
        return False

    @property
    def scalar_name(self) -> str:
        """torch's ScalarType name, used in error messages ('Float', 'Long')."""
        return _SCALAR_NAMES[self.name]

    def to_json(self) -> str:
        return self.name


bool_ = DType("bool", np.bool_, "b", 0)
uint8 = DType("uint8", np.uint8, "i", 1)
int8 = DType("int8", np.int8, "i", 1)
int16 = DType("int16", np.int16, "i", 2)
int32 = DType("int32", np.int32, "i", 3)
int64 = DType("int64", np.int64, "i", 4)
float16 = DType("float16", np.float16, "f", 5)
# bfloat16 is stored as ml_dtypes' NumPy type; it ranks beside float16 (neither holds
# the other: together they promote to float32) and computes in float32 (the eager
# dispatcher casts around every op that is not a view)
bfloat16 = DType("bfloat16", ml_dtypes.bfloat16, "f", 5)
float32 = DType("float32", np.float32, "f", 6)
float64 = DType("float64", np.float64, "f", 7)

all_dtypes = (bool_, uint8, int8, int16, int32, int64, float16, bfloat16, float32, float64)
_BY_NP = {d.np: d for d in all_dtypes}
_BY_NAME = {d.name: d for d in all_dtypes}
_BY_NAME.update({"float": float32, "double": float64, "half": float16, "long": int64,
                 "int": int32, "short": int16, "bool_": bool_})

_SCALAR_NAMES = {"bool": "Bool", "uint8": "Byte", "int8": "Char", "int16": "Short",
                 "int32": "Int", "int64": "Long", "float16": "Half", "float32": "Float",
                 "float64": "Double", "bfloat16": "BFloat16"}
_default = [float32]


def get_default_dtype() -> DType:
    return _default[0]


# called after the default dtype changes (the eager dispatcher drops cached dtype plans)
on_default_dtype_change: list = []


def set_default_dtype(d: DType) -> None:
    d = as_dtype(d)
    if d not in (float32, float64, float16, bfloat16):
        raise TypeError(f"only floating-point types are supported as the default type, got {d}")
    _default[0] = d
    for fn in on_default_dtype_change:
        fn()


def from_numpy(npd) -> DType:
    try:
        return _BY_NP[np.dtype(npd)]
    except (KeyError, TypeError):
        raise TypeError(
            f"can't convert np.ndarray of type {np.dtype(npd)}. The only supported types are: "
            "float64, float32, float16, bfloat16 (ml_dtypes), int64, int32, int16, int8, uint8, "
            "and bool.") from None


def as_dtype(d) -> DType:
    """Accept a DType, a name, a numpy dtype or a Python type."""
    if isinstance(d, DType):
        return d
    if d is float:
        return float64 if False else get_default_dtype()
    if d is int:
        return int64
    if d is bool:
        return bool_
    if isinstance(d, str):
        key = d.replace("torch.", "")
        if key in _BY_NAME:
            return _BY_NAME[key]
    try:
        return from_numpy(d)
    except TypeError:
        raise TypeError(f"unknown dtype {d!r}") from None


def promote_types(a: DType, b: DType) -> DType:
    """torch.promote_types: the smallest type both convert to safely."""
    if a is b:
        return a
    if a.kind == "f" or b.kind == "f":
        if a.kind != "f":
            return b
        if b.kind != "f":
            return a
        if a._rank == b._rank:  # float16 and bfloat16: neither holds the other
            return float32
        return a if a._rank >= b._rank else b
    if a.kind == "b":
        return b
    if b.kind == "b":
        return a
    # both integers
    if a is uint8 or b is uint8:
        other = b if a is uint8 else a
        if other is int8:
            return int16
        return other if other is not uint8 else uint8
    return a if a._rank >= b._rank else b


_CAT = {"b": 0, "i": 1, "f": 2}


def category(d: DType) -> int:
    """0 bool, 1 integer, 2 floating: the order promotion and casting compare."""
    return _CAT[d.kind]


def can_cast(from_: DType, to: DType) -> bool:
    """torch.can_cast: casting may not lower the category (float -> int, int -> bool);
    an in-place op whose result would have to do so raises."""
    return _CAT[from_.kind] <= _CAT[to.kind]


def scalar_dtype(value) -> DType:
    """The dtype torch gives a Python scalar: bool, int64, or the default float."""
    if isinstance(value, bool):
        return bool_
    if isinstance(value, int):
        return int64
    if isinstance(value, float):
        return get_default_dtype()
    raise TypeError(f"unsupported scalar operand {value!r} of type {type(value).__name__}")


def category_dtype(cat: int) -> DType:
    """The dtype of a Python scalar of category ``cat``: bool, int64, the default float
    (torch.tensor's dtype for Python data of that highest category)."""
    return (bool_, int64, get_default_dtype())[cat]


def float_type(d: DType) -> DType:
    """The dtype an op that computes in floating point gives for ``d`` operands: ``d``
    itself when floating, else the default float (torch's int -> float promotion)."""
    return d if d.kind == "f" else get_default_dtype()


def compute_type(d: DType) -> DType:
    """The dtype arithmetic on ``d`` runs in: float32 for bfloat16 (a storage type, as
    on torch's CPU; results are rounded back), ``d`` otherwise."""
    return float32 if d is bfloat16 else d


def scalar_converter(d: DType) -> Callable[[Any], Any]:
    """How a Python number becomes an operand of dtype ``d``: a float type's constructor,
    or for integers a conversion that wraps around like torch (uint8 + 1000 is
    uint8 + 232) where NumPy would raise."""
    if d.kind == "f":
        return d.np.type
    npd = d.np

    def cast(v):
        return np.array(v).astype(npd)[()]
    return cast


def result_type(*operands) -> DType:
    """Result dtype of an elementwise op, torch style.

    Each operand is ``(dtype, ndim)`` for a tensor, or a Python scalar. Tensors
    with dims beat 0-d tensors, which beat Python scalars, unless the weaker
    group is of a higher category (bool < int < float).
    """
    dim_t = zero_t = scal = None
    for op in operands:
        if isinstance(op, tuple):
            d, nd = op
            if nd > 0:
                dim_t = d if dim_t is None else promote_types(dim_t, d)
            else:
                zero_t = d if zero_t is None else promote_types(zero_t, d)
        else:
            sd = scalar_dtype(op)
            if scal is None or _CAT[sd.kind] > _CAT[scal.kind]:
                scal = sd
    result = None
    for group in (dim_t, zero_t, scal):
        if group is None:
            continue
        if result is None:
            result = group
        elif _CAT[group.kind] > _CAT[result.kind]:
            # a higher category in a weaker group: take its default for that category
            if group.kind == "f" and group is not zero_t:
                result = get_default_dtype()
            else:
                result = group
    if result is None:
        raise TypeError("result_type needs at least one operand")
    return result


class finfo:  # noqa: N801 - torch's name
    """torch.finfo: the limits of a floating-point dtype (the default dtype when omitted),
    read from NumPy's (ml_dtypes' for bfloat16) so they are the storage type's own."""

    __slots__ = ("bits", "eps", "max", "min", "tiny", "smallest_normal", "resolution", "dtype")

    def __init__(self, type=None) -> None:  # noqa: A002 - torch's argument name
        d = get_default_dtype() if type is None else as_dtype(type)
        if not d.is_floating_point:
            raise TypeError("torch.finfo() requires a floating point input type. Use "
                            "torch.iinfo to handle 'torch.finfo'")
        fi = ml_dtypes.finfo(d.np)
        self.bits = d.itemsize * 8
        self.eps = float(fi.eps)
        self.max = float(fi.max)
        self.min = float(fi.min)
        self.tiny = self.smallest_normal = float(fi.smallest_normal)
        self.resolution = 10.0 ** -int(fi.precision)
        self.dtype = d.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, finfo) and other.dtype == self.dtype

    def __hash__(self) -> int:
        return hash(("finfo", self.dtype))

    def __repr__(self) -> str:
        return (f"finfo(resolution={self.resolution:g}, min={self.min:g}, max={self.max:g}, "
                f"eps={self.eps:g}, smallest_normal={self.smallest_normal:g}, "
                f"tiny={self.tiny:g}, dtype={self.dtype})")


class iinfo:  # noqa: N801 - torch's name
    """torch.iinfo: the limits of an integer dtype."""

    __slots__ = ("bits", "max", "min", "dtype")

    def __init__(self, type) -> None:  # noqa: A002 - torch's argument name
        d = as_dtype(type)
        if d.kind != "i":
            raise TypeError("torch.iinfo() requires an integer input type. Use torch.finfo "
                            "to handle 'torch.iinfo'")
        ii = np.iinfo(d.np)
        self.bits = d.itemsize * 8
        self.max = int(ii.max)
        self.min = int(ii.min)
        self.dtype = d.name

    def __eq__(self, other: object) -> bool:
        return isinstance(other, iinfo) and other.dtype == self.dtype

    def __hash__(self) -> int:
        return hash(("iinfo", self.dtype))

    def __repr__(self) -> str:
        return f"iinfo(min={self.min:g}, max={self.max:g}, dtype={self.dtype})"
