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
            return super().__call__(inputs, out_into)

    def release(self) -> None:
        """Give back the arena (an entry not used lately); the next call takes one anew."""
        with self._lock:
            self.plan.drop_arena()


def build_executable(graph, profile: bool = False, reference: bool = False) -> Executor:
    """An ``Executor`` for ``graph`` (optimised in place); ``.compiled`` keeps the fusion
    and plan for ``explain``. ``reference``: NumPy evaluation of the kernel specs
    instead of generated kernels (``compile(..., options={"kernels": "reference"})``)."""
    from ir.verify import verify

    from .logs import stage
    with stage("verify", lambda: f"{graph.name}: {len(graph.inputs)} inputs, "
               f"{len(graph.nodes)} nodes, {len(graph.outputs)} outputs: ok"):
        verify(graph)
    if reference:
        from runtime.reference import ReferenceKernel
        compiled = compile_graph(graph, make_kernel=ReferenceKernel)
    else:
        compiled = compile_graph(graph)
    ex = LockedExecutor(compiled.plan, profile=profile)
    ex.compiled = compiled
    _trim_heap()
    return ex


def _trim_heap() -> None:
    """Hand the C heap's free pages back to the OS. Tracing and lowering churn through
    many short-lived arrays and Python objects below glibc's mmap threshold; their
    freed pages would otherwise stay in the process for good (about 50 MB after
    tracing an MLP train step at width 2048). Once per compile, so it costs nothing
    on the hot path."""
    global _MALLOC_TRIM
    if _MALLOC_TRIM is None:
        import ctypes
        import ctypes.util
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _MALLOC_TRIM = libc.malloc_trim
            _MALLOC_TRIM.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to do
            _MALLOC_TRIM = False
    if _MALLOC_TRIM:
        _MALLOC_TRIM(0)


_MALLOC_TRIM = None
