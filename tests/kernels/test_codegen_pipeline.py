"""Generated kernels compile with a leaner Numba pipeline (``kernels.cpu.pipeline``)
unless they call a helper Numba must inline at its IR level, and the machine code is
the same as the default pipeline's."""
from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from numba.core.registry import CPUDispatcher

from kernels.cpu import CompiledKernel, codegen, fastmath
from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var

F = "float32"


def test_inlined_names_every_inline_always_helper():
    helpers = {name for name, obj in vars(fastmath).items()
               if isinstance(obj, CPUDispatcher) and obj.targetoptions.get("inline") == "always"}
    assert set(codegen.INLINED) == helpers


def _spec(op: str, dtype: str = F) -> KernelSpec:
    sts = (Stmt("a", "mul", (inp(0), const(1.5, dtype)), (), dtype),
           Stmt("b", op, (var("a"), inp(1)), (), dtype),
           Stmt("c", "exp" if dtype == F else "add", (var("b"),) if dtype == F
                else (var("b"), inp(0)), (), dtype))
    return KernelSpec((dtype, dtype), ((dtype, "full"),),
                      (Phase("map", sts, stores=((0, var("c")),)),), "elementwise")


def _asm(source: str, tag: str) -> list[str]:
    """The module's machine code, symbol names and labels left out."""
    spec = importlib.util.spec_from_loader(tag, loader=None)
    mod = importlib.util.module_from_spec(spec)
    exec(compile(source, f"<{tag}>", "exec"), mod.__dict__)
    text = mod.entry._library.get_asm_str()
    text = re.sub(r"_ZN\S+?E\S*?(?=[:,@\s]|$)", "SYM", text)
    text = re.sub(r"\.Ltmp\d+|\.LBB\d+_\d+|\.LCPI\d+_\d+", "L", text)
    return [ln for ln in text.splitlines() if ln.strip() and not ln.strip().startswith(
        (".file", ".ident", ".section", "#", ".p2align", ".size", ".type", ".globl", ".text"))]


def test_lean_kernels_compile_to_the_default_pipelines_machine_code():
    for variant in (("flat", (-1, -1), None), ("strided", (-1, -1), ("c", "s", "c"))):
        src = codegen.elementwise_source(_spec("add"), variant).source
        assert codegen.LEAN in src
        default = src.replace(codegen.LEAN, "")
        assert _asm(src, "lean_kernel") == _asm(default, "default_kernel")


def test_a_kernel_calling_an_inlined_helper_keeps_the_default_pipeline():
    d = "float64"
    spec = KernelSpec((d, d), ((d, "full"),), (Phase("map", (
        Stmt("q", "floor_divide", (inp(0), inp(1)), (), d),),
        stores=((0, var("q")),)),), "elementwise")
    src = codegen.elementwise_source(spec, ("flat", (-1, -1), None)).source
    assert "floordiv_f64(" in src and codegen.LEAN not in src
    x = np.array([7.0, -7.0, 1.0, 5.0])
    y = np.array([2.0, 2.0, 0.1, -4.0])
    out = np.empty(4)
    CompiledKernel(spec)([x, y], [out])
    np.testing.assert_array_equal(out, np.floor_divide(x, y))  # 1 // 0.1 == 9, as NumPy


def _typing():
    from numba.core.registry import cpu_target
    ctx = cpu_target.typing_context
    ctx.refresh()
    return ctx


def test_remembered_calls_resolve_as_numba_does_and_leave_no_trace():
    import operator

    from numba.core import errors, types

    from kernels.cpu.pipeline import remembered_calls
    ctx = _typing()
    plain = types.BaseFunction.get_call_type
    arr = types.Array(types.float32, 1, "C")
    calls = [(operator.add, (types.float32, types.float32)),
             (operator.mul, (types.int64, types.float64)),
             (operator.getitem, (arr, types.intp)),
             (np.float32, (types.int64,))]
    want = [ctx.resolve_function_type(ctx.resolve_value_type(f), a, {}) for f, a in calls]
    with remembered_calls():
        assert types.BaseFunction.get_call_type is not plain
        for _ in range(2):  # the second round is answered from memory
            got = [ctx.resolve_function_type(ctx.resolve_value_type(f), a, {})
                   for f, a in calls]
            assert got == want
        # a call that does not type still fails, every time
        for _ in range(2):
            with pytest.raises(errors.TypingError):
                ctx.resolve_function_type(ctx.resolve_value_type(operator.add),
                                          (arr, types.unicode_type), {})
    assert types.BaseFunction.get_call_type is plain


def test_kernels_compiled_with_remembered_calls_have_the_same_machine_code():
    from kernels.cpu.pipeline import remembered_calls
    rows = codegen.rows_source(_rows_spec(), ("rows", (-1, -1), ("c", "c", "c", "c")))
    assert "ptr_matrix(" in rows.source
    for src in (codegen.elementwise_source(_spec("add"), ("flat", (-1, -1), None)).source,
                rows.source):
        plain = _asm(src, "plain_kernel")
        with remembered_calls():
            first = _asm(src, "remembered_kernel")
            again = _asm(src, "remembered_again")
        assert first == plain and again == plain


def _rows_spec() -> KernelSpec:
    """x * rsqrt(mean(x * x) + eps) * w: its rows variant reads the stride table, a 2-D
    view (``fastmath.ptr_matrix``)."""
    from kernels.spec import red, rowlen
    return KernelSpec((F, F), ((F, "full"), (F, "row")), (
        Phase("reduce", (Stmt("sq", "mul", (inp(0), inp(0)), (), F),), reduce_op="sum",
              reduce_value=var("sq"), store_result=1,
              post=(Stmt("ms", "div", (red(0), rowlen(F)), (), F),
                    Stmt("me", "add", (var("ms"), const(1e-6, F)), (), F),
                    Stmt("r", "rsqrt", (var("me"),), (), F))),
        Phase("map", (Stmt("y", "mul", (inp(0), red(0)), (), F),
                      Stmt("z", "mul", (var("y"), inp(1)), (), F)),
              stores=((0, var("z")),)),
    ), "rows")


def test_ptr_matrix_views_a_c_pointer_as_a_c_contiguous_matrix():
    import ctypes

    from numba import cfunc, types

    from kernels.cpu.fastmath import ptr_matrix, ptr_window

    @cfunc(types.void(types.voidptr, types.intp, types.intp, types.voidptr))
    def transpose(p, r, c, q):
        a = ptr_matrix(p, r, c, np.int64)
        out = ptr_window(q, 0, r * c, np.int64)
        for i in range(r):
            for j in range(c):
                out[j * r + i] = a[i, j] + a.shape[0] * 1000 + a.shape[1] * 100
    a = np.arange(15, dtype=np.int64).reshape(3, 5)
    out = np.zeros(15, dtype=np.int64)
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_ssize_t, ctypes.c_ssize_t,
                          ctypes.c_void_p)(transpose.address)
    fn(a.ctypes.data, 3, 5, out.ctypes.data)
    np.testing.assert_array_equal(out, a.T.ravel() + 3500)
