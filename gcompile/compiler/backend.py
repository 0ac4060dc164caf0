"""Glue from a traced graph to the runtime: optimise, lower, plan, execute."""
from __future__ import annotations

import threading

from runtime.lower import compile_graph
from runtime.plan import Executor


class LockedExecutor(Executor):
    """An executor whose calls take turns: a plan's arena buffers are shared by its
    calls, and kernels and BLAS release the GIL, so two threads calling one compiled
    function at once would otherwise overwrite each other's intermediates."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._lock = threading.Lock()

    def __call__(self, inputs, out_into=None):
        with self._lock:
            if self.plan.arena is None:
                self.plan.materialize()
            return super().__call__(inputs, out_into)

    def release(self) -> None:
        """Give back the arena (an entry not used lately); the next call makes it anew."""
        with self._lock:
            self.plan.arena = None
            self.plan._planned_views = []


def build_executable(graph, profile: bool = False, reference: bool = False) -> Executor:
    """An ``Executor`` for ``graph`` (optimised in place); ``.compiled`` keeps the fusion
    and plan for ``explain``. ``reference``: NumPy evaluation of the kernel specs
    instead of generated kernels (``compile(..., options={"kernels": "reference"})``)."""
    if reference:
        from runtime.reference import ReferenceKernel
        compiled = compile_graph(graph, make_kernel=ReferenceKernel)
    else:
        compiled = compile_graph(graph)
    ex = LockedExecutor(compiled.plan, profile=profile)
    ex.compiled = compiled
    return ex
