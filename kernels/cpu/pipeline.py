"""A leaner Numba pipeline for generated kernels: about 8% less compile CPU, the same
machine code; and calls typed once per process while kernels compile.

Numba's default nopython pipeline runs passes a generated kernel never needs: closure
and ``inline="always"`` inlining (a kernel defines no closures, and calls such a helper
only for integer floor division, remainders and float64 sigmoid), and the rewrites
(array expressions, constant folding of branches and getitems) that LLVM does as well
on scalar loops. ``LeanCompiler`` keeps the others in Numba's order; ``codegen`` uses it,
with ``no_rewrites``, for kernels that call none of ``codegen.INLINED`` (this module
imports Numba, so only a kernel being compiled imports it). On the 214 generated
kernels of the test suite and benchmarks, the machine code came out identical with and
without it (symbol names aside).

Typing a call (``a + b`` on two float32s, a getitem, ``np.float32(x)``) tries each template
registered for the function, most of which fail, each building an error message; and
lowering types most calls a second time. A kernel types a few hundred such calls, and a
cold GPT step compiles 30 kernels on nearly the same few signatures. While a kernel
compiles (``kernels.cpu._compile_object``), ``remembered_calls`` keeps the signature a
function type (``types.Function``: operators, intrinsics, overloads, number classes'
calls) resolved to for the given argument types and hands it back for the same types:
10% less compile CPU. Numba resolves such a call from the function's templates and the
argument types alone (an overload's implementation compiles once per signature, and its
implementation key is kept on the function type), so the answer is the one it would
compute again; failures are not kept. On the 30 kernels of a GPT step the LLVM IR came
out identical (symbol names aside).
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from numba.core import types
from numba.core.compiler import CompilerBase, DefaultPassBuilder
from numba.core.compiler_lock import global_compiler_lock
from numba.core.compiler_machinery import PassManager
from numba.core.untyped_passes import (FindLiterallyCalls, FixupArgs, IRProcessing,
                                       LiteralPropagationSubPipelinePass, LiteralUnroll,
                                       MakeFunctionToJitFunction, ReconstructSSA,
                                       RewriteDynamicRaises, TranslateByteCode, WithLifting)

from ..shared_setting import SharedSetting

__all__ = ["LeanCompiler", "remembered_calls"]

_RESOLVED: dict = {}  # (function type, typing context, argument types, keywords) -> signature
_PLAIN = types.BaseFunction.get_call_type  # Numba's own


def _remembering_call_type(self, context, args, kws):
    """``BaseFunction.get_call_type`` through ``_RESOLVED``."""
    try:
        key = (self, context, tuple(args), tuple(sorted(kws.items())))
        sig = _RESOLVED.get(key)
    except TypeError:  # an unhashable argument type: resolve as usual
        return _PLAIN(self, context, args, kws)
    if sig is None:
        sig = _PLAIN(self, context, args, kws)
        if sig is not None:
            _RESOLVED[key] = sig
    return sig


def _remember():
    before = types.BaseFunction.get_call_type
    types.BaseFunction.get_call_type = _remembering_call_type
    return before


def _forget(before) -> None:
    types.BaseFunction.get_call_type = before


_REMEMBERING = SharedSetting(_remember, _forget)


@contextmanager
def remembered_calls() -> Iterator[None]:
    """Within: function types resolve a call once per argument types (see the module's
    docstring). Holds Numba's (reentrant) compiler lock throughout, so that no other
    thread's compile, the only other caller of the typing, runs meanwhile."""
    with global_compiler_lock, _REMEMBERING.scope():
        yield


class LeanCompiler(CompilerBase):
    """Numba's nopython pipeline without closure inlining, ``inline="always"``
    inlining and (under ``no_rewrites``) the rewrite passes."""

    def define_pipelines(self):
        state = self.state
        pm = PassManager("gcompile_lean")
        if state.func_ir is None:
            pm.add_pass(TranslateByteCode, "analyzing bytecode")
            pm.add_pass(FixupArgs, "fix up args")
        pm.add_pass(IRProcessing, "processing IR")
        pm.add_pass(WithLifting, "Handle with contexts")
        pm.add_pass(RewriteDynamicRaises, "rewrite dynamic raises")
        pm.add_pass(MakeFunctionToJitFunction, "convert make_function into JIT functions")
        pm.add_pass(FindLiterallyCalls, "find literally calls")
        pm.add_pass(LiteralUnroll, "handles literal_unroll")
        if state.flags.enable_ssa:
            pm.add_pass(ReconstructSSA, "ssa")
        pm.add_pass(LiteralPropagationSubPipelinePass, "Literal propagation")
        pm.passes.extend(DefaultPassBuilder.define_typed_pipeline(state).passes)
        pm.passes.extend(DefaultPassBuilder.define_nopython_lowering_pipeline(state).passes)
        pm.finalize()
        return [pm]
