"""Numba source generation for ``KernelSpec``s.

Each kernel *variant* (flat or strided loop, which inputs alias outputs, the stride
class of every operand's innermost axis) becomes one small Python module whose
``@njit(nogil=True)`` function ``body`` runs the loop over an index range
``[lo, hi)`` (elements, outer rows or row blocks), wrapped by a ``cfunc`` named
``entry`` with a plain C ABI (see ``entry_lines``) whose machine code the kernel
cache keeps; ``kernels.cpu`` calls it once, or on disjoint ranges from several
threads. Variants are chosen at run time
by ``kernels.cpu.CompiledKernel`` from the arrays passed, so a kernel stays generic
in sizes and strides while each compiled loop is specialised where it matters for
vectorisation:

- flat: every operand is one contiguous run -> ``out[i] = f(in[i])``;
- strided: an outer loop over the collapsed outer dimensions (offsets from
  run-time shape/stride arrays) and an inner loop whose operands are classed
  ``c`` (unit stride, sliced so LLVM sees a contiguous view), ``b`` (stride 0:
  loaded once per row) or ``s`` (general stride);
- rows: per outer row, the phases of the spec in order (reductions unrolled
  with several independent accumulators, then maps); rowsblk: the same with
  ``BLOCK`` neighbouring rows side by side when the reduced axis is strided.

Scalar code for each statement is derived from the op registry's expression
template (``ir.REGISTRY[op].expr``): the template is parsed with ``ast`` and
re-emitted with typed constants, dtype-specific fast math functions and NaN
semantics matching NumPy.
"""
from __future__ import annotations

import ast
import math
import os
import re
from typing import NamedTuple

from ir import dtypes as dt
from ir.registry import REGISTRY, compute_dtype

from ..spec import KernelSpec, Phase, Stmt

# float32 functions generated code calls from kernels.cpu.fastmath (by name: importing
# fastmath imports Numba, which only a cold compile needs)
FUNCTIONS_F32 = {
    "exp": "exp_f32", "expm1": "expm1_f32", "log": "log_f32", "log1p": "log1p_f32",
    "log2": "log2_f32", "log10": "log10_f32", "tanh": "tanh_f32", "sigmoid": "sigmoid_f32",
    "erf": "erf_f32",
}
UNROLL = 8  # independent accumulators per reduction
# LLVM flags: FMA contraction only (no nnan/ninf/reassoc, so NaN/inf semantics and
# summation order are untouched). Fused multiply-adds round once, so they are at least
# as accurate, and they make the inlined transcendentals ~1.4x faster (GELU serial:
# 17 ms -> 12 ms on 16M floats here). GCOMPILE_FP_CONTRACT=0 turns it off.
FASTMATH = {"contract"} if os.environ.get("GCOMPILE_FP_CONTRACT", "1") != "0" else False

_FLOATS = ("float16", "float32", "float64")
_INTS = ("uint8", "int8", "int16", "int32", "int64")
_NP = {"bool": "np.bool_", "float16": "np.float16", "float32": "np.float32",
       "float64": "np.float64", "uint8": "np.uint8", "int8": "np.int8", "int16": "np.int16",
       "int32": "np.int32", "int64": "np.int64"}
_LOGICAL = ("logical_and", "logical_or", "logical_xor", "logical_not")


def _is_float(d: str) -> bool:
    return d in _FLOATS


def check_dtypes(spec: KernelSpec) -> None:
    """Refuse dtypes Numba cannot compute in (bfloat16, stored via ml_dtypes) with a
    clear message: the lowering then runs the node's NumPy implementation, which computes
    in float32 and rounds, as eager code does."""
    used = set(spec.inputs) | {d for d, _ in spec.outputs} | {
        st.dtype for p in spec.phases for st in p.stmts + p.post}
    unknown = sorted(used - set(_NP))
    if unknown:
        raise NotImplementedError(f"kernels.cpu: no generated kernels for dtype "
                                  f"{', '.join(unknown)} (Numba has no such type)")


def compute_dtype_of(op: str, arg_dtypes: list[str], arg_is_const: list[bool]) -> str:
    """The dtype eager dispatch computes elementwise ``op`` in for operands of these
    dtypes: ``ir.registry.compute_dtype``, the rule the eager dispatcher, the reference
    interpreter and lowering use. Constants stand for the 0-d tensors or Python
    scalars they were lowered from (typed already), so they count as 0-d operands: a
    tensor keeps its dtype against a constant of the same category."""
    od = REGISTRY[op]
    specs = [(dt.as_dtype(d), 0 if c else 1) for d, c in zip(arg_dtypes, arg_is_const)]
    if od.dtype_rule == "where":
        specs = specs[1:]
    if not specs:
        raise NotImplementedError(f"kernels: op {op!r} without operands")
    return compute_dtype(od, specs).name


class Emitter:
    """Collects typed module-level constants and names SSA variables."""

    def __init__(self) -> None:
        self.consts: dict[tuple, str] = {}
        self.names: dict[str, str] = {}
        self.var_dtypes: dict[str, str] = {}
        self._tmp = 0

    def const(self, value: object, dtype: str) -> str:
        if value is None:
            raise NotImplementedError("kernels: a None constant cannot be generated")
        if isinstance(value, str):
            raise NotImplementedError(f"kernels: string constant {value!r}")
        key = (repr(value), type(value).__name__, dtype)
        if key not in self.consts:
            self.consts[key] = f"K{len(self.consts)}"
        return self.consts[key]

    def const_lines(self) -> list[str]:
        out = []
        for (rep, tname, dtype), name in self.consts.items():
            if dtype == "bool":
                out.append(f"{name} = {bool(eval(rep, {'inf': math.inf, 'nan': math.nan}))!r}")
                continue
            if tname == "float":
                v = float(eval(rep, {"inf": math.inf, "nan": math.nan}))
                lit = (f"float({str(v)!r})" if not math.isfinite(v) else repr(v))
            elif tname == "bool":
                lit = repr(bool(eval(rep)))
            else:
                lit = rep
            out.append(f"{name} = {_NP[dtype]}({lit})")
        return out

    def var(self, name: str, dtype: str) -> str:
        if name not in self.names:
            ident = "v_" + re.sub(r"\W", "_", str(name))
            while ident in self.names.values():
                ident += "_"
            self.names[name] = ident
        self.var_dtypes[name] = dtype
        return self.names[name]

    def tmp(self) -> str:
        self._tmp += 1
        return f"t{self._tmp}"


def cast_code(code: str, src: str, dst: str) -> str:
    """Expression converting ``code`` from dtype ``src`` to ``dst``."""
    if src == dst:
        return code
    if dst == "bool":
        return f"({code} != 0)"
    return f"{_NP[dst]}({code})"


_NO = object()


class _ExprGen:
    """Re-emits a parsed expression template in one compute dtype."""

    def __init__(self, em: Emitter, cd: str, args: list[str], attrs: dict, op: str) -> None:
        self.em, self.cd, self.args, self.attrs, self.op = em, cd, args, attrs, op

    def fold(self, node: ast.AST):
        """The compile-time value of a constant subexpression (string attrs), else _NO."""
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, bool)):
            return node.value
        if isinstance(node, ast.Name) and node.id.startswith("__k_"):
            v = self.attrs[node.id[4:]]
            return v if isinstance(v, (str, bool)) or v is None else _NO
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            a, b = self.fold(node.left), self.fold(node.comparators[0])
            if a is not _NO and b is not _NO:
                if isinstance(node.ops[0], ast.Eq):
                    return a == b
                if isinstance(node.ops[0], ast.NotEq):
                    return a != b
        return _NO

    def gen(self, node: ast.AST) -> str:
        m = getattr(self, "_" + type(node).__name__, None)
        if m is None:
            raise NotImplementedError(
                f"kernels: op {self.op!r}: unsupported syntax {ast.dump(node)} in its expr")
        return m(node)

    def _Expression(self, node):
        return self.gen(node.body)

    def _Name(self, node):
        n = node.id
        if n.startswith("__a"):
            return self.args[int(n[3:])]
        if n.startswith("__k_"):
            return self.em.const(self.attrs[n[4:]], self.cd)
        if n in ("True", "False"):
            return n
        raise NotImplementedError(f"kernels: op {self.op!r}: unknown name {n!r} in its expr")

    def _Constant(self, node):
        v = node.value
        if isinstance(v, bool):
            return repr(v)
        return self.em.const(v, self.cd)

    def _BinOp(self, node):
        a, b = self.gen(node.left), self.gen(node.right)
        if isinstance(node.op, ast.Pow):
            return self._pow(a, b, node.right)
        ops = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
               ast.Mod: "%", ast.BitAnd: "&", ast.BitOr: "|", ast.BitXor: "^",
               ast.LShift: "<<", ast.RShift: ">>"}
        o = ops.get(type(node.op))
        if o is None:
            raise NotImplementedError(f"kernels: op {self.op!r}: operator {node.op}")
        if o == "-" and self.cd == "bool":
            # NumPy (so eager) refuses bool subtraction: run the NumPy implementation
            raise NotImplementedError(f"kernels: op {self.op!r}: subtraction of bools")
        if o == "//":
            return self._call("floordiv", [a, b])
        if o == "%":
            return self._call("remainder", [a, b])
        return f"({a} {o} {b})"

    def _const_value(self, name: str):
        """The number a generated constant name stands for (None: not a constant)."""
        for (rep, _t, _d), cname in self.em.consts.items():
            if cname == name:
                try:
                    return float(eval(rep, {"inf": math.inf, "nan": math.nan}))
                except Exception:  # noqa: BLE001 - not a number
                    return None
        return None

    def _pow(self, a, b, rnode):
        val = rnode.value if isinstance(rnode, ast.Constant) else self._const_value(b)
        if val is not None and not isinstance(val, bool):
            one = self.em.const(1, self.cd)
            special = {0: one, 1: a, 2: f"({a} * {a})", 3: f"({a} * {a} * {a})",
                       4: f"(({a} * {a}) * ({a} * {a}))"}
            if _is_float(self.cd):
                special.update({-1: f"({one} / {a})", 0.5: f"np.sqrt({a})",
                                -0.5: f"({one} / np.sqrt({a}))", -2: f"({one} / ({a} * {a}))"})
            if val in special:
                return special[val]
        if not _is_float(self.cd) and (val is None or val < 0):
            # a negative integer exponent is an error in NumPy and torch, and a kernel
            # cannot raise: the node runs its NumPy implementation instead
            raise NotImplementedError(f"kernels: op {self.op!r}: integer power with a "
                                      "run-time or negative exponent")
        return f"({a} ** {b})"

    def _UnaryOp(self, node):
        a = self.gen(node.operand)
        if isinstance(node.op, ast.USub):
            if self.cd == "bool":
                raise NotImplementedError(f"kernels: op {self.op!r}: negation of a bool")
            return f"(-{a})"
        if isinstance(node.op, ast.UAdd):
            return a
        if isinstance(node.op, ast.Not):
            return f"(not {a})"
        if isinstance(node.op, ast.Invert):
            return f"(not {a})" if self.cd == "bool" else f"(~{a})"
        raise NotImplementedError(f"kernels: op {self.op!r}: unary {node.op}")

    def _BoolOp(self, node):
        o = " & " if isinstance(node.op, ast.And) else " | "
        return "(" + o.join(self.gen(v) for v in node.values) + ")"

    def _Compare(self, node):
        t = self.fold(node)
        if t is not _NO:
            return repr(bool(t))
        ops = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">",
               ast.GtE: ">="}
        parts = [self.gen(node.left)]
        for o, c in zip(node.ops, node.comparators):
            if type(o) not in ops:
                raise NotImplementedError(f"kernels: op {self.op!r}: comparison {o}")
            parts += [ops[type(o)], self.gen(c)]
        return "(" + " ".join(parts) + ")"

    def _IfExp(self, node):
        t = self.fold(node.test)
        if t is not _NO:
            return self.gen(node.body if t else node.orelse)
        return f"({self.gen(node.body)} if {self.gen(node.test)} else {self.gen(node.orelse)})"

    def _Call(self, node):
        if not isinstance(node.func, ast.Name) or node.keywords:
            raise NotImplementedError(f"kernels: op {self.op!r}: unsupported call in its expr")
        return self._call(node.func.id, [self.gen(a) for a in node.args])

    # ---- function library -------------------------------------------------------
    def _call(self, f: str, a: list[str]) -> str:
        cd, em = self.cd, self.em
        isf = _is_float(cd)
        if f == "abs":
            return f"abs({a[0]})" if cd != "bool" else a[0]
        if f in ("maximum", "minimum", "max", "min"):
            o = ">=" if f in ("maximum", "max") else "<="
            if isf:
                return f"({a[0]} if (({a[0]} {o} {a[1]}) | ({a[0]} != {a[0]})) else {a[1]})"
            return f"({a[0]} if ({a[0]} {o} {a[1]}) else {a[1]})"
        if f == "relu":
            z = em.const(0, cd)
            return f"({z} if ({a[0]} <= {z}) else {a[0]})" if cd != "bool" else a[0]
        if f == "sign":
            if cd == "bool":
                return a[0]
            one, z = em.const(1, cd), em.const(0, cd)
            return (f"({one} if ({a[0]} > {z}) else ((-{one}) if ({a[0]} < {z}) "
                    f"else {a[0]}))") if cd not in ("uint8",) else f"({one} if {a[0]} else {z})"
        if f in ("floor", "ceil", "trunc", "rint", "round"):
            return f"np.{'rint' if f == 'round' else f}({a[0]})" if isf else a[0]
        if f == "isnan":
            return f"({a[0]} != {a[0]})" if isf else "False"
        if f == "isinf":
            return f"(abs({a[0]}) == {em.const(math.inf, cd)})" if isf else "False"
        if f == "isfinite":
            return f"(abs({a[0]}) < {em.const(math.inf, cd)})" if isf else "True"
        if f in ("floordiv", "remainder"):
            if isf:
                suffix = "f64" if cd == "float64" else "f32"
                return f"{f}_{suffix}({a[0]}, {a[1]})"
            divisor = self._const_value(a[1])
            if not divisor:
                # an integer zero divisor raises in torch (and in the op's NumPy
                # implementation); a kernel cannot raise, so only a non-zero constant
                # divisor is generated here and anything else runs NumPy
                raise NotImplementedError(f"kernels: op {self.op!r}: integer {f} by a "
                                          "run-time or zero divisor")
            if cd == "bool":  # NumPy computes bool // bool in int8
                a = [f"np.int8({x})" for x in a]
            return f"{f}_int({a[0]}, {a[1]})"
        if f == "sqrt":
            return f"np.sqrt({a[0]})"
        if f == "where":
            return f"({a[1]} if {a[0]} else {a[2]})"
        if f == "sigmoid":
            return f"sigmoid_f32({a[0]})" if cd in ("float32", "float16") else \
                f"sigmoid_f64({a[0]})"
        if cd in ("float32", "float16") and f in FUNCTIONS_F32:
            return f"{FUNCTIONS_F32[f]}({', '.join(a)})"
        if hasattr(math, f) and isf:
            return f"math.{f}({', '.join(a)})"
        raise NotImplementedError(
            f"kernels: op {self.op!r}: no scalar implementation of {f!r} for dtype {cd}")


def _template(op: str) -> str:
    od = REGISTRY.get(op)
    if od is None:
        raise NotImplementedError(f"kernels: unknown op {op!r}")
    if od.expr is None:
        raise NotImplementedError(f"kernels: op {op!r} has no scalar expression (not elementwise)")
    return od.expr


def stmt_code(stmt: Stmt, em: Emitter, arg_codes: list[str], arg_dtypes: list[str],
              arg_is_const: list[bool], lines: list[str], indent: str) -> str:
    """Append the lines computing ``stmt``; return the identifier holding its value."""
    op = stmt.op
    attrs = dict(stmt.attrs)
    out_d = stmt.dtype
    od = REGISTRY.get(op)
    if od is None:
        raise NotImplementedError(f"kernels: unknown op {op!r}")
    rule = od.dtype_rule
    target = em.var(stmt.name, out_d)

    # the compute dtype and the dtype each argument is converted to
    if op == "cast":
        lines.append(f"{indent}{target} = {cast_code(arg_codes[0], arg_dtypes[0], out_d)}")
        return target
    # The compute dtype follows the registry, as in eager dispatch: for comparisons it
    # is the operands' compute_dtype (the result is bool); for every other rule the
    # registry's output dtype is the compute dtype, which lowering stored as the stmt's
    # dtype (and cast the operands to). Logical ops compute on truth values.
    if op in _LOGICAL:
        cd = "bool"
        want = ["bool"] * len(arg_codes)
    elif op == "where":
        cd = out_d
        want = ["bool", out_d, out_d]
    elif rule == "bool":
        cd = compute_dtype_of(op, arg_dtypes, arg_is_const)
        want = [cd] * len(arg_codes)
    else:
        cd = out_d
        want = [cd] * len(arg_codes)

    args = []
    for code, d, w in zip(arg_codes, arg_dtypes, want):
        if d == w:
            args.append(code)
        else:
            t = em.tmp()
            lines.append(f"{indent}{t} = {cast_code(code, d, w)}")
            args.append(t)

    if op == "clamp":
        lo, hi = attrs.get("min"), attrs.get("max")
        if lo is None and hi is None:
            raise RuntimeError("clamp: at least one of 'min' or 'max' must not be None")
        g = _ExprGen(em, cd, args, {}, op)
        e = args[0]
        if lo is not None:
            e = g._call("maximum", [e, em.const(lo, cd)])
        if hi is not None:
            e = g._call("minimum", [e, em.const(hi, cd)])
        lines.append(f"{indent}{target} = {e}")
        return target

    tmpl = _template(op)
    names = {k: f"__k_{k}" for k in attrs}
    try:
        src = tmpl.format(*[f"__a{i}" for i in range(len(args))], **names)
    except (KeyError, IndexError) as e:
        raise NotImplementedError(f"kernels: op {op!r}: template {tmpl!r} needs {e}") from None
    tree = ast.parse(src, mode="eval")
    expr = _ExprGen(em, cd, args, attrs, op).gen(tree)
    if rule == "bool" or op in _LOGICAL:
        val, val_d = expr, "bool"  # comparisons and logical ops yield Python bools
    else:
        # NumPy's loop for ``cd`` returns a ``cd`` value, but Numba computes bool and
        # small-integer arithmetic in wider integers (True + True is 2): bring the value
        # back to ``cd`` first (bool + bool is logical or, bool * bool logical and, as in
        # eager), then to the stmt's dtype
        val, val_d = cast_code(expr, "__any__", cd), cd
    lines.append(f"{indent}{target} = {cast_code(val, val_d, out_d)}")
    return target


# ---- reference resolution ------------------------------------------------------------

class _Ctx:
    """How refs resolve to code inside one loop body."""

    def __init__(self, spec: KernelSpec, em: Emitter, load) -> None:
        self.spec, self.em, self.load = spec, em, load
        self.red_code: dict[int, str] = {}
        self.red_dtype: dict[int, str] = {}
        self.n_code: dict[str, str] = {}
        self.reuse: dict = {}  # structural key -> code reading an earlier phase's buffer

    def ref(self, r) -> tuple[str, str, bool]:
        tag = r[0]
        if tag == "in":
            return self.load(r[1]), self.spec.inputs[r[1]], False
        if tag == "v":
            if r[1] not in self.em.names:
                raise ValueError(f"kernels: variable {r[1]!r} used before definition")
            return self.em.names[r[1]], self.em.var_dtypes[r[1]], False
        if tag == "c":
            return self.em.const(r[1], r[2]), r[2], True
        if tag == "r":
            return self.red_code[r[1]], self.red_dtype[r[1]], False
        if tag == "n":
            return self.n_code.setdefault(r[1], f"n_{r[1]}"), r[1], False
        raise ValueError(f"kernels: bad reference {r!r}")


def _canon(ref, defs: dict):
    """A structural key for a value: equal keys compute equal values within a row."""
    if ref[0] == "v" and ref[1] in defs:
        s = defs[ref[1]]
        return (s.op, s.attrs, s.dtype, tuple(_canon(a, defs) for a in s.args))
    return tuple(ref)


def _stmts(stmts, ctx: _Ctx, lines: list[str], indent: str) -> None:
    defs = {s.name: s for s in stmts}
    for s in stmts:
        if ctx.reuse:
            hit = ctx.reuse.get(_canon(("v", s.name), defs))
            if hit is not None:
                lines.append(f"{indent}{ctx.em.var(s.name, s.dtype)} = {hit}")
                continue
        codes, dts, consts = [], [], []
        for a in s.args:
            c, d, k = ctx.ref(a)
            codes.append(c)
            dts.append(d)
            consts.append(k)
        stmt_code(s, ctx.em, codes, dts, consts, lines, indent)


def _refs_inputs(phase: Phase) -> list[int]:
    used = set()
    for s in phase.stmts + phase.post:
        for a in s.args:
            if a[0] == "in":
                used.add(a[1])
    for _, v in phase.stores:
        if v[0] == "in":
            used.add(v[1])
    if phase.reduce_value is not None and phase.reduce_value[0] == "in":
        used.add(phase.reduce_value[1])
    return sorted(used)


class Generated(NamedTuple):
    """A variant's module source and its entry point's parameters, each
    ``(name, kind, dtype, size)``: kind ``arr`` (an operand: pointer, length),
    ``int``, ``vec``/``mat`` (int64 shape/stride tables: pointer and 1 or 2
    sizes) or ``scratch`` (per-call work space of ``size`` elements, ``"R"``
    meaning the row length: pointer, length). ``lo`` and ``hi`` follow."""
    source: str
    params: tuple


def c_arity(params: tuple) -> int:
    """Number of 64-bit C arguments of an entry point with ``params``."""
    return sum(3 if p[1] == "mat" else 1 if p[1] == "int" else 2 for p in params) + 2


HEADER = """# generated by gcompile kernels.cpu.codegen -- do not edit
import math
import numpy as np
from numba import carray, cfunc, njit, prange, types
from kernels.cpu.fastmath import (exp_f32, expm1_f32, log_f32, log1p_f32, log2_f32,
                                  log10_f32, tanh_f32, sigmoid_f32, erf_f32, sigmoid_f64,
                                  floordiv_f32, floordiv_f64, remainder_f32, remainder_f64,
                                  floordiv_int, remainder_int, index_div, index_rem,
                                  strided_window)
"""


def entry_lines(params: tuple) -> list[str]:
    """Decorator, signature and prologue of the ``entry`` cfunc: C arguments in, and
    ``carray`` views over the pointers under the names the loop code uses.

    The loop is written straight into the cfunc (not a separate jitted function it
    calls): then nothing can return an error status, and the wrapper has no path into
    Numba's exception runtime, which a process loading the machine code without Numba
    could not provide. Parallelism is done by the caller (``kernels.cpu``), which runs
    disjoint ``[lo, hi)`` ranges of the same serial entry on several threads (ctypes
    releases the GIL). Numba's prange was tried: a prange over a large fused body took
    minutes to compile (183 s for a 50-op kernel), and a prange wrapper calling the body
    ran it 2.7x slower than a direct call. Scratch space comes from the caller because a
    kernel must not allocate.
    """
    cargs: list[str] = []
    ctys: list[str] = []
    pro: list[str] = []
    for name, kind, dtype, _ in params:
        c = f"c_{name}"
        if kind == "int":
            cargs.append(name)
            ctys.append("types.intp")
        elif kind == "mat":
            cargs += [c, c + "_r", c + "_c"]
            ctys += ["types.voidptr", "types.intp", "types.intp"]
            pro.append(f"    {name} = carray({c}, ({c}_r, {c}_c), np.int64)")
        else:
            cargs += [c, c + "_n"]
            ctys += ["types.voidptr", "types.intp"]
            npd = "np.int64" if kind == "vec" else _NP[dtype]
            pro.append(f"    {name} = carray({c}, ({c}_n,), {npd})")
    sig = ", ".join(ctys + ["types.intp", "types.intp"])
    return ["", "", f"@cfunc(types.void({sig}), nopython=True, error_model=\"numpy\", "
            f"fastmath={FASTMATH!r})",
            f"def entry({', '.join(cargs + ['lo', 'hi'])}):"] + pro


def _arrays(spec, alias) -> list[tuple]:
    nin, nout = len(spec.inputs), len(spec.outputs)
    return ([(f"in{i}", "arr", spec.inputs[i], None) for i in range(nin) if alias[i] < 0]
            + [(f"out{o}", "arr", spec.outputs[o][0], None) for o in range(nout)])


def _tables(*names: str) -> list[tuple]:
    kinds = {"oshape": "vec", "istr": "vec", "bstr": "vec", "ostr": "mat"}
    return [(n, kinds.get(n, "int"), None, None) for n in names]


def _finish(em: Emitter, loop: list[str], params: list[tuple]) -> Generated:
    """The module: header, typed constants, then the entry with ``loop`` as its body."""
    params = tuple(params)
    lines = [HEADER, _unused_imports_guard()] + em.const_lines() + entry_lines(params) + loop
    return Generated("\n".join(lines) + "\n", params)


def _unused_imports_guard() -> str:
    return ("_USED = (math, np, prange, carray, cfunc, types, exp_f32, expm1_f32, log_f32, "
            "log1p_f32, log2_f32, log10_f32, tanh_f32, sigmoid_f32, erf_f32, sigmoid_f64, "
            "floordiv_f32, floordiv_f64, remainder_f32, remainder_f64, floordiv_int, "
            "remainder_int, index_div, index_rem, strided_window)\n")


# ---- elementwise ------------------------------------------------------------------------

def _row_windows(live, pattern, ops, nin, length, ind, skip=frozenset()) -> list[str]:
    """Code that finds the flat offset of outer index ``t`` for every operand and takes
    its row window: a contiguous slice ("c"), a strided slice ("s"), or a broadcast
    scalar. Operands in ``skip`` (row outputs) get an offset but no window."""
    lines = [f"{ind}o{k} = 0" for k in live]
    lines += [f"{ind}for d in range(nd - 1, -1, -1):",
              f"{ind}    idx = index_rem(index_div(t, div), oshape[d])",
              f"{ind}    div *= oshape[d]"]
    lines += [f"{ind}    o{k} += idx * ostr[{k}, d]" for k in live]
    for k in live:
        if k in skip:
            continue
        cls = pattern[k]
        if cls == "c":
            lines.append(f"{ind}w{k} = {ops[k]}[o{k}:o{k} + {length}]")
        elif cls == "s":
            lines.append(f"{ind}s{k} = istr[{k}]")
            lines.append(f"{ind}w{k} = strided_window({ops[k]}, o{k}, {length}, s{k})")
        elif k < nin:
            lines.append(f"{ind}b{k} = {ops[k]}[o{k}]")
        else:
            raise NotImplementedError("kernels: an output with a zero stride")
    return lines


def elementwise_source(spec: KernelSpec, variant: tuple) -> Generated:
    """Source of one elementwise variant: ``("flat"|"strided", alias, pattern)``."""
    check_dtypes(spec)
    layout, alias, pattern = variant
    (phase,) = spec.phases
    em = Emitter()
    nin, nout = len(spec.inputs), len(spec.outputs)
    in_args = [f"in{i}" for i in range(nin) if alias[i] < 0]
    out_args = [f"out{o}" for o in range(nout)]
    body: list[str] = []
    loaded: dict[int, str] = {}
    params = _arrays(spec, alias)

    if layout == "flat":
        args = in_args + out_args
        ind = " " * 8

        def load(i):
            if i not in loaded:
                src = f"out{alias[i]}" if alias[i] >= 0 else f"in{i}"
                loaded[i] = f"x{i}"
                body.append(f"{ind}x{i} = {src}[i]")
            return loaded[i]

        def store(o):
            return f"out{o}[i]"
        # slice to [lo, hi) so the loop index starts at 0: LLVM then knows it is never
        # negative and drops NumPy-style wraparound selects (2x faster GELU)
        head = [f"    {a} = {a}[lo:hi]" for a in args] + ["    for i in range(hi - lo):"]
        pre: list[str] = []
    else:
        params += _tables("ninner", "oshape", "ostr", "istr")
        ops = [f"in{i}" for i in range(nin)] + [f"out{o}" for o in range(nout)]
        ind = " " * 12
        head = ["    nd = oshape.shape[0]", "    for t in range(lo, hi):", "        div = 1"]
        live = [k for k in range(nin + nout) if k >= nin or alias[k] < 0]
        pre = _row_windows(live, pattern, ops, nin, "ninner", "        ")
        pre.append("        for j in range(ninner):")
        load = _loader(spec, pattern, alias, nin, body, ind, "j")

        def store(o):
            return f"w{nin + o}[j]"

    ctx = _Ctx(spec, em, load)
    # load every input first so in-place outputs are read before they are written
    for i in _refs_inputs(phase):
        load(i)
    _stmts(phase.stmts, ctx, body, ind)
    for o, v in phase.stores:
        c, d, _ = ctx.ref(v)
        body.append(f"{ind}{store(o)} = {cast_code(c, d, spec.outputs[o][0])}")
    return _finish(em, head + pre + body, params)


# ---- rows -----------------------------------------------------------------------------

_IDENT = {"sum": 0, "prod": 1}


def _reduce_ident(op: str, d: str):
    if op in _IDENT:
        return _IDENT[op]
    if d == "bool":
        return op == "min"
    if _is_float(d):
        return -math.inf if op == "max" else math.inf
    import numpy as np
    info = np.iinfo(np.dtype(d))
    return int(info.min) if op == "max" else int(info.max)


def _combine(op: str, acc: str, v: str, d: str) -> str:
    if op == "sum":
        return f"{acc} + {v}"
    if op == "prod":
        return f"{acc} * {v}"
    o = ">" if op == "max" else "<"
    if _is_float(d):
        return f"{v} if (({v} {o} {acc}) | ({v} != {v})) else {acc}"
    return f"{v} if ({v} {o} {acc}) else {acc}"


def rows_source(spec: KernelSpec, variant: tuple) -> Generated:
    """Source of one rows variant: ``("rows", alias, pattern)``.

    ``body`` processes rows ``[lo, hi)`` (a chunk, when called from the parallel entry
    point) and allocates its per-row scratch buffer once. A reduce
    phase with per-element statements first writes its values to the scratch
    buffer in a loop LLVM vectorises, then reduces the buffer with ``UNROLL``
    independent accumulators (without reassociation, one accumulator is one
    serial dependency chain; unrolled inline the transcendental code does not
    vectorise: 93 ms vs 9 ms for a sum of exp over 8192x1024 measured here).
    """
    check_dtypes(spec)
    _, alias, pattern = variant
    em = Emitter()
    nin, nout = len(spec.inputs), len(spec.outputs)
    ops = [f"in{i}" for i in range(nin)] + [f"out{o}" for o in range(nout)]
    row_out = {o for o, (_, kind) in enumerate(spec.outputs) if kind == "row"}
    I1, I2 = " " * 4, " " * 8
    lines = ["    nd = oshape.shape[0]"]
    lines += [f"{I1}for t in range(lo, hi):", f"{I2}div = 1"]
    live = [k for k in range(nin + nout) if k >= nin or alias[k] < 0]
    lines += _row_windows(live, pattern, ops, nin, "R", I2,
                          skip={nin + o for o in row_out})
    ns = set()
    for p in spec.phases:
        for st in p.stmts + p.post:
            for a in st.args:
                if a[0] == "n":
                    ns.add(a[1])
    for d in sorted(ns):
        lines.append(f"{I2}n_{d} = {_NP[d]}(R)")

    red_code: dict[int, str] = {}
    red_dtype: dict[int, str] = {}
    bufs: dict[str, str] = {}
    reuse: dict = {}
    nred = 0
    for p in spec.phases:
        if p.kind == "reduce":
            k = nred
            nred += 1
            lines += _reduce_phase(spec, p, k, em, pattern, alias, red_code, red_dtype, nin,
                                   bufs, reuse)
        else:
            lines += _map_phase(spec, p, em, pattern, alias, red_code, red_dtype, nin, reuse)
    scratch = [(name, "scratch", d, "R") for name, d in sorted(bufs.items())]
    params = _arrays(spec, alias) + _tables("R", "oshape", "ostr", "istr") + scratch
    return _finish(em, lines, params)


def _loader(spec, pattern, alias, nin, body, ind, jexpr):
    loaded: dict[int, str] = {}

    def load(i):
        if i not in loaded:
            k = nin + alias[i] if alias[i] >= 0 else i
            loaded[i] = f"x{i}"
            if pattern[k] == "b":
                body.append(f"{ind}x{i} = b{k}")
            else:
                body.append(f"{ind}x{i} = w{k}[{jexpr}]")
        return loaded[i]
    return load


def _n_dtypes(p: Phase) -> set[str]:
    return {a[1] for s in p.stmts + p.post for a in s.args if a[0] == "n"}


def _ctx(spec, em, load, red_code, red_dtype, p) -> _Ctx:
    ctx = _Ctx(spec, em, load)
    ctx.red_code, ctx.red_dtype = red_code, red_dtype
    for d in _n_dtypes(p):
        ctx.n_code[d] = f"n_{d}"
    return ctx


def _reduce_phase(spec, p, k, em, pattern, alias, red_code, red_dtype, nin, bufs, reuse):
    I2, I3 = " " * 8, " " * 12
    lines: list[str] = []
    rv = p.reduce_value
    direct = None
    if not p.stmts and rv[0] == "in":
        i = rv[1]
        kk = nin + alias[i] if alias[i] >= 0 else i
        if pattern[kk] != "b":
            direct = (f"w{kk}", spec.inputs[i])
    saved_names, saved_types = dict(em.names), dict(em.var_dtypes)
    if direct is not None:
        src, acc_d = direct
    else:
        body: list[str] = []
        load = _loader(spec, pattern, alias, nin, body, I3, "j")
        ctx = _ctx(spec, em, load, red_code, red_dtype, p)
        _stmts(p.stmts, ctx, body, I3)
        c, acc_d, _ = ctx.ref(rv)
        val_d = acc_d
        if acc_d == "bool" and p.reduce_op in ("sum", "prod"):
            acc_d = "int64"
        src = f"buf{k}"
        bufs[src] = acc_d
        if val_d == acc_d and rv[0] == "v":
            # a later map phase recomputing this value reads it back (softmax: exp once)
            reuse[_canon(rv, {s.name: s for s in p.stmts})] = f"{src}[j]"
        lines.append(f"{I2}for j in range(R):")
        lines += body
        lines.append(f"{I3}{src}[j] = {cast_code(c, ctx.ref(rv)[1], acc_d)}")
    # per-element names are not visible to later phases
    em.names, em.var_dtypes = saved_names, saved_types
    red = p.reduce_op
    ident = em.const(_reduce_ident(red, acc_d), acc_d)
    U = UNROLL
    for u in range(U):
        lines.append(f"{I2}a{k}_{u} = {ident}")
    # a constant divisor: Numba's zero check folds away (and LLVM knows the result is
    # in [0, U), which index_rem would hide: 24 ms vs 17 ms for a softmax pass)
    lines.append(f"{I2}nb{k} = R - R % {U}")
    lines.append(f"{I2}for j in range(0, nb{k}, {U}):")
    for u in range(U):
        lines.append(f"{I3}e{u} = {src}[j + {u}]")
        lines.append(f"{I3}a{k}_{u} = {_combine(red, f'a{k}_{u}', f'e{u}', acc_d)}")
    lines.append(f"{I2}for j in range(nb{k}, R):")
    lines.append(f"{I3}e0 = {src}[j]")
    lines.append(f"{I3}a{k}_0 = {_combine(red, f'a{k}_0', 'e0', acc_d)}")
    level = [f"a{k}_{u}" for u in range(U)]
    while len(level) > 1:
        nxt = []
        for i in range(0, len(level), 2):
            lines.append(f"{I2}{level[i]} = {_combine(red, level[i], level[i + 1], acc_d)}")
            nxt.append(level[i])
        level = nxt
    raw = f"racc{k}"
    lines.append(f"{I2}{raw} = a{k}_0")
    red_code[k], red_dtype[k] = raw, acc_d
    if p.post:
        def noload(i):
            raise NotImplementedError("kernels: a post stmt cannot read an input array")
        ctx = _ctx(spec, em, noload, red_code, red_dtype, p)
        _stmts(p.post, ctx, lines, I2)
        last = p.post[-1]
        red_code[k], red_dtype[k] = em.names[last.name], last.dtype
    if p.store_result is not None:
        o = p.store_result
        lines.append(f"{I2}out{o}[o{nin + o}] = "
                     f"{cast_code(red_code[k], red_dtype[k], spec.outputs[o][0])}")
    return lines


def _map_phase(spec, p, em, pattern, alias, red_code, red_dtype, nin, reuse=None):
    I3 = " " * 12
    body: list[str] = []
    load = _loader(spec, pattern, alias, nin, body, I3, "j")
    ctx = _ctx(spec, em, load, red_code, red_dtype, p)
    ctx.reuse = reuse or {}
    for i in _refs_inputs(p):
        load(i)
    _stmts(p.stmts, ctx, body, I3)
    for o, v in p.stores:
        if spec.outputs[o][1] != "full":
            raise ValueError(f"kernels: a map phase stores to 'row' output {o}")
        c, d, _ = ctx.ref(v)
        body.append(f"{I3}w{nin + o}[j] = {cast_code(c, d, spec.outputs[o][0])}")
    return [" " * 8 + "for j in range(R):"] + body


# ---- rows, column-blocked ---------------------------------------------------------------

BLOCK = 512  # rows processed side by side when the reduced axis is strided


def _acc_dtype(spec, p, em, pattern, alias, nin, red_code, red_dtype) -> str:
    saved = dict(em.names), dict(em.var_dtypes), em._tmp
    body: list[str] = []
    ctx = _ctx(spec, em, _loader(spec, pattern, alias, nin, body, "", "j"), red_code,
               red_dtype, p)
    _stmts(p.stmts, ctx, body, "")
    d = ctx.ref(p.reduce_value)[1]
    em.names, em.var_dtypes, em._tmp = saved
    if d == "bool" and p.reduce_op in ("sum", "prod"):
        d = "int64"
    return d


def rows_blocked_source(spec: KernelSpec, variant: tuple) -> Generated:
    """Source of a column-blocked rows variant ``("rowsblk", alias, jpat, bpat)``.

    Used when the reduced axis is strided but the innermost outer axis is contiguous
    (e.g. reducing dim 0 of a C-contiguous matrix through a transposed view): ``BLOCK``
    neighbouring rows are reduced side by side, so each step of the reduced axis reads
    one contiguous run and the per-row accumulators form a vectorisable loop.
    ``jpat``/``bpat`` class each operand's stride along the reduced axis and along the
    block axis (``c`` unit, ``b`` zero, ``s`` general).
    """
    check_dtypes(spec)
    _, alias, jpat, bpat = variant
    em = Emitter()
    nin, nout = len(spec.inputs), len(spec.outputs)
    ops = [f"in{i}" for i in range(nin)] + [f"out{o}" for o in range(nout)]
    row_out = {nin + o for o, (_, kind) in enumerate(spec.outputs) if kind == "row"}
    live = [k for k in range(nin + nout) if k >= nin or alias[k] < 0]
    I1, I2, I3, I4 = (" " * n for n in (4, 8, 12, 16))
    lines = ["    nd = oshape.shape[0]",
             f"    nblk = (M + {BLOCK} - 1) // {BLOCK}"]
    lines += [f"{I1}for tt in range(lo, hi):", f"{I2}t = index_div(tt, nblk)",
              f"{I2}blk = tt - t * nblk", f"{I2}b0 = blk * {BLOCK}",
              f"{I2}nb = min({BLOCK}, M - b0)", f"{I2}div = 1"]
    for k in live:
        lines.append(f"{I2}o{k} = b0 * bstr[{k}]")
    lines += [f"{I2}for d in range(nd - 1, -1, -1):",
              f"{I2}    idx = index_rem(index_div(t, div), oshape[d])",
              f"{I2}    div *= oshape[d]"]
    for k in live:
        lines.append(f"{I2}    o{k} += idx * ostr[{k}, d]")
    for k in live:
        lines.append(f"{I2}s{k} = istr[{k}]")
        lines.append(f"{I2}q{k} = bstr[{k}]")
    ns = sorted({a[1] for p in spec.phases for st in p.stmts + p.post for a in st.args
                 if a[0] == "n"})
    for d in ns:
        lines.append(f"{I2}n_{d} = {_NP[d]}(R)")

    def view_lines(ind: str, with_j: bool) -> tuple[list[str], dict]:
        """Per-j views: an operand's run of nb elements (or its scalar)."""
        out, names = [], {}
        for k in live:
            if k in row_out:
                continue
            base = f"o{k} + j * s{k}" if with_j and jpat[k] != "b" else f"o{k}"
            if bpat[k] == "c":
                out.append(f"{ind}u{k} = {ops[k]}[{base}:{base} + nb]")
                names[k] = f"u{k}[b]"
            elif bpat[k] == "b":
                names[k] = f"{ops[k]}[{base}]"
            else:
                out.append(f"{ind}u{k} = strided_window({ops[k]}, {base}, nb, q{k})")
                names[k] = f"u{k}[b]"
        return out, names

    def loader(names, body, ind):
        loaded: dict[int, str] = {}

        def load(i):
            if i not in loaded:
                k = nin + alias[i] if alias[i] >= 0 else i
                loaded[i] = f"x{i}"
                body.append(f"{ind}x{i} = {names[k]}")
            return loaded[i]
        return load

    red_code: dict[int, str] = {}
    red_dtype: dict[int, str] = {}
    arrays: list[tuple[str, str]] = []
    nred = 0
    for p in spec.phases:
        if p.kind == "reduce":
            k = nred
            nred += 1
            acc_d = _acc_dtype(spec, p, em, jpat, alias, nin, red_code, red_dtype)
            acc = f"acc{k}"
            arrays.append((acc, acc_d))
            ident = em.const(_reduce_ident(p.reduce_op, acc_d), acc_d)
            lines += [f"{I2}for b in range(nb):", f"{I3}{acc}[b] = {ident}",
                      f"{I2}for j in range(R):"]
            vl, names = view_lines(I3, True)
            lines += vl
            lines.append(f"{I3}for b in range(nb):")
            saved = dict(em.names), dict(em.var_dtypes)
            body: list[str] = []
            ctx = _ctx(spec, em, loader(names, body, I4), red_code, red_dtype, p)
            _stmts(p.stmts, ctx, body, I4)
            c, d, _ = ctx.ref(p.reduce_value)
            body.append(f"{I4}{acc}[b] = "
                        f"{_combine(p.reduce_op, f'{acc}[b]', cast_code(c, d, acc_d), acc_d)}")
            lines += body
            em.names, em.var_dtypes = saved
            red_code[k], red_dtype[k] = f"{acc}[b]", acc_d
            post_lines: list[str] = []
            if p.post:
                def noload(i):
                    raise NotImplementedError("kernels: a post stmt cannot read an input array")
                ctx = _ctx(spec, em, noload, red_code, red_dtype, p)
                _stmts(p.post, ctx, post_lines, I3)
                for st in p.post:
                    ident_ = em.names[st.name]
                    arr = f"pa_{ident_}"
                    arrays.append((arr, st.dtype))
                    post_lines.append(f"{I3}{arr}[b] = {ident_}")
                    em.names[st.name] = f"{arr}[b]"
                last = p.post[-1]
                red_code[k], red_dtype[k] = em.names[last.name], last.dtype
            if p.store_result is not None:
                o = p.store_result
                post_lines.append(f"{I3}out{o}[o{nin + o} + b * q{nin + o}] = "
                                  f"{cast_code(red_code[k], red_dtype[k], spec.outputs[o][0])}")
            if post_lines:
                lines.append(f"{I2}for b in range(nb):")
                lines += post_lines
        else:
            lines.append(f"{I2}for j in range(R):")
            vl, names = view_lines(I3, True)
            lines += vl
            lines.append(f"{I3}for b in range(nb):")
            body = []
            ctx = _ctx(spec, em, loader(names, body, I4), red_code, red_dtype, p)
            for i in _refs_inputs(p):
                ctx.load(i)
            _stmts(p.stmts, ctx, body, I4)
            for o, v in p.stores:
                if spec.outputs[o][1] != "full":
                    raise ValueError(f"kernels: a map phase stores to 'row' output {o}")
                c, d, _ = ctx.ref(v)
                body.append(f"{I4}{names[nin + o]} = {cast_code(c, d, spec.outputs[o][0])}")
            lines += body
    scratch = [(arr, "scratch", d, BLOCK) for arr, d in arrays]
    params = _arrays(spec, alias) + _tables("M", "R", "oshape", "ostr", "istr", "bstr") + scratch
    return _finish(em, lines, params)
