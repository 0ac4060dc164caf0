"""Numba source generation for ``KernelSpec``s: one body emitter, thin loop wrappers.

Each kernel *variant* (loop shape, which inputs alias outputs, the stride class of
every operand's innermost axis) becomes one small Python module whose ``cfunc``
``entry`` (plain C ABI, see ``entry_lines``; its machine code is what the kernel cache
keeps) runs the loop over an index range ``[lo, hi)`` (elements, outer rows or row
blocks); ``kernels.cpu`` calls it once, or on disjoint ranges from several threads.
``kernels.cpu.CompiledKernel`` picks the variant at run time from the arrays passed,
so a kernel stays generic in sizes and strides while each loop is specialised where
it matters for vectorisation.

The code is generated in two layers, so that another target reuses the first:

- the **body** (target independent): ``emit_body(ctx, phase, ind, sink) -> lines`` is
  what one element step of a phase computes: operand loads, the stmts (each from the
  op registry's expression template, ``ir.REGISTRY[op].expr``, parsed with ``ast`` and
  re-emitted with typed constants, dtype-specific fast math functions and NumPy's NaN
  semantics), then the stores of a map phase or, for a reduce phase, the value handed
  to ``sink(code, dtype) -> statement``. ``emit_post`` is the once-per-row code after
  a reduction (post stmts, the row result's store). A ``Ctx`` is all a body asks of
  its target: ``elem(k)``, the expression for operand ``k``'s current element;
- the **wrappers** (this CPU target) put loops around bodies:
  ``wrap_flat`` (``for i``: every operand one contiguous run), ``wrap_rows`` (outer
  rows with offsets from run-time shape/stride tables, each phase an inner loop whose
  operands are classed ``c`` unit stride, ``b`` stride 0 (loaded once per row) or
  ``s`` general; reductions through a buffer and ``UNROLL`` accumulators;
  ``wrap_strided`` is its one-map-phase case) and ``wrap_rows_blocked`` (``BLOCK``
  neighbouring rows side by side when the reduced axis is strided).

A GPU target would write only wrappers: a launch whose ``Ctx.elem`` indexes operands
by the thread's index (``in0[i]`` with ``i = cuda.grid(1)``) around
``emit_body`` under an ``if i < n:`` guard, and reductions whose ``sink`` writes the
value to shared memory before a tree combine (``_combine``), then ``emit_post``;
the ``kernels.cpu.fastmath`` helpers bodies call by name need device versions.
"""
from __future__ import annotations

import ast
import functools
import math
import os
import re
from dataclasses import replace
from typing import NamedTuple

from ir import dtypes as dt
from ir.ops.nn import GELU_GRAD_EXPR
from ir.registry import REGISTRY, compute_dtype

from ..spec import KernelSpec, Phase, Stmt

# float32 functions generated code calls from kernels.cpu.fastmath (by name: importing
# fastmath imports Numba, which only a cold compile needs)
FUNCTIONS_F32 = {
    "exp": "exp_f32", "expm1": "expm1_f32", "log": "log_f32", "log1p": "log1p_f32",
    "log2": "log2_f32", "log10": "log10_f32", "tanh": "tanh_f32", "sigmoid": "sigmoid_f32",
    "erf": "erf_f32", "gelu_grad": "gelu_grad_f32",
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
        tname = "float" if isinstance(value, float) else type(value).__name__
        key = (repr(value), tname, dtype)
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
        if f == "gelu_grad" and isf:  # its definition (ir.ops.nn.GELU_GRAD_EXPR)
            inner = _ExprGen(em, cd, [a[0]], {}, self.op)
            return inner.gen(_parse(GELU_GRAD_EXPR.format("__a0")))
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
    tree = _parse(src)
    expr = _ExprGen(em, cd, args, attrs, op).gen(tree)
    if rule == "bool" or op in _LOGICAL:
        val, val_d = expr, "bool"  # comparisons and logical ops yield Python bools
    else:
        # NumPy's loop for ``cd`` returns a ``cd`` value, but Numba computes bool and
        # small-integer arithmetic in wider integers (True + True is 2): bring the value
        # back to ``cd`` first (bool + bool is logical or, bool * bool logical and, as in
        # eager), then to the stmt's dtype
        val, val_d = expr, cd
        if not _same_float_binop(expr, args, em, cd):
            val = cast_code(expr, "__any__", cd)
    lines.append(f"{indent}{target} = {cast_code(val, val_d, out_d)}")
    return target


@functools.lru_cache(maxsize=1024)
def _parse(src: str) -> ast.Expression:
    """An op's expression template, parsed once (``_ExprGen`` only reads the tree)."""
    return ast.parse(src, mode="eval")


_BINOP = re.compile(r"\((\w+) [-+*/] (\w+)\)")


def _same_float_binop(expr: str, args: list[str], em: Emitter, cd: str) -> bool:
    """Whether ``expr`` is ``(a op b)`` (``+ - * /``) of two operands already of the
    float dtype ``cd`` (the stmt's arguments, converted to ``cd``, or constants typed
    ``cd``): Numba computes that in ``cd`` itself, so the conversion ``cast_code`` would
    wrap it in is a call for Numba to type and lower that emits no instruction. (Every
    such call cost type inference time; integer and bool arithmetic widens in Numba and
    keeps its conversion.)"""
    if cd not in ("float32", "float64"):
        return False
    m = _BINOP.fullmatch(expr)
    if m is None:
        return False
    consts = {name: key[2] for key, name in em.consts.items()}
    return all(x in args or consts.get(x) == cd for x in m.groups())


# ---- the body emitter (target independent) -----------------------------------------------

class Ctx:
    """What a body needs from the loop around it: how an operand's element reads.

    ``elem(k)`` is the expression for operand ``k``'s element at the current index
    (inputs ``0..nin-1``, then outputs): ``in0[i]`` in a flat loop, ``w3[j]`` (or the
    row scalar ``b3``) in a strided row, ``u3[b]`` in a row block, and for a GPU launch
    the element at the thread's index. ``elem`` None: the body may not read arrays
    (post stmts, which run once per row). ``red`` maps reduce phase ``k`` to the
    (code, dtype) of its result; ``reuse`` maps a value's structural key to the code
    reading an earlier phase's buffer holding it.
    """

    def __init__(self, spec: KernelSpec, em: Emitter, alias: tuple, elem=None,
                 red: dict | None = None, reuse: dict | None = None) -> None:
        self.spec, self.em, self.alias, self.elem = spec, em, alias, elem
        self.nin = len(spec.inputs)
        self.red = {} if red is None else red
        self.reuse = {} if reuse is None else reuse
        self.loaded: dict[int, str] = {}
        self.lines: list[str] = []
        self.ind = ""

    def operand(self, i: int) -> int:
        """The operand input ``i`` reads: the output it aliases, else itself."""
        return self.nin + self.alias[i] if self.alias[i] >= 0 else i

    def load(self, i: int) -> str:
        """Input ``i``'s element, read into ``x{i}`` once per body."""
        if self.elem is None:
            raise NotImplementedError("kernels: a post stmt cannot read an input array")
        if i not in self.loaded:
            self.loaded[i] = f"x{i}"
            self.lines.append(f"{self.ind}x{i} = {self.elem(self.operand(i))}")
        return self.loaded[i]

    def ref(self, r) -> tuple[str, str, bool]:
        """(code, dtype, is_constant) of a spec reference."""
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
            return (*self.red[r[1]], False)
        if tag == "n":
            return f"n_{r[1]}", r[1], False
        raise ValueError(f"kernels: bad reference {r!r}")


def emit_body(ctx: Ctx, phase: Phase, ind: str, sink=None) -> list[str]:
    """The scalar code of one element step of ``phase``, indented by ``ind``.

    A map phase loads every input it reads first (so an in-place output is read before
    it is written), computes its stmts and stores each value to its output's element.
    A reduce phase computes its stmts and hands the reduced value to the wrapper's
    ``sink(code, dtype) -> statement`` (a buffer write, a combine into an accumulator);
    its per-element names are not visible to later phases.
    """
    ctx.lines, ctx.ind, ctx.loaded = [], ind, {}
    lines, em, spec = ctx.lines, ctx.em, ctx.spec
    if phase.kind == "map":
        for i in _refs_inputs(phase):
            ctx.load(i)
        _stmts(phase.stmts, ctx, lines, ind)
        for o, v in phase.stores:
            if spec.outputs[o][1] != "full":
                raise ValueError(f"kernels: a map phase stores to 'row' output {o}")
            c, d, _ = ctx.ref(v)
            lines.append(f"{ind}{ctx.elem(ctx.nin + o)} = {cast_code(c, d, spec.outputs[o][0])}")
        return lines
    saved = dict(em.names), dict(em.var_dtypes)
    _stmts(phase.stmts, ctx, lines, ind)
    c, d, _ = ctx.ref(phase.reduce_value)
    lines.append(f"{ind}{sink(c, d)}")
    for o, v in phase.stores:  # full outputs computed here once (``hoist_stores``)
        c, d, _ = ctx.ref(v)
        lines.append(f"{ind}{ctx.elem(ctx.nin + o)} = {cast_code(c, d, spec.outputs[o][0])}")
    em.names, em.var_dtypes = saved
    return lines


def emit_post(ctx: Ctx, phase: Phase, k: int, ind: str, row_elem, spill=None) -> list[str]:
    """The per-row scalar code after reduce phase ``k``: its post stmts (``spill(post)``
    may add lines keeping their values, e.g. per-row arrays), then the store of the row
    result to ``row_elem(operand)``. Updates ``ctx.red[k]`` to the last post value."""
    lines: list[str] = []
    if phase.post:
        _stmts(phase.post, ctx, lines, ind)
        if spill is not None:
            lines += spill(phase.post)
        last = phase.post[-1]
        ctx.red[k] = (ctx.em.names[last.name], last.dtype)
    if phase.store_result is not None:
        o = phase.store_result
        code, d = ctx.red[k]
        lines.append(f"{ind}{row_elem(ctx.nin + o)} = "
                     f"{cast_code(code, d, ctx.spec.outputs[o][0])}")
    return lines


def _acc_dtype(op: str, d: str) -> str:
    """The accumulator dtype of reduction ``op`` over values of dtype ``d``."""
    return "int64" if d == "bool" and op in ("sum", "prod") else d


def _canon(ref, defs: dict):
    """A structural key for a value: equal keys compute equal values within a row."""
    if ref[0] == "v" and ref[1] in defs:
        s = defs[ref[1]]
        return (s.op, s.attrs, s.dtype, tuple(_canon(a, defs) for a in s.args))
    return tuple(ref)


def _stmts(stmts, ctx: Ctx, lines: list[str], indent: str) -> None:
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


def _reads(phase: Phase) -> set[int]:
    """The inputs a phase reads anywhere (stmts, post, stores, reduce value)."""
    refs = [a for s in phase.stmts + phase.post for a in s.args]
    refs += [v for _, v in phase.stores] + [phase.reduce_value]
    return {r[1] for r in refs if r is not None and r[0] == "in"}


def hoist_stores(spec: KernelSpec, alias: tuple) -> KernelSpec:
    """Move a rows kernel's full-output stores out of its final map phase into the
    reduce phase that already computes part of their value, so each such value is
    computed once per element (GELU's backward fused with the bias gradient's column
    sum: ``y = gelu_backward(gy, x)`` is stored from the sum loop instead of being
    computed there and again by the map phase). A store moves when its value needs no
    row result of that phase or a later one; its stmts join that phase's body (those
    equal to one of the body's stmts reuse it), the map keeps only what its remaining
    stores need and goes when none remain. A store is kept in the map when a later
    phase would still read an input that aliases its output (that input would be
    overwritten before the read). The same stmts compute the same float values."""
    phases = list(spec.phases)
    if len(phases) < 2 or phases[-1].kind != "map" or not phases[-1].stores:
        return spec
    mp = phases[-1]
    mdefs = {s.name: s for s in mp.stmts}
    taken = {s.name for p in phases for s in p.stmts + p.post}

    def closure(ref) -> list:
        need: set[str] = set()
        stack = [ref]
        while stack:
            r = stack.pop()
            if r[0] == "v" and r[1] in mdefs and r[1] not in need:
                need.add(r[1])
                stack += list(mdefs[r[1]].args)
        return [s for s in mp.stmts if s.name in need]

    def target(stmts: list) -> int | None:
        """The first reduce phase sharing a stmt with ``stmts`` that can compute them."""
        posts: set[str] = set()
        k = 0
        for pi, p in enumerate(phases[:-1]):
            if p.kind == "reduce":
                pdefs = {s.name: s for s in p.stmts}
                keys = {_canon(("v", s.name), pdefs) for s in p.stmts}
                own = {s.name for s in stmts}
                ok = all(a[0] in ("in", "c", "n") or (a[0] == "r" and a[1] < k) or
                         (a[0] == "v" and (a[1] in own or a[1] in posts))
                         for s in stmts for a in s.args)
                if ok and any(_canon(("v", s.name), mdefs) in keys for s in stmts):
                    return pi
                k += 1
            posts |= {s.name for s in p.post}
        return None

    plan = {}  # store index in mp.stores -> phase index
    for si, (_o, ref) in enumerate(mp.stores):
        if ref[0] == "v" and ref[1] in mdefs:
            pi = target(closure(ref))
            if pi is not None:
                plan[si] = pi
    nin = len(spec.inputs)
    while plan:
        new = list(phases)
        for si, pi in sorted(plan.items()):
            o, ref = mp.stores[si]
            p = new[pi]
            pdefs = {s.name: s for s in p.stmts}
            have = {_canon(("v", s.name), pdefs): s.name for s in p.stmts}
            ren: dict[str, str] = {}
            add = []
            for s in closure(ref):
                key = _canon(("v", s.name), mdefs)
                if key in have:
                    ren[s.name] = have[key]
                    continue
                n = len(taken)
                while f"h{n}" in taken:
                    n += 1
                ren[s.name] = f"h{n}"
                taken.add(ren[s.name])
                add.append(Stmt(ren[s.name], s.op, tuple(
                    ("v", ren[a[1]]) if a[0] == "v" and a[1] in ren else a for a in s.args),
                    s.attrs, s.dtype))
            new[pi] = replace(p, stmts=p.stmts + tuple(add),
                              stores=p.stores + ((o, ("v", ren[ref[1]])),))
        keep = [st for si, st in enumerate(mp.stores) if si not in plan]
        need = {s.name for _o, r in keep for s in closure(r)}
        if keep:
            new[-1] = Phase("map", tuple(s for s in mp.stmts if s.name in need),
                            stores=tuple(keep))
        else:
            new.pop()
        bad = [si for si, pi in plan.items()
               if any(alias[i] == mp.stores[si][0] and i in _reads(q)
                      for q in new[pi + 1:] for i in range(nin))]
        if not bad:
            return KernelSpec(spec.inputs, spec.outputs, tuple(new), spec.kind)
        for si in bad:
            del plan[si]
    return spec


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


# ---- the module and its C entry point --------------------------------------------------

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
from numba import cfunc, njit, prange, types
from kernels.cpu.pipeline import LeanCompiler
from kernels.cpu.fastmath import (exp_f32, expm1_f32, log_f32, log1p_f32, log2_f32,
                                  log10_f32, tanh_f32, sigmoid_f32, erf_f32, gelu_grad_f32,
                                  sigmoid_f64,
                                  floordiv_f32, floordiv_f64, remainder_f32, remainder_f64,
                                  floordiv_int, remainder_int, index_div, index_rem,
                                  window, strided_window, ptr_window, ptr_matrix,
                                  float_key, key_float, vsum)
"""


# the fastmath helpers Numba inlines at its IR level (``inline="always"``, checked by
# tests/kernels/test_codegen_pipeline.py): a kernel calling one compiles with Numba's
# default pipeline, every other with ``pipeline.LeanCompiler``
INLINED = ("floordiv_f32", "floordiv_f64", "floordiv_int", "remainder_f32", "remainder_f64",
           "remainder_int", "sigmoid_f64")
LEAN = ", no_rewrites=True, pipeline_class=LeanCompiler"


def lean(code: str) -> bool:
    """Whether kernel code ``code`` (its loop) can compile with ``LeanCompiler``."""
    return not any(f"{name}(" in code for name in INLINED)


def entry_lines(params: tuple, direct: frozenset = frozenset(), options: str = "") -> list[str]:
    """Decorator, signature and prologue of the ``entry`` cfunc: C arguments in, and
    array views over the pointers under the names the loop code uses (``ptr_window`` and
    ``ptr_matrix``, which type and lower in a fraction of ``carray``'s time).

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
            pro.append(f"    {name} = ptr_matrix({c}, {c}_r, {c}_c, np.int64)")
        else:
            cargs += [c, c + "_n"]
            ctys += ["types.voidptr", "types.intp"]
            npd = "np.int64" if kind == "vec" else _NP[dtype]
            if name not in direct:  # ``direct``: the loop views these itself
                pro.append(f"    {name} = ptr_window({c}, 0, {c}_n, {npd})")
    sig = ", ".join(ctys + ["types.intp", "types.intp"])
    return ["", "", f"@cfunc(types.void({sig}), nopython=True{options}, error_model=\"numpy\", "
            f"fastmath={FASTMATH!r})",
            f"def entry({', '.join(cargs + ['lo', 'hi'])}):"] + pro


def _arrays(spec, alias) -> list[tuple]:
    nin, nout = len(spec.inputs), len(spec.outputs)
    return ([(f"in{i}", "arr", spec.inputs[i], None) for i in range(nin) if alias[i] < 0]
            + [(f"out{o}", "arr", spec.outputs[o][0], None) for o in range(nout)])


def _tables(*names: str) -> list[tuple]:
    kinds = {"oshape": "vec", "istr": "vec", "bstr": "vec", "ostr": "mat"}
    return [(n, kinds.get(n, "int"), None, None) for n in names]


def _finish(em: Emitter, loop: list[str], params: list[tuple],
            direct: frozenset = frozenset()) -> Generated:
    """The module: header, typed constants, then the entry with ``loop`` as its body
    (``direct``: operands ``loop`` views from their pointers itself)."""
    params = tuple(params)
    options = LEAN if lean("\n".join(loop)) else ""
    lines = ([HEADER, _unused_imports_guard()] + em.const_lines()
             + entry_lines(params, direct, options) + loop)
    return Generated("\n".join(lines) + "\n", params)


def _unused_imports_guard() -> str:
    return ("_USED = (math, np, prange, cfunc, types, LeanCompiler, exp_f32, "
            "expm1_f32, log_f32, "
            "log1p_f32, log2_f32, log10_f32, tanh_f32, sigmoid_f32, erf_f32, gelu_grad_f32, "
            "sigmoid_f64, "
            "floordiv_f32, floordiv_f64, remainder_f32, remainder_f64, floordiv_int, "
            "remainder_int, index_div, index_rem, window, strided_window, ptr_window, "
            "ptr_matrix, float_key, key_float, vsum)\n")



# ---- reductions -------------------------------------------------------------------------

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


# ---- loop wrappers (the CPU target) -----------------------------------------------------

I1, I2, I3, I4 = (" " * n for n in (4, 8, 12, 16))


def _operands(spec: KernelSpec) -> list[str]:
    return [f"in{i}" for i in range(len(spec.inputs))] + [
        f"out{o}" for o in range(len(spec.outputs))]


def _live(spec: KernelSpec, alias: tuple) -> list[int]:
    """Operands passed as arrays: every output, and each input not aliasing one."""
    nin = len(spec.inputs)
    return [k for k in range(nin + len(spec.outputs)) if k >= nin or alias[k] < 0]


def _row_outputs(spec: KernelSpec) -> set[int]:
    nin = len(spec.inputs)
    return {nin + o for o, (_, kind) in enumerate(spec.outputs) if kind == "row"}


# Operands above which a variant accumulates its row offsets in the scratch vector
# ``offs`` rather than one scalar per operand (see ``_offsets``).
OFFS_VECTOR_MIN = int(os.environ.get("GCOMPILE_OFFS_VECTOR_MIN", 8))


def _offs_vector(spec: KernelSpec, alias: tuple) -> bool:
    return len(_live(spec, alias)) > OFFS_VECTOR_MIN


def _offsets(live: list[int], start, start_q: str, vector: bool) -> list[str]:
    """Code finding every operand's flat offset ``o{k}`` of outer index ``t`` from the
    run-time shape/stride tables (``start(k)``, or ``start_q`` as code in ``q``: the
    offset of an operand before the outer axes).

    With ``vector`` the offsets accumulate in the scratch vector ``offs`` (one slot per
    row of ``ostr``) through a loop over the operands and are read out after the loop.
    One loop-carried scalar per operand made Numba's type inference and SSA passes the
    larger part of compiling a kernel with many operands (an optimizer update over 68
    operands: 1.7 s, 1.3 s with the vector); with few operands the scalars cost little
    to compile and save the vector's loads and stores on every row (a 3-element row of
    a 4-operand kernel: ~1.5x faster). The integer sums are the same either way."""
    head = [f"{I2}div = 1"]
    step = [f"{I2}for d in range(nd - 1, -1, -1):",
            f"{I2}    idx = index_rem(index_div(t, div), oshape[d])",
            f"{I2}    div *= oshape[d]"]
    if not vector:
        return (head + [f"{I2}o{k} = {start(k)}" for k in live] + step
                + [f"{I2}    o{k} += idx * ostr[{k}, d]" for k in live])
    return (head + [f"{I2}for q in range(offs.shape[0]):", f"{I2}    offs[q] = {start_q}"]
            + step + [f"{I2}    for q in range(offs.shape[0]):",
                      f"{I2}        offs[q] += idx * ostr[q, d]"]
            + [f"{I2}o{k} = offs[{k}]" for k in live])


def _offs_scratch(spec: KernelSpec, alias: tuple) -> list[tuple]:
    """The scratch vector ``_offsets`` accumulates in (one int64 per operand), if any."""
    if not _offs_vector(spec, alias):
        return []
    return [("offs", "scratch", "int64", len(spec.inputs) + len(spec.outputs))]


def _rowlen_lines(spec: KernelSpec) -> list[str]:
    """The row length as a scalar of each dtype the stmts read it in."""
    ns = {a[1] for p in spec.phases for st in p.stmts + p.post for a in st.args if a[0] == "n"}
    return [f"{I2}n_{d} = {_NP[d]}(R)" for d in sorted(ns)]


def wrap_flat(spec: KernelSpec, alias: tuple, pattern: tuple | None = None) -> Generated:
    """``for i in range(hi - lo)`` around the body: every operand one contiguous run,
    except inputs ``pattern`` classes ``b`` (one element, broadcast: read once)."""
    em = Emitter()
    ops = _operands(spec)
    scalar = {k for k in range(len(ops)) if pattern is not None and pattern[k] == "b"}
    # window [lo, hi) so the loop index starts at 0: LLVM then knows it is never
    # negative and drops NumPy-style wraparound selects (2x faster GELU); straight from
    # the pointer (a ``carray`` and then a window cost Numba twice the compile time)
    live = _live(spec, alias)
    dts = list(spec.inputs) + [d for d, _ in spec.outputs]
    head = [f"{I1}b{k} = {ops[k]}[0]" if k in scalar else
            f"{I1}{ops[k]} = ptr_window(c_{ops[k]}, lo, hi - lo, {_NP[dts[k]]})"
            for k in live]
    ctx = Ctx(spec, em, alias, lambda k: f"b{k}" if k in scalar else f"{ops[k]}[i]")
    body = emit_body(ctx, spec.phases[0], I2)
    return _finish(em, head + [f"{I1}for i in range(hi - lo):"] + body, _arrays(spec, alias),
                   frozenset(ops[k] for k in live if k not in scalar))


def wrap_rows(spec: KernelSpec, alias: tuple, pattern: tuple, length: str = "R") -> Generated:
    """Outer rows ``t`` in ``[lo, hi)``, each row's phases as inner loops over ``length``
    elements: the strided elementwise variant (one map phase, ``length="ninner"``) and
    the rows variant. An operand's row is a window ``w{k}`` (``c``: contiguous slice,
    ``s``: strided) or, classed ``b``, the scalar ``b{k}`` loaded once per row."""
    em = Emitter()
    nin, ops, live = len(spec.inputs), _operands(spec), _live(spec, alias)
    row_out = _row_outputs(spec)
    lines = [f"{I1}nd = oshape.shape[0]", f"{I1}for t in range(lo, hi):"]
    lines += _offsets(live, lambda k: "0", "0", _offs_vector(spec, alias))
    for k in live:
        if k in row_out:
            continue  # an offset, no window
        cls = pattern[k]
        if cls == "c":
            lines.append(f"{I2}w{k} = window({ops[k]}, o{k}, {length})")
        elif cls == "s":
            lines.append(f"{I2}s{k} = istr[{k}]")
            lines.append(f"{I2}w{k} = strided_window({ops[k]}, o{k}, {length}, s{k})")
        elif k < nin:
            lines.append(f"{I2}b{k} = {ops[k]}[o{k}]")
        else:
            raise NotImplementedError("kernels: an output with a zero stride")
    lines += _rowlen_lines(spec)

    def elem(k: int) -> str:
        return f"b{k}" if pattern[k] == "b" else f"w{k}[j]"

    red: dict[int, tuple[str, str]] = {}
    bufs: dict[str, str] = {}
    reuse: dict = {}
    for p in spec.phases:
        if p.kind == "map":
            ctx = Ctx(spec, em, alias, elem, red, reuse)
            lines += [f"{I2}for j in range({length}):"] + emit_body(ctx, p, I3)
        else:
            lines += _rows_reduce(Ctx(spec, em, alias, elem, red), p, len(red), pattern,
                                  bufs, reuse)
    scratch = [(name, "scratch", d, "R") for name, d in sorted(bufs.items())]
    params = (_arrays(spec, alias) + _tables(length, "oshape", "ostr", "istr") + scratch
              + _offs_scratch(spec, alias))
    return _finish(em, lines, params)


def wrap_strided(spec: KernelSpec, alias: tuple, pattern: tuple) -> Generated:
    """The strided elementwise variant: ``wrap_rows`` over rows of ``ninner`` elements."""
    return wrap_rows(spec, alias, pattern, "ninner")


def _rows_reduce(ctx: Ctx, p: Phase, k: int, pattern, bufs: dict, reuse: dict) -> list[str]:
    """Reduce phase ``k`` of a row. With per-element statements the body first writes
    its values to the scratch buffer ``buf{k}`` in a loop LLVM vectorises; then the
    buffer (or the input row itself) is reduced with ``UNROLL`` independent
    accumulators (without reassociation, one accumulator is one serial dependency
    chain; unrolled inline the transcendental code does not vectorise: 93 ms vs 9 ms
    for a sum of exp over 8192x1024 measured here)."""
    em, rv, op = ctx.em, p.reduce_value, p.reduce_op
    lines: list[str] = []
    contiguous = True  # src is a C-contiguous 1-D array (the row itself, or a buffer)
    if not p.stmts and rv[0] == "in" and pattern[ctx.operand(rv[1])] != "b":
        src, acc_d = f"w{ctx.operand(rv[1])}", ctx.spec.inputs[rv[1]]
        contiguous = pattern[ctx.operand(rv[1])] == "c"
    else:
        src = f"buf{k}"

        def sink(c: str, d: str) -> str:
            bufs[src] = _acc_dtype(op, d)
            if bufs[src] == d and rv[0] == "v":
                # a later map phase recomputing this value reads it back (softmax: exp once)
                reuse[_canon(rv, {s.name: s for s in p.stmts})] = f"{src}[j]"
            return f"{src}[j] = {cast_code(c, d, bufs[src])}"
        lines += [f"{I2}for j in range(R):"] + emit_body(ctx, p, I3, sink)
        acc_d = bufs[src]
    if op in ("max", "min") and acc_d in ("float32", "float64"):
        return lines + _keyed_extremum(ctx, p, k, src, acc_d)
    if op == "sum" and acc_d in ("float32", "float64") and contiguous:
        lines.append(f"{I2}racc{k} = vsum({src}, R)")
        ctx.red[k] = (f"racc{k}", acc_d)
        ctx.elem = None  # post stmts run once per row
        return lines + emit_post(ctx, p, k, I2, lambda q: f"{_operands(ctx.spec)[q]}[o{q}]")
    ident = em.const(_reduce_ident(op, acc_d), acc_d)
    U = UNROLL
    lines += [f"{I2}a{k}_{u} = {ident}" for u in range(U)]
    # a constant divisor: Numba's zero check folds away (and LLVM knows the result is
    # in [0, U), which index_rem would hide: 24 ms vs 17 ms for a softmax pass)
    lines.append(f"{I2}nb{k} = R - R % {U}")
    lines.append(f"{I2}for j in range(0, nb{k}, {U}):")
    for u in range(U):
        lines.append(f"{I3}e{u} = {src}[j + {u}]")
        lines.append(f"{I3}a{k}_{u} = {_combine(op, f'a{k}_{u}', f'e{u}', acc_d)}")
    lines.append(f"{I2}for j in range(nb{k}, R):")
    lines.append(f"{I3}e0 = {src}[j]")
    lines.append(f"{I3}a{k}_0 = {_combine(op, f'a{k}_0', 'e0', acc_d)}")
    level = [f"a{k}_{u}" for u in range(U)]
    while len(level) > 1:
        for i in range(0, len(level), 2):
            lines.append(f"{I2}{level[i]} = {_combine(op, level[i], level[i + 1], acc_d)}")
        level = level[::2]
    lines.append(f"{I2}racc{k} = a{k}_0")
    ctx.red[k] = (f"racc{k}", acc_d)
    ctx.elem = None  # post stmts run once per row
    return lines + emit_post(ctx, p, k, I2, lambda q: f"{_operands(ctx.spec)[q]}[o{q}]")


# fastmath.float_key of +inf and -inf (here: generating source must not import Numba)
KEY_POS_INF = {"float32": 0x7F800000, "float64": 0x7FF0000000000000}
KEY_NEG_INF = {"float32": -0x7F800001, "float64": -0x7FF0000000000001}


def _keyed_extremum(ctx: Ctx, p: Phase, k: int, src: str, d: str) -> list[str]:
    """A float max/min of a row as an integer max and min over order keys
    (``fastmath.float_key``), which LLVM vectorises: one key above that of +inf or below
    that of -inf is a NaN, and the result is NaN as torch's; an empty row gives the
    identity (-inf for max)."""
    em = ctx.em
    kd = "int32" if d == "float32" else "int64"
    kp, kn = em.const(KEY_POS_INF[d], kd), em.const(KEY_NEG_INF[d], kd)
    nan = em.const(math.nan, d)
    lines = [f"{I2}kh{k} = {kn}", f"{I2}kl{k} = {kp}",
             f"{I2}for j in range(R):",
             f"{I3}e0 = float_key({src}[j])",
             f"{I3}kh{k} = e0 if e0 > kh{k} else kh{k}",
             f"{I3}kl{k} = e0 if e0 < kl{k} else kl{k}",
             f"{I2}racc{k} = {nan} if (kh{k} > {kp}) | (kl{k} < {kn}) else "
             f"key_float({'kh' if p.reduce_op == 'max' else 'kl'}{k}, {nan})"]
    ctx.red[k] = (f"racc{k}", d)
    ctx.elem = None  # post stmts run once per row
    return lines + emit_post(ctx, p, k, I2, lambda q: f"{_operands(ctx.spec)[q]}[o{q}]")


BLOCK = 512  # rows processed side by side when the reduced axis is strided


def wrap_rows_blocked(spec: KernelSpec, alias: tuple, jpat: tuple, bpat: tuple) -> Generated:
    """``BK`` (at most ``BLOCK``) neighbouring rows side by side: task ``tt`` is outer row
    ``t``'s block ``blk``; each step ``j`` of the reduced axis takes every operand's run of ``nb``
    block elements (``u{k}``: ``bpat`` ``c`` a slice, ``s`` a strided window; ``b`` the
    scalar itself) and the body runs over ``b`` in the block, with per-row
    accumulators and post values in ``BLOCK``-long scratch arrays."""
    em = Emitter()
    ops, live = _operands(spec), _live(spec, alias)
    row_out = _row_outputs(spec)
    lines = [f"{I1}nd = oshape.shape[0]", f"{I1}nblk = (M + BK - 1) // BK",
             f"{I1}for tt in range(lo, hi):", f"{I2}t = index_div(tt, nblk)",
             f"{I2}blk = tt - t * nblk", f"{I2}b0 = blk * BK",
             f"{I2}nb = min(BK, M - b0)"]
    lines += _offsets(live, lambda k: f"b0 * bstr[{k}]", "b0 * bstr[q]",
                      _offs_vector(spec, alias))
    for k in live:
        lines += [f"{I2}s{k} = istr[{k}]", f"{I2}q{k} = bstr[{k}]"]
    lines += _rowlen_lines(spec)

    def step_j() -> tuple[list[str], dict]:
        """The loops over ``j`` and ``b``, with each operand's run at ``j``."""
        out, names = [f"{I2}for j in range(R):"], {}
        for k in live:
            if k in row_out:
                continue
            base = f"o{k} + j * s{k}" if jpat[k] != "b" else f"o{k}"
            if bpat[k] == "c":
                out.append(f"{I3}u{k} = window({ops[k]}, {base}, nb)")
                names[k] = f"u{k}[b]"
            elif bpat[k] == "b":
                names[k] = f"{ops[k]}[{base}]"
            else:
                out.append(f"{I3}u{k} = strided_window({ops[k]}, {base}, nb, q{k})")
                names[k] = f"u{k}[b]"
        return out + [f"{I3}for b in range(nb):"], names

    red: dict[int, tuple[str, str]] = {}
    arrays: list[tuple[str, str]] = []

    def spill(post) -> list[str]:
        """Post values live on in per-row arrays (later phases read them per ``b``)."""
        out = []
        for st in post:
            ident = em.names[st.name]
            arrays.append((f"pa_{ident}", st.dtype))
            out.append(f"{I3}pa_{ident}[b] = {ident}")
            em.names[st.name] = f"pa_{ident}[b]"
        return out

    for p in spec.phases:
        loops, names = step_j()
        ctx = Ctx(spec, em, alias, names.__getitem__, red)
        if p.kind == "map":
            lines += loops + emit_body(ctx, p, I4)
            continue
        k = len(red)
        acc = f"acc{k}"

        def sink(c: str, d: str, acc: str = acc, op: str = p.reduce_op) -> str:
            arrays.append((acc, _acc_dtype(op, d)))
            v = cast_code(c, d, arrays[-1][1])
            return f"{acc}[b] = {_combine(op, f'{acc}[b]', v, arrays[-1][1])}"
        body = emit_body(ctx, p, I4, sink)
        acc_d = arrays[-1][1]
        ident = em.const(_reduce_ident(p.reduce_op, acc_d), acc_d)
        lines += [f"{I2}for b in range(nb):", f"{I3}{acc}[b] = {ident}"] + loops + body
        red[k] = (f"{acc}[b]", acc_d)
        ctx.elem = None
        post = emit_post(ctx, p, k, I3, lambda q: f"{ops[q]}[o{q} + b * q{q}]", spill)
        if post:
            lines += [f"{I2}for b in range(nb):"] + post
    scratch = [(arr, "scratch", d, BLOCK) for arr, d in arrays]
    params = (_arrays(spec, alias) + _tables("M", "BK", "R", "oshape", "ostr", "istr", "bstr")
              + scratch + _offs_scratch(spec, alias))
    return _finish(em, lines, params)


# ---- sources of the variants kernels.cpu asks for -----------------------------------------

def elementwise_source(spec: KernelSpec, variant: tuple) -> Generated:
    """Source of one elementwise variant: ``("flat"|"strided", alias, pattern)`` (a flat
    variant's pattern is None, or classes each operand ``c`` or ``b``: broadcast)."""
    check_dtypes(spec)
    layout, alias, pattern = variant
    (_phase,) = spec.phases
    if layout == "flat":
        return wrap_flat(spec, alias, pattern)
    return wrap_strided(spec, alias, pattern)


def rows_source(spec: KernelSpec, variant: tuple) -> Generated:
    """Source of one rows variant ``("rows", alias, pattern)``: ``wrap_rows``."""
    check_dtypes(spec)
    _, alias, pattern = variant
    return wrap_rows(hoist_stores(spec, alias), alias, pattern)


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
    return wrap_rows_blocked(hoist_stores(spec, alias), alias, jpat, bpat)
