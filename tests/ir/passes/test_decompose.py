"""OpDef.decomposition: each rule equals its op, declines what it must, the decompose
pass rewrites every composite into primitives, and gradients derived from the primitives
match finite differences (and the hand-written rules kept)."""
import pathlib
import runpy

import numpy as np
import pytest

from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from ir.passes.autodiff import GraphGradBuilder
from ir.passes.decompose import decompose_node, decompose_ops, derived_vjp
from ir.registry import REGISTRY, vjp
from ir.verify import verify

CASES = [
    ("gelu", {"approximate": "none"}, (4, 7)),
    ("gelu", {"approximate": "tanh"}, (3, 5)),
    ("softmax", {"dim": 1}, (4, 6)),
    ("softmax", {"dim": -3}, (2, 3, 4)),
    ("log_softmax", {"dim": 0}, (5, 3)),
    ("logsumexp", {"dims": (1,), "keepdim": False}, (3, 4, 2)),
    ("logsumexp", {"dims": (0, 2), "keepdim": True}, (3, 4, 2)),
]


def _graph(op, attrs, shape, dtype):
    g = Graph("t")
    x = g.add_input(shape, dtype, "x")
    g.set_outputs([g.add_node(op, [x], attrs)])
    return g


@pytest.mark.parametrize("dtype", [dt.float32, dt.float64])
@pytest.mark.parametrize("op,attrs,shape", CASES)
def test_each_decomposition_equals_its_op(op, attrs, shape, dtype):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(dtype.np)
    if op != "gelu":
        x.flat[0] = -np.inf  # a -inf entry: the finite-guarded max keeps the rest right
    want = REGISTRY[op].impl(x, **attrs)
    g = _graph(op, attrs, shape, dtype)
    assert decompose_ops(g) == 1
    verify(g)
    assert all(REGISTRY[n.op].decomposition is None for n in g.nodes)
    got = interpret(g, [x])[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-5 if dtype is dt.float32 else 1e-12
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_a_rule_declines_dtypes_it_would_compute_differently():
    g = _graph("softmax", {"dim": 0}, (3,), dt.float16)
    n = g.nodes[0]
    assert not decompose_node(g, n)
    assert [m.op for m in g.nodes] == ["softmax"]


def test_an_op_added_at_run_time_is_decomposed_by_the_compiler():
    """The slot is all a new composite needs: the back end splits it into primitives
    that fuse, and the compiled result equals the eager one."""
    import gcompile as torch
    from ir.registry import OpDef, register

    from gcompile._tensor import apply_op

    name = "test_decomp_clamp_sq"
    register(OpDef(name, "unary", lambda x: np.clip(x, -1, 1) ** 2,
                   expr="(min(max({0}, -1.0), 1.0) * min(max({0}, -1.0), 1.0))",
                   dtype_rule="same",
                   decomposition=lambda b, x: b.mul(b.clamp(x, min=-1.0, max=1.0),
                                                    b.clamp(x, min=-1.0, max=1.0))))
    try:
        f = torch.compile(lambda a: apply_op(name, (a,)) + 1)
        x = torch.randn(6)
        np.testing.assert_allclose(f(x).numpy(), np.clip(x.numpy(), -1, 1) ** 2 + 1,
                                   rtol=1e-6)
        ops = [n.op for n in f.entries[-1].executable.compiled.graph.nodes]
        assert name not in ops and "clamp" in ops
    finally:
        REGISTRY.pop(name, None)  # the coverage tests see only the built-in ops


# ---- every op with a decomposition, on the registry-wide sample calls ---------------------------
# (tests/op_cases.py: sample arguments for every op; run as a plain file, it is no test module)
OC = runpy.run_path(str(pathlib.Path(__file__).resolve().parents[2] / "op_cases.py"),
                    run_name="_op_cases_for_decompose")
DECOMPOSED = sorted(n for n, op in REGISTRY.items() if op.decomposition is not None)
SAMPLES = [pytest.param(n, k, id=f"{n}-{c.label or k}") for n in DECOMPOSED
           for k, c in enumerate(OC["CASES"].get(n, ()))]
GRAD_SAMPLES = [p for p in SAMPLES if REGISTRY[p.values[0]].differentiable
                and OC["CASES"][p.values[0]][p.values[1]].grad]


def _args(name, k, wide):
    case = OC["CASES"][name][k]
    args = OC["make_args"](name, k, case)
    return ([OC["W"](a) for a in args] if wide else list(args)), dict(case.attrs)


def _graph_of(name, args, attrs):
    """A graph calling ``name`` once: arrays become inputs, numbers stay literal."""
    g = Graph(name)
    ins = [g.add_input(a.shape, dt.from_numpy(a.dtype)) if isinstance(a, np.ndarray) else a
           for a in args]
    return g, ins, g.add_node(name, ins, attrs), [a for a in args if isinstance(a, np.ndarray)]


def test_every_decomposed_op_has_samples():
    assert DECOMPOSED and all(OC["CASES"].get(n) for n in DECOMPOSED)
    for name in ("gelu", "silu", "softmax", "log_softmax", "logsumexp", "linear", "layer_norm",
                 "mse_loss", "cross_entropy"):
        assert name in DECOMPOSED, name


@pytest.mark.parametrize("wide", [False, True], ids=["as_sampled", "float64"])
@pytest.mark.parametrize("name,k", SAMPLES)
def test_decomposition_equals_the_eager_impl(name, k, wide):
    """(1) The primitives compute what the op's eager kernel does, on every sample call."""
    args, attrs = _args(name, k, wide)
    with np.errstate(all="ignore"):  # log(0) of an empty logsumexp: -inf, as torch
        want = REGISTRY[name].impl(*args, **attrs)
    g, _, out, feeds = _graph_of(name, args, attrs)
    g.set_outputs([out])
    if not decompose_node(g, out.producer):
        floats = {a.dtype.name for a in feeds if a.dtype.kind == "f"}
        odd = floats - {"float32", "float64"} or any(a.size == 0 or a.ndim == 0 for a in feeds)
        assert odd, f"{name} declined non-empty float32/64 samples"
        pytest.skip(f"{name} declines {sorted(floats)} of shapes {[a.shape for a in feeds]}")
    verify(g)
    assert name not in [n.op for n in g.nodes]
    got = interpret(g, feeds)[0]
    assert got.dtype == want.dtype and got.shape == want.shape
    tol = 1e-12 if wide else 2e-6
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("name,k", GRAD_SAMPLES)
def test_gradient_through_the_decomposition(name, k):
    """(2) The gradient derived from the primitives (what ops without a rule use) matches
    central differences of the eager kernel, and the hand-written rule where one is kept."""
    args, attrs = _args(name, k, wide=True)
    op = REGISTRY[name]
    g, ins, out, feeds = _graph_of(name, args, attrs)
    gout = g.add_input(out.shape, out.dtype, "gout")
    b = GraphGradBuilder(g)
    diff = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
            and i not in op.nondiff_inputs]
    derived = derived_vjp(op, b, gout, ins, out, attrs)
    rule = vjp(op, b, gout, ins, out, attrs) if op.grad is not None else None
    outs = [derived[i] for i in diff] + ([rule[i] for i in diff] if rule else [])
    assert all(v is not None for v in outs)
    g.set_outputs(outs)
    verify(g)
    gv = np.random.default_rng(k).standard_normal(out.shape)
    res = interpret(g, feeds + [gv])
    for j, i in enumerate(diff):
        fd = OC["vjp"](lambda *a: op.impl(*a, **attrs), args, i, gv)
        np.testing.assert_allclose(res[j], fd, rtol=1e-5, atol=1e-6, err_msg=f"input {i}")
        if rule:
            np.testing.assert_allclose(res[j], res[len(diff) + j], rtol=1e-9, atol=1e-12)


def test_detach_is_no_gradient_of_its_decomposition():
    assert REGISTRY["detach"].decomposition is not None
    assert not REGISTRY["detach"].differentiable


def test_the_derived_gradient_computes_only_what_it_reads():
    """A linear layer's derived backward has no forward GEMM: two matmuls for x and w, one
    when only the weight wants a gradient (the eager tape's ``needs``)."""
    from ir.passes.decompose import _RECIPES

    def matmuls(want):
        g, ins, out, _ = _graph_of("linear", [np.ones((3, 4), np.float32),
                                              np.ones((5, 4), np.float32),
                                              np.ones(5, np.float32)], {})
        gout = g.add_input(out.shape, out.dtype)
        b = GraphGradBuilder(g)
        b.needs = want
        grads = derived_vjp(REGISTRY["linear"], b, gout, ins, out, {})
        assert [x is not None for x in grads] == list(want)
        return [n.op for n in b.emitted].count("matmul")

    _RECIPES.clear()
    assert matmuls([True, True, True]) == 2
    assert matmuls([False, True, True]) == 1
    assert matmuls([False, False, True]) == 0


def test_an_op_with_only_a_decomposition_is_differentiable_eagerly_and_compiled():
    """The slot is all a new composite needs for gradients too: no grad rule, and the tape
    and the compiled backward both differentiate its primitives (float16 through float32)."""
    import gcompile as torch
    from gcompile._tensor import apply_op
    from ir.registry import OpDef, register

    name = "test_decomp_softsq"
    register(OpDef(name, "unary", lambda x: x * np.tanh(x), dtype_rule="same",
                   decomposition=lambda b, x: (None if x.dtype.name not in ("float32", "float64")
                                               else b.mul(x, b.tanh(x)))))
    try:
        assert REGISTRY[name].differentiable
        x = torch.randn(5, dtype=torch.float64, requires_grad=True)
        want = (np.tanh(x.detach().numpy()) + x.detach().numpy()
                / np.cosh(x.detach().numpy()) ** 2)
        apply_op(name, (x,)).sum().backward()
        np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12)
        assert torch.autograd.gradgradcheck(lambda a: apply_op(name, (a,)), (x,))
        x.grad = None
        torch.compile(lambda a: apply_op(name, (a,)).sum())(x).backward()
        np.testing.assert_allclose(x.grad.numpy(), want, rtol=1e-12)
        h = x.detach().half().requires_grad_()
        apply_op(name, (h,)).sum().backward()
        assert h.grad.dtype == torch.float16
        np.testing.assert_allclose(h.grad.numpy(), want, rtol=2e-3, atol=2e-3)
    finally:
        REGISTRY.pop(name, None)
