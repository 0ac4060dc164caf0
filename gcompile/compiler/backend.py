"""Glue from a traced graph to the runtime: optimise, lower, plan, execute."""
from __future__ import annotations

from runtime.lower import compile_graph
from runtime.plan import Executor


def build_executable(graph, profile: bool = False) -> Executor:
    """An ``Executor`` for ``graph`` (optimised in place); ``.compiled`` keeps the fusion
    and plan for ``explain``."""
    compiled = compile_graph(graph)
    ex = Executor(compiled.plan, profile=profile)
    ex.compiled = compiled
    return ex
