"""``gcompile._tensor``: the complete Tensor and the names other modules import with it.

The eager Tensor is written by concern, each module importing only the ones below it:

- ``_tensor_base``: the class, its NumPy storage and metadata (shape, strides, dtype,
  device, views), ``Size``;
- ``_tape``: the autograd graph's node types;
- ``_dispatch``: ``apply_op``, the one entry every op goes through;
- ``_tensor_shape``: view, reshape, indexing, gather/scatter methods;
- ``_tensor_inplace``: in-place writes (``add_``, ``__setitem__``, ``copy_`` ...);
- ``_random``, ``cuda``, ``_creation``: generators, the device query, creation functions;
- ``gcompile.autograd``: the engine (``backward``, ``grad``), ``Function``, grad modes;
- ``_tensor_autograd``: ``requires_grad``, ``.grad``, ``detach``, hooks, ``backward``;
- ``_tensor_convert``: ``item``, ``numpy``, ``repr``, ``to``, dtype casts, ``new_*``;
- ``_functions``: the torch functions; ``_methods``: operators and methods bound to them.

Importing this module imports them all, so ``Tensor`` here has every method.
"""
from __future__ import annotations

from . import _methods  # noqa: F401  (binds operators and function-style methods)
from . import _tensor_autograd, _tensor_convert, _tensor_inplace, _tensor_shape  # noqa: F401
from ._creation import _wrap_scalar_or_tensor
from ._dispatch import _ew_plan, _graph_break, _make_ew_plan, apply_op
from ._tensor_base import (Size, Tensor, _rebuild, _retype, _sizes, return_type, strided,
                           values_indices)

__all__ = ["Tensor", "Size", "apply_op", "values_indices", "strided", "return_type",
           "_wrap_scalar_or_tensor", "_graph_break", "_ew_plan", "_make_ew_plan", "_rebuild",
           "_retype", "_sizes"]
