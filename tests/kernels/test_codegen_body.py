"""One body emitter behind every loop variant, and the generated text pinned by hash.

The loop wrappers (flat, strided, rows, blocked rows) must all take their scalar code
from ``codegen.emit_body``, so another target can reuse it; and the sources are the
kernel cache's key, so a change to the emitted text must be a conscious one.
"""
from __future__ import annotations

import hashlib

import pytest

from kernels.cpu import codegen
from kernels.spec import KernelSpec, Phase, Stmt, const, inp, red, rowlen, var

F = "float32"


def S(name, op, *args, dtype=F):
    return Stmt(name, op, tuple(args), (), dtype)


def gelu_spec():
    """tanh-GELU of in0, plus in1: two outputs, a float64 constant cast."""
    return KernelSpec((F, F), ((F, "full"), (F, "full")), (Phase("map", (
        S("c", "mul", inp(0), inp(0)), S("c3", "mul", var("c"), inp(0)),
        S("k", "mul", var("c3"), const(0.044715, F)), S("u", "add", inp(0), var("k")),
        S("t", "tanh", var("u")), S("g", "mul", var("t"), inp(0)),
        S("y", "add", var("g"), inp(1)),
        S("z", "cast", var("y"), dtype="float64"), S("w", "exp", var("z"), dtype="float64"),
        S("wf", "cast", var("w"), dtype=F)),
        stores=((0, var("y")), (1, var("wf")))),), "elementwise")


def int_spec():
    """int32 floordiv by a constant, a comparison and a where."""
    i = "int32"
    return KernelSpec((i, i), ((i, "full"), ("bool", "full")), (Phase("map", (
        S("q", "floor_divide", inp(0), const(3, i), dtype=i),
        S("m", "maximum", var("q"), inp(1), dtype=i),
        S("gt", "gt", var("m"), const(0, i), dtype="bool"),
        S("r", "where", var("gt"), var("m"), inp(1), dtype=i)),
        stores=((0, var("r")), (1, var("gt")))),), "elementwise")


def log_softmax_spec():
    """log_softmax(x / 2) and exp(x / 2 - max): the map reuses the buffered exp."""
    def scaled(n):
        return (S(f"s{n}", "mul", inp(0), const(0.5, F)), S(f"d{n}", "sub", var(f"s{n}"), red(0)))
    return KernelSpec((F,), ((F, "full"), (F, "full")), (
        Phase("reduce", (S("s", "mul", inp(0), const(0.5, F)),), reduce_op="max",
              reduce_value=var("s")),
        Phase("reduce", scaled(1) + (S("e1", "exp", var("d1")),), reduce_op="sum",
              reduce_value=var("e1"), post=(S("ls", "log", red(1)),)),
        Phase("map", scaled(2) + (S("e2", "exp", var("d2")), S("y", "sub", var("d2"), red(1))),
              stores=((0, var("y")), (1, var("e2")))),
    ), "rows")


def rmsnorm_spec():
    """x * rsqrt(mean(x * x) + eps) * w, and the per-row rsqrt as a row output."""
    return KernelSpec((F, F), ((F, "full"), (F, "row")), (
        Phase("reduce", (S("sq", "mul", inp(0), inp(0)),), reduce_op="sum",
              reduce_value=var("sq"), store_result=1,
              post=(S("ms", "div", red(0), rowlen(F)), S("me", "add", var("ms"), const(1e-6, F)),
                    S("r", "rsqrt", var("me")))),
        Phase("map", (S("y", "mul", inp(0), red(0)), S("z", "mul", var("y"), inp(1))),
              stores=((0, var("z")),)),
    ), "rows")


def any_spec():
    """A bool row reduction (summed in int64) and a min of a product, as row outputs."""
    return KernelSpec(("bool", F), (("int64", "row"), (F, "row")), (
        Phase("reduce", (), reduce_op="sum", reduce_value=inp(0), store_result=0),
        Phase("reduce", (S("p", "mul", inp(1), inp(1)),), reduce_op="min",
              reduce_value=var("p"), store_result=1),
    ), "rows")


A2 = (-1, -1)
CORPUS = [
    (gelu_spec, "elementwise_source", ("flat", A2, None)),
    (gelu_spec, "elementwise_source", ("flat", (0, -1), None)),
    (gelu_spec, "elementwise_source", ("flat", A2, ("c", "b", "c", "c"))),
    (gelu_spec, "elementwise_source", ("strided", A2, ("c", "b", "c", "s"))),
    (gelu_spec, "elementwise_source", ("strided", (-1, 0), ("s", "c", "c", "c"))),
    (int_spec, "elementwise_source", ("flat", A2, None)),
    (int_spec, "elementwise_source", ("strided", A2, ("b", "s", "c", "c"))),
    (log_softmax_spec, "rows_source", ("rows", (-1,), ("c", "c", "c"))),
    (log_softmax_spec, "rows_source", ("rows", (0,), ("s", "s", "c"))),
    (log_softmax_spec, "rows_blocked_source",
     ("rowsblk", (-1,), ("s", "s", "s"), ("c", "c", "s"))),
    (rmsnorm_spec, "rows_source", ("rows", A2, ("c", "b", "c", "b"))),
    (rmsnorm_spec, "rows_blocked_source",
     ("rowsblk", A2, ("s", "b", "s", "b"), ("c", "c", "c", "s"))),
    (any_spec, "rows_source", ("rows", A2, ("c", "s", "b", "b"))),
    (any_spec, "rows_blocked_source", ("rowsblk", A2, ("s", "s", "b", "b"),
                                       ("c", "s", "c", "c"))),
]
# sha256[:16] of each source above, recorded from the generator before the body emitter
# was split out (and unchanged by it); re-recorded when float arithmetic already in its
# dtype lost its no-op conversion (``codegen._same_float_binop``), and for log_softmax
# when its exp output moved into the sum loop (``codegen.hoist_stores``), and when float
# max/min row reductions became integer ones over order keys (``fastmath.float_key``, which
# the header imports: every source) and float row sums vector ones (``fastmath.vsum``);
# and when operand windows became ``fastmath.window`` views instead of slices (every
# source) and the flat variant took broadcast scalars (the third entry, new), and when
# flat variants viewed their operands from the pointers (``fastmath.ptr_window``), and
# when kernels took Numba's leaner pipeline (``kernels.cpu.pipeline``: header and
# decorator), and when the column-blocked width became a run-time argument (``BK``:
# narrower blocks where one block would leave a thread idle), and when the prologue's
# views became ``fastmath.ptr_window``/``ptr_matrix`` instead of ``carray`` (every
# source), and when the header imported ``fastmath.gelu_grad_f32`` (every source). A
# change here changes every user's cache key.
HASHES = [
    "37daa8d9ca6a84e7", "f9cfdde13ac21b0f", "88f5cb91deab1948", "d829f318a22beae3",
    "c6ecfaa6881801cc", "3afc63e11a512442", "ec40642df6ba140f", "af8733cb63e8fe83",
    "6975d262095d5c3b", "2333b5bea1d923af", "8847f1affd613f39", "58cfd5923548093f",
    "db4c060bfbce1f18", "b6e347e042c10d8d",
]


def _source(make, fn, variant) -> str:
    return getattr(codegen, fn)(make(), variant).source


@pytest.mark.parametrize("i", range(len(CORPUS)))
def test_generated_source_is_pinned(i):
    make, fn, variant = CORPUS[i]
    got = hashlib.sha256(_source(make, fn, variant).encode()).hexdigest()[:16]
    assert got == HASHES[i], (f"{make.__name__} {variant}: the generated source changed "
                              "(update HASHES if that is intended)")


def test_every_wrapper_takes_its_body_from_emit_body(monkeypatch):
    """Each variant calls ``emit_body`` once per map phase and per buffered reduction."""
    calls = []
    real = codegen.emit_body

    def spy(ctx, phase, ind, sink=None):
        calls.append(phase.kind)
        return real(ctx, phase, ind, sink)
    monkeypatch.setattr(codegen, "emit_body", spy)
    want = {"gelu_spec": ["map"], "int_spec": ["map"],
            "log_softmax_spec": ["reduce", "reduce", "map"], "rmsnorm_spec": ["reduce", "map"],
            "any_spec": ["reduce"]}
    for make, fn, variant in CORPUS:
        calls.clear()
        _source(make, fn, variant)
        if variant[0] == "rowsblk":  # no direct reductions: every phase has a body
            assert calls == [p.kind for p in make().phases]
        else:
            assert calls == want[make.__name__], (make.__name__, variant)


def _stmt_lines(source: str) -> list[str]:
    """The generated stmt assignments (``v_*``/``t*`` names), without indentation."""
    return [ln.strip() for ln in source.splitlines()
            if ln.strip().startswith(("v_", "t")) and " = " in ln]


def test_same_body_in_flat_strided_and_rows():
    """The flat and strided variants and a rows map phase hold the same scalar code."""
    spec = gelu_spec()
    flat = _source(gelu_spec, "elementwise_source", ("flat", A2, None))
    strided = _source(gelu_spec, "elementwise_source", ("strided", A2, ("c", "s", "c", "c")))
    body = _stmt_lines(flat)
    assert len(body) == len(spec.phases[0].stmts)
    assert _stmt_lines(strided) == body
    rows = KernelSpec(spec.inputs, spec.outputs, spec.phases, "rows")
    assert _stmt_lines(codegen.rows_source(rows, ("rows", A2, ("c",) * 4)).source) == body


def test_body_takes_any_element_access():
    """A target only supplies ``elem``: the same body indexes by a thread id."""
    spec = gelu_spec()
    em = codegen.Emitter()
    ops = ["in0", "in1", "out0", "out1"]
    ctx = codegen.Ctx(spec, em, A2, lambda k: f"{ops[k]}[tid]")
    gpu = codegen.emit_body(ctx, spec.phases[0], "    ")
    assert gpu[0] == "    x0 = in0[tid]" and gpu[-1].startswith("    out1[tid] = ")
    flat = _source(gelu_spec, "elementwise_source", ("flat", A2, None)).splitlines()
    cpu = [ln.replace("[tid]", "[i]").replace("    ", "        ", 1) for ln in gpu]
    start = flat.index(cpu[0])
    assert flat[start:start + len(cpu)] == cpu
