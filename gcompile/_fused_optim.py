"""The eager bridge from ``gcompile.optim`` to the native update kernels
(``kernels.cpu.optim_native``): one kernel call per parameter instead of a dozen ops.

This is the one place the optimizers reach tensor storage. That is safe only outside a
trace (a tracer would not see the writes, and a compiled plan would bake the values
in), so ``usable`` answers False while a tracer is installed and every update asserts
it: under ``gcompile.compile`` the optimizers run their op-by-op code, which the tracer
records. Each write bumps the tensor's version counter as an in-place op does.
"""
from __future__ import annotations

import warnings

import numpy as np

from kernels.cpu import defer_compile, optim_native

from ._state import state
from ._tensor import Tensor

__all__ = ["usable", "inc_step", "adam", "sgd", "adagrad", "rmsprop"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))
_FAILED: set[str] = set()


def _kernel_ready(kind: str, dtype: np.dtype) -> bool:
    """Whether ``kind``'s kernel for ``dtype`` loads; one that cannot be built (no Numba
    on a cold cache) warns once and leaves the optimizer to its op-by-op code."""
    key = f"{kind}_{dtype.name}"
    if key in _FAILED:
        return False
    kernel = getattr(optim_native, f"_{kind}_kernel")(dtype.name)
    if defer_compile([kernel]):  # a compiled step's first call: its plan updates in place
        return False
    try:
        kernel.load()
    except Exception as e:  # noqa: BLE001 - any build failure: the op-by-op path still works
        _FAILED.add(key)
        warnings.warn(f"gcompile: native optimizer kernel {key} could not be built "
                      f"({type(e).__name__}: {e}); using the op-by-op update",
                      RuntimeWarning, stacklevel=3)
        return False
    return True


def usable(kind: str, params: list[Tensor], grads: list[Tensor],
           *states: list[Tensor | None]) -> bool:
    """Whether the native ``kind`` update can serve these lists: eager (no tracer),
    float32/float64 parameters that are C-contiguous and writeable, gradients of the
    same dtype and shape (any layout), state buffers (``None`` entries: not made yet)
    of the same dtype, shape and C-contiguous."""
    if state.tracer is not None:
        return False
    seen = set()
    for i, p in enumerate(params):
        d = p._data
        if d.__class__ is not np.ndarray:  # a CUDA parameter: the op-by-op update runs there
            return False
        dtype = d.dtype
        if dtype not in _FLOATS or not d.flags.c_contiguous or not d.flags.writeable:
            return False
        g = grads[i]._data
        if g.dtype is not dtype or g.shape != d.shape:
            return False
        for lst in states:
            b = lst[i]
            if b is None:
                continue
            a = b._data
            if (a.dtype is not dtype or a.shape != d.shape or not a.flags.c_contiguous
                    or not a.flags.writeable):
                return False
        seen.add(dtype)
    return all(_kernel_ready(kind, d) for d in seen)


def _grad(g: Tensor) -> np.ndarray:
    a = g._data
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _bump(*ts: Tensor | None) -> None:
    for t in ts:
        if t is not None:
            t._vbox[0] += 1


def inc_step(step_t: Tensor) -> float:
    """``step_t += 1`` in place (as ``_inc_step`` does, without the op dispatch);
    returns the new count as a Python float."""
    assert state.tracer is None
    d = step_t._data
    np.add(d, 1, out=d, casting="unsafe")
    step_t._vbox[0] += 1
    return d.item()


def adam(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor,
         max_exp_avg_sq: Tensor | None, **hp) -> None:
    """One native Adam/AdamW update (``hp``: ``optim_native.adam``'s keywords)."""
    assert state.tracer is None
    optim_native.adam(param._data, _grad(grad), exp_avg._data, exp_avg_sq._data,
                      None if max_exp_avg_sq is None else max_exp_avg_sq._data, **hp)
    _bump(param, exp_avg, exp_avg_sq, max_exp_avg_sq)


def sgd(param: Tensor, grad: Tensor, momentum_buffer: Tensor | None, *, first: bool,
        **hp) -> None:
    """One native SGD update (``first``: the momentum buffer is set, not blended)."""
    assert state.tracer is None
    optim_native.sgd(param._data, _grad(grad),
                     None if momentum_buffer is None else momentum_buffer._data,
                     first=first, **hp)
    _bump(param, momentum_buffer)


def adagrad(param: Tensor, grad: Tensor, state_sum: Tensor, **hp) -> None:
    """One native Adagrad update."""
    assert state.tracer is None
    optim_native.adagrad(param._data, _grad(grad), state_sum._data, **hp)
    _bump(param, state_sum)


def rmsprop(param: Tensor, grad: Tensor, square_avg: Tensor, grad_avg: Tensor | None,
            momentum_buffer: Tensor | None, **hp) -> None:
    """One native RMSprop update."""
    assert state.tracer is None
    optim_native.rmsprop(param._data, _grad(grad), square_avg._data,
                         None if grad_avg is None else grad_avg._data,
                         None if momentum_buffer is None else momentum_buffer._data, **hp)
    _bump(param, square_avg, grad_avg, momentum_buffer)
