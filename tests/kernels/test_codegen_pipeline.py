"""Generated kernels compile with a leaner Numba pipeline (``kernels.cpu.pipeline``)
unless they call a helper Numba must inline at its IR level, and the machine code is
the same as the default pipeline's."""
from __future__ import annotations

import importlib.util
import re

import numpy as np
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
