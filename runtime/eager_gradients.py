"""Eager gradients of composite ops run as compiled plans.

An op without a gradient rule is differentiated through its decomposition
(``ir.passes.decompose.derived_vjp``): eager backward used to replay the gradient's
primitives one dispatched op at a time (a LayerNorm's backward is about twenty NumPy
passes and allocations; 2.5 ms for a [16, 64, 128] LayerNorm forward and backward
against torch's 0.3). The eager builder hands the same gradient graph here instead,
where it is compiled once per (op, shapes, dtypes, attributes) by ``compile_graph``, the
pipeline a compiled function's plan goes through (its primitives fuse into a few
kernels), and run by an ``Executor``.

``run`` declines (the caller replays the primitives) for small gradients (below
``MIN_SIZE`` elements in the largest input, where a plan call costs more than the
replay), for recipes of mostly GEMMs and views, for graphs the pipeline does not
lower, and during a compiled function's first call where no plan was built for the key
yet (``kernels.cpu.defer_build``) or the plan's kernels would compile for it alone
(``kernels.cpu.defer_compile``).
"""
from __future__ import annotations

import os
import threading

import numpy as np

from kernels.cpu import defer_build, defer_compile

__all__ = ["MIN_SIZE", "MIN_STEPS", "run"]

MIN_SIZE = int(os.environ.get("GCOMPILE_EAGER_GRADIENTS_MIN", 4096))
# recipes with fewer elementwise and reduction steps gain nothing (a Linear's: two
# GEMMs, views and one sum, which its replay already runs as well as a plan)
MIN_STEPS = int(os.environ.get("GCOMPILE_EAGER_GRADIENTS_MIN_STEPS", 3))
_MAX_PLANS = 256
_PLANS: dict = {}
_LOCK = threading.Lock()  # a plan's arena is shared by its calls
_MISSING = object()


def run(recipe, key, arrays: list[np.ndarray]) -> list[np.ndarray] | None:
    """The gradients ``recipe.graph`` computes from ``arrays`` (its inputs, in order),
    or None where the replay serves."""
    if recipe.graph is None or recipe.work_steps < MIN_STEPS:
        return None
    ex = _PLANS.get(key, _MISSING)
    if ex is _MISSING:
        if defer_build():
            return None
        ex = _build(recipe)
        with _LOCK:
            if len(_PLANS) >= _MAX_PLANS:
                _PLANS.clear()
            _PLANS[key] = ex
    if ex is None:
        return None
    if defer_compile(ex.plan.kernels()):
        return None
    with _LOCK:
        return ex(arrays)


def _build(recipe):
    from .lower import compile_graph
    from .plan import Executor
    try:
        plan = compile_graph(recipe.graph.copy()).plan
    except Exception:  # noqa: BLE001 - a graph the pipeline does not lower: replay it
        return None
    return Executor(plan)

