"""Rows kernels compute each per-element value once. A full-shape output whose value a
reduce loop already computes (GELU's backward fused with the bias gradient's column sum)
is stored from that loop (``codegen.hoist_stores``) instead of being computed again by a
final map pass; a softmax's map reads the exp its sum loop buffered. One kernel, no
split into an elementwise kernel and a reduction."""
import numpy as np
import pytest

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from kernels.cpu import codegen, compile_kernel, set_num_threads, set_parallel_threshold
from kernels.spec import KernelSpec, Phase, Stmt, inp, red, var
from runtime.lower import compile_graph
from runtime.plan import Executor

F32 = dt.float32
rng = np.random.default_rng(0)


def _graph(op, shape=(16, 64, 128), dims=(0, 1)):
    g = Graph()
    gy = g.add_input(shape, F32)
    x = g.add_input(shape, F32)
    if op == "gelu_backward":
        y = g.add_node("gelu_backward", [gy, x], {"approximate": "none"})
    else:
        y = g.add_node("mul", [gy, x])
    s = g.add_node("sum", [y], {"dims": dims, "keepdim": False})
    g.set_outputs([y, s])
    return g


def _calls(src: str, fn: str) -> int:
    return src[src.index("def entry"):].count(fn + "(")


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    old = set_parallel_threshold(0 if request.param == 2 else 1 << 40)
    set_num_threads(request.param)
    yield request.param
    set_num_threads(None)
    set_parallel_threshold(old)


@pytest.mark.parametrize("dims", [(0, 1), (2,)], ids=["columns", "rows"])
@pytest.mark.parametrize("op", ["gelu_backward", "mul"])
def test_full_output_is_stored_from_the_reduce_loop(op, dims, threads):
    shape = (16, 64, 128)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    want = [np.asarray(o) for o in interpret(_graph(op, shape, dims), arrays)]
    c = compile_graph(_graph(op, shape, dims))
    kernels = [s for s in c.plan.steps if s.kind == "kernel"]
    assert [s.spec.kind for s in kernels] == ["rows"], c.plan
    got = Executor(c.plan)(arrays)
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w, rtol=1e-4, atol=1e-4)
    run = kernels[0].kernel.sources_run()
    assert run
    for _variant, src in run:
        if op == "gelu_backward":  # once per element: in the reduce loop only (float32:
            # erf and the density in one call, fastmath.gelu_grad_f32)
            assert _calls(src, "gelu_grad_f32") == 1, src
        assert "for j in range(R):" in src


def test_small_groups_stay_one_kernel():
    g = Graph()
    gy = g.add_input((4, 6, 8), F32)
    x = g.add_input((4, 6, 8), F32)
    y = g.add_node("gelu_backward", [gy, x], {"approximate": "none"})
    g.set_outputs([y, g.add_node("sum", [y], {"dims": (0, 1), "keepdim": False})])
    assert compile_graph(g).plan.num_kernels == 1


def _softmax_graph(shape, log=False):
    g = Graph()
    x = g.add_input(shape, F32)
    m = g.add_node("amax", [x], {"dims": (len(shape) - 1,), "keepdim": True})
    d = g.add_node("sub", [x, m])
    e = g.add_node("exp", [d])
    s = g.add_node("sum", [e], {"dims": (len(shape) - 1,), "keepdim": True})
    if log:
        y = g.add_node("sub", [d, g.add_node("log", [s])])
        g.set_outputs([y, e])
    else:
        g.set_outputs([g.add_node("div", [e, s])])
    return g


def _special_rows(shape):
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x[0, 3] = np.nan                 # a NaN row
    x[1, :] = -np.inf                # all -inf: exp(nan) -> nan, as NumPy
    x[2, 5] = np.inf                 # +inf: inf - inf -> nan
    x[3, ::2] = -np.inf              # some -inf: exp -> 0
    x[4, :] = 80.0                   # large equal values: the max keeps exp finite
    return x


@pytest.mark.parametrize("n", [1, 7, 37, 1023])
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_softmax_rows_equal_reference(n, log, threads):
    shape = (9, n) if n >= 7 else (9, 6)
    x = _special_rows(shape) if n >= 7 else (rng.standard_normal(shape)).astype(np.float32)
    if n == 1:
        x = x[:, :1].copy()
    with np.errstate(all="ignore"):
        want = [np.asarray(o) for o in interpret(_softmax_graph(x.shape, log), [x])]
    c = compile_graph(_softmax_graph(x.shape, log))
    kernels = [s for s in c.plan.steps if s.kind == "kernel"]
    assert len(kernels) == 1 and kernels[0].spec.kind == "rows", c.plan
    got = Executor(c.plan)([x])
    for a, w in zip(got, want):
        np.testing.assert_allclose(a, w, rtol=1e-5, atol=1e-6, equal_nan=True)
    for _variant, src in kernels[0].kernel.sources_run():
        assert _calls(src, "exp_f32") == 1, src  # exp once per element


# ---- hoist_stores on specs ------------------------------------------------------------

F = "float32"


def S(name, op, *args):
    return Stmt(name, op, tuple(args), (), F)


def _spec():
    """out0 = exp(x) (stored from the sum loop), out1 = exp(x) / sum (needs the sum)."""
    return KernelSpec((F,), ((F, "full"), (F, "full")), (
        Phase("reduce", (S("e", "exp", inp(0)),), reduce_op="sum", reduce_value=var("e")),
        Phase("map", (S("e2", "exp", inp(0)), S("y", "div", var("e2"), red(0))),
              stores=((0, var("e2")), (1, var("y")))),
    ), "rows")


def test_hoist_moves_only_what_the_loop_can_compute():
    h = codegen.hoist_stores(_spec(), (-1,))
    h.validate()
    red_p, map_p = h.phases
    assert red_p.stores == ((0, var("e")),)  # the loop's own exp, not a second one
    assert [s.op for s in red_p.stmts] == ["exp"]
    assert map_p.stores == ((1, var("y")),)  # needs the row sum: stays in the map


def test_hoist_keeps_a_store_whose_output_a_later_phase_reads_in_place():
    # input 0 is written in place by output 0: the map still reads it for out1
    assert codegen.hoist_stores(_spec(), (0,)) == _spec()


def test_hoist_drops_a_map_left_without_stores():
    spec = KernelSpec((F,), ((F, "full"), (F, "row")), (
        Phase("reduce", (S("e", "exp", inp(0)),), reduce_op="sum", reduce_value=var("e"),
              store_result=1),
        Phase("map", (S("e2", "exp", inp(0)),), stores=((0, var("e2")),)),
    ), "rows")
    k = compile_kernel(spec)
    for alias in ((-1,), (0,)):  # in place too: nothing reads the input afterwards
        h = codegen.hoist_stores(spec, alias)
        assert len(h.phases) == 1 and h.phases[0].stores == ((0, var("e")),)
        x = rng.standard_normal((5, 11)).astype(np.float32)
        x0 = x.copy()
        out, s = (x, np.empty(5, np.float32)) if alias == (0,) else \
            (np.empty_like(x), np.empty(5, np.float32))
        k([x], [out, s])
        np.testing.assert_allclose(out, np.exp(x0), rtol=1e-6)
        np.testing.assert_allclose(s, np.exp(x0).sum(1), rtol=1e-5)
