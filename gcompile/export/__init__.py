"""``gcompile.export``: a compiled graph as a program that runs without the user's code.

``ep = gcompile.export(fn_or_module, *example_inputs)`` traces the function (the
compiler's own tracer, with ``fullgraph=True`` and grad off), optimises and
lowers the graph, and keeps what a later process needs to run it: the IR graph,
the weights (parameters, buffers and captured tensors), the input and output
pytree specs, and the generated kernels. ``ep.save(path)`` (or
``gcompile.export.save(ep, path)``) writes one gcompile checkpoint file
(safetensors + JSON, checksummed, atomic; no pickle), and ``gcompile.load(path)``
returns an ``ExportedProgram`` again, in a process that never imported the
user's code. See :mod:`gcompile.export.program` for the file layout and how
stored machine code is verified before use.

This module is callable: ``gcompile.export(fn, x)`` is ``gcompile.export.export(fn, x)``.
"""
from __future__ import annotations

import sys
import types

from .program import Dim, ExportedProgram, export, load, load_program, save

__all__ = ["export", "save", "load", "load_program", "ExportedProgram", "Dim"]


class _CallableModule(types.ModuleType):
    """``gcompile.export`` is both torch's ``torch.export`` namespace and the function."""

    def __call__(self, *args, **kwargs) -> ExportedProgram:
        return export(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
