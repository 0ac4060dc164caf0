"""The IR: dtypes, shapes, the op registry and (as they land) graphs and passes."""
from . import dtypes, ops, shapes  # noqa: F401
from .registry import REGISTRY, GradBuilder, OpDef, get_op, register, vjp  # noqa: F401
