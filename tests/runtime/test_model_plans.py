"""Plans of real model pieces: BLAS calls on views, few kernels, cheap kernel launches.

Structural facts about the plans of Linear/attention/LayerNorm/GPT steps (which steps
exist, what BLAS receives, how many kernels run), and the results of every path against
NumPy or eager execution."""
import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.bench_models import train_step
from ir import dtypes as dt
from ir.graph import Graph
from ir.interpreter import interpret
from runtime import steps
from runtime.lower import compile_graph
from runtime.plan import Executor

F32 = dt.float32
rng = np.random.default_rng(0)


@pytest.fixture
def gemm_calls(monkeypatch):
    """Every (a, b, out) the matmul steps hand to BLAS."""
    calls = []
    real = steps._gemm

    def spy(a, b, out):
        calls.append((a, b, out))
        real(a, b, out)
    monkeypatch.setattr(steps, "_gemm", spy)
    return calls


def _plan_of(fn):
    entry = fn.entries[-1]
    return entry.executable.plan


def test_linear_on_3d_input_is_one_2d_gemm(gemm_calls):
    x = torch.randn(4, 8, 16)
    w = torch.randn(16, 32)
    f = torch.compile(lambda x, w: x @ w)
    for _ in range(2):
        out = f(x, w)
    np.testing.assert_allclose(out.numpy(), x.numpy() @ w.numpy(), rtol=1e-5, atol=1e-5)
    a, b, o = gemm_calls[-1]
    assert a.shape == (32, 16) and o.shape == (32, 32)
    assert np.shares_memory(a, x.numpy()), "the stacked rows must be a view of x"


@pytest.mark.parametrize("expr, shapes, swap", [
    (lambda x, w: x @ w.t(), ((64, 9216), (128, 9216)), (False, True)),  # runs W @ x^T
    (lambda g, w: g @ w, ((64, 128), (128, 9216)), (False, False)),
    (lambda g, x: g.t() @ x, ((64, 128), (64, 9216)), (True, False)),
])
def test_tiled_products_give_the_same_bits_on_every_call(expr, shapes, swap):
    """The CNN's dense-layer products, which run as tiles where OpenBLAS has small
    kernels (``kernels.cpu.tiled_gemm``: not NumPy's bits): every run of the plan gives
    the same bits, its first (NumPy's matmul, then the binding) and those whose fresh
    output outdates the binding too. (The first call traces: eager's NumPy bits.)"""
    from kernels.cpu import blas_calls, tiled_gemm
    if blas_calls.provide():
        tiled_gemm.kernel("float32").load()   # (a cold cache's plan binds a call later)
    a, b = (torch.randn(*s) for s in shapes)
    na, nb = (t.numpy().astype(np.float64) for t in (a, b))
    want = (na.T if swap[0] else na) @ (nb.T if swap[1] else nb)
    f = torch.compile(expr)
    outs = [f(a, b).numpy().copy() for _ in range(6)]
    for out in outs:
        np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-3)
    for out in outs[2:]:
        np.testing.assert_array_equal(out, outs[1])


@pytest.mark.parametrize("m, k, n, swapped", [
    (16, 6272, 73, True),     # a conv weight gradient g @ cols^T: N > M, long reduction
    (32, 4096, 10, False),    # M > N: BLAS runs the plain form faster
    (16, 40, 73, False),      # short reduction
])
def test_weight_gradient_gemm_runs_swapped_when_faster(gemm_calls, m, k, n, swapped):
    """g (M, K) @ x^T (x (N, K)) runs as x @ g^T into a buffer then copied, where
    ``gemm_swaps_operands`` says BLAS is faster so; the result matches NumPy and eager
    (which takes the same path) on every call."""
    from ir.ops.linalg import gemm_swaps_operands
    g, x = torch.randn(m, k), torch.randn(n, k)
    want = g.numpy().astype(np.float64) @ x.numpy().T.astype(np.float64)
    assert gemm_swaps_operands(g.numpy(), x.numpy().T) is swapped
    np.testing.assert_allclose((g @ x.t()).numpy(), want, rtol=1e-4, atol=1e-3)
    f = torch.compile(lambda g, x: g @ x.t())
    for _ in range(3):
        out = f(g, x)
        assert out.shape == (m, n) and out.is_contiguous()
        np.testing.assert_allclose(out.numpy(), want, rtol=1e-4, atol=1e-3)
    a, b, o = gemm_calls[-1]
    assert (a.shape, b.shape, o.shape) == (((n, k), (k, m), (n, m)) if swapped
                                           else ((m, k), (k, n), (m, n)))


def test_a_swapped_product_binds_and_reads_new_values(gemm_calls):
    """The swapped GEMM and its transposed copy run as one prepared call from the second
    call on (no BLAS call through NumPy), reading the operands' memory as it is then; new
    arrays still give the right product."""
    from kernels.cpu import native_pool
    if not native_pool.available():
        pytest.skip("bindings run through the native thread pool")
    g, x = torch.randn(16, 6272), torch.randn(73, 6272)
    f = torch.compile(lambda g, x: (g @ x.t()) * 2)   # the product in the plan's arena
    f(g, x)   # (traced)
    f(g, x)   # the plan's first call: NumPy's matmul, then the binding
    ran = len(gemm_calls)
    for _ in range(3):
        g.mul_(-0.5)
        out = f(g, x)
        np.testing.assert_allclose(out.numpy(), 2 * g.numpy() @ x.numpy().T, rtol=1e-4,
                                   atol=1e-3)
    assert len(gemm_calls) == ran, "the bound call ran, not NumPy's matmul"
    run = next(s.run for s in _plan_of(f).steps if s.kind == "matmul")
    assert run.swapped.call is not None
    g2 = torch.randn(16, 6272)
    np.testing.assert_allclose(f(g2, x).numpy(), 2 * g2.numpy() @ x.numpy().T, rtol=1e-4,
                               atol=1e-3)


def test_attention_matmuls_take_views_of_the_qkv_buffer(gemm_calls):
    """q @ k^T and att @ v on the head views of one qkv projection: only view steps
    between the projection and the batched matmuls, and BLAS gets those views."""
    B, T, H, D = 2, 8, 2, 4
    x = torch.randn(B, T, H * D)
    w = torch.randn(H * D, 3 * H * D)

    def attn(x, w):
        q, k, v = (x @ w).split(H * D, dim=2)
        q, k, v = (t.reshape(B, T, H, D).transpose(1, 2) for t in (q, k, v))
        return (q @ k.transpose(-2, -1)) @ v

    f = torch.compile(attn)
    for _ in range(2):
        out = f(x, w)
    xa, wa = x.numpy(), w.numpy()
    qkv = xa @ wa
    q, k, v = (qkv[..., i * H * D:(i + 1) * H * D].reshape(B, T, H, D).transpose(0, 2, 1, 3)
               for i in range(3))
    np.testing.assert_allclose(out.numpy(), (q @ k.transpose(0, 1, 3, 2)) @ v, rtol=1e-4,
                               atol=1e-4)
    plan = _plan_of(f)
    kinds = [s.kind for s in plan.steps]
    first = kinds.index("matmul")
    second = kinds.index("matmul", first + 1)
    assert set(kinds[first + 1:second]) == {"view"}, plan
    proj, qk = gemm_calls[-3][2], gemm_calls[-2]
    assert qk[0].ndim == 4 and np.shares_memory(qk[0], proj) and np.shares_memory(qk[1], proj)
    assert not any(s.kind == "library" for s in plan.steps)


def test_weight_gradient_plan_has_no_batched_matmul_or_library_sum():
    lin = nn.Linear(16, 32)
    x = torch.randn(4, 8, 16)

    def step(x):
        lin.zero_grad()
        loss = lin(x).pow(2).sum()
        loss.backward()
        return loss
    f = torch.compile(step)
    for _ in range(3):
        f(x)
    got_w, got_b = lin.weight.grad.numpy().copy(), lin.bias.grad.numpy().copy()
    lin.zero_grad()
    step(x)
    np.testing.assert_allclose(got_w, lin.weight.grad.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_b, lin.bias.grad.numpy(), rtol=1e-4, atol=1e-4)
    plan = _plan_of(f)
    names = [s.name for s in plan.steps if s.kind == "matmul"]
    assert all(n.count("[4,") == 0 or "@ [16, 32]" in n or "@ [32, 16]" in n
               for n in names), names
    assert not any(s.kind == "library" for s in plan.steps), plan


def test_layer_norm_forward_is_one_kernel_storing_rstd():
    """LayerNorm forward with backward: the two reductions, the normalisation and the
    affine map are one rows kernel (the rstd**3 term its backward wants runs in the
    backward's first row kernel, not as a split of the forward)."""
    ln = nn.LayerNorm(32)
    x = torch.randn(4, 8, 32, requires_grad=True)

    def step(x):
        y = ln(x)
        (y * y).sum().backward()
        return y
    f = torch.compile(step)
    for _ in range(2):
        x.grad = None
        ln.zero_grad()
        y = f(x)
    gx = x.grad.numpy().copy()
    x.grad = None
    ln.zero_grad()
    y2 = step(x)
    np.testing.assert_allclose(y.detach().numpy(), y2.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx, x.grad.numpy(), rtol=1e-4, atol=1e-4)
    plan = _plan_of(f)
    fwd = [s for s in plan.steps if s.kind == "kernel" and "rsqrt" in s.name]
    assert len(fwd) == 1 and "mean" in fwd[0].name, plan
    # 8: the step's min-cut keeps mean and rstd, and the backward recomputes x - mean
    # and the normalised x in its own kernels instead of the forward keeping them
    assert plan.num_kernels <= 8, plan


def test_gpt_train_step_kernel_count_and_equivalence():
    """A two-block GPT with AdamW, whole step compiled: few kernels, and the same losses
    and parameters as eager."""
    from gcompile.bench_models import build

    def run(compiled):
        model, opt, (x, y), loss_fn = build(torch, "gpt_train", small=True)

        def step(x, y):
            opt.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            return loss
        fn = torch.compile(step) if compiled else step
        losses = [float(fn(x, y)) for _ in range(4)]
        return losses, {n: p.detach().numpy().copy() for n, p in model.named_parameters()}, fn
    le, pe, _ = run(False)
    lc, pc, fn = run(True)
    np.testing.assert_allclose(lc, le, rtol=1e-4, atol=1e-5)
    for k in pe:
        # Adam divides by sqrt(v): near-zero gradients turn summation-order rounding
        # into visible (but bounded by lr per step) parameter differences
        np.testing.assert_allclose(pc[k], pe[k], rtol=1e-3, atol=1e-4, err_msg=k)
    plan = _plan_of(fn)
    # each parameter's scalar math and small update is its own launch (about 1.5 us);
    # equal ones share one kernel, so what compiles is few
    from kernels.spec import canonical
    distinct = len({canonical(k.spec) for k in plan.kernels()})
    assert plan.num_kernels <= 130, plan.num_kernels  # 178 before fusion fixes
    assert distinct <= 40, distinct  # 27 (78, nearly all distinct, when copies merged)
    # besides the attention ops (sdpa and sdpa_backward per block, native kernels of their own)
    library = [s.name.split()[0] for s in plan.steps if s.kind == "library"]
    assert library.count("sdpa") == library.count("sdpa_backward") == 2
    # the backward writes the fused q/k/v projection's gradient itself: no cat of its
    # three gradients (ir.passes.rewrites.attention_gradients_in_place)
    assert "cat" not in library and "select_block" not in library, library
    assert len(library) - 4 <= 16, library
    assert not any("sum_to_size" in s.name for s in plan.steps)
    # the forward writes its output with the heads side by side for the projection: no
    # copy of it (ir.passes.rewrites.attention_output_in_place)
    assert all(n.attrs.get("perm") == (0, 2, 1, 3) for s in plan.steps for n in s.nodes
               if n.op == "sdpa")
    assert not any(n.op == "clone" for s in plan.steps for n in s.nodes), \
        [s.name for s in plan.steps if any(n.op == "clone" for n in s.nodes)]


# ---- kernel steps: bound calls ------------------------------------------------------------
def _graph_exp_mul():
    g = Graph()
    a = g.add_input((16, 8), F32)
    b = g.add_input((16, 8), F32)
    t = g.add_node("exp", [a])          # planned intermediate
    u = g.add_node("mul", [t, b])
    s = g.add_node("sum", [u], {"dims": (1,), "keepdim": False})
    g.set_outputs([u, s])
    return g


def test_kernel_steps_bind_once_and_follow_new_arrays_and_layouts():
    c = compile_graph(_graph_exp_mul())
    ex = Executor(c.plan)
    steps = [s for s in c.plan.steps if s.kind == "kernel"]

    def check(a, b):
        u, s = ex([a, b])
        np.testing.assert_allclose(u, np.exp(a) * b, rtol=1e-5)
        np.testing.assert_allclose(s, (np.exp(a) * b).sum(1), rtol=1e-4)
    a = rng.standard_normal((16, 8)).astype(np.float32)
    b = rng.standard_normal((16, 8)).astype(np.float32)
    check(a, b)
    check(a, b)
    assert steps and all(s.run.bound is not None for s in steps)
    check(a + 1, b * 2)                           # new arrays, same layout
    big = rng.standard_normal((16, 16)).astype(np.float32)
    check(big[:, ::2], np.asfortranarray(b))      # other layouts: rebound, still right
    check(a, b)


def test_output_computed_into_an_input_rebinds():
    """out_into makes an output share memory with an input: the binding made for
    separate arrays must not be reused."""
    g = Graph()
    p = g.add_input((64,), F32)
    d = g.add_input((64,), F32)
    g.set_outputs([g.add_node("sub", [p, g.add_node("mul", [d, 0.5])])])
    c = compile_graph(g)
    ex = Executor(c.plan)
    pa = rng.standard_normal(64).astype(np.float32)
    da = rng.standard_normal(64).astype(np.float32)
    for _ in range(2):
        (o,) = ex([pa, da])
        np.testing.assert_allclose(o, pa - 0.5 * da, rtol=1e-6)
    assert c.plan.can_write_output_into_input(0, 0)
    want = pa - 0.5 * da
    ex([pa, da], out_into={0: pa})
    np.testing.assert_allclose(pa, want, rtol=1e-6)


def test_row_result_never_overwrites_an_input_later_loops_read():
    """A rows kernel stores a row result when its reduce loop ends; an input of the row
    shape that the later loops still read must not share its memory."""
    g = Graph()
    x = g.add_input((6, 6), F32)
    r = g.add_input((1, 6), F32)
    w = g.add_input((6, 3), F32)
    t = g.add_node("exp", [r])                                  # planned, dies below
    s = g.add_node("sum", [g.add_node("mul", [x, t])], {"dims": (0,), "keepdim": True})
    y = g.add_node("mul", [x, t])                               # read after s is stored
    g.set_outputs([g.add_node("add", [y, 1.0]), g.add_node("matmul", [s, w])])
    xa = rng.standard_normal((6, 6)).astype(np.float32)
    ra = rng.standard_normal((1, 6)).astype(np.float32)
    wa = rng.standard_normal((6, 3)).astype(np.float32)
    want = [np.asarray(o) for o in interpret(g.copy(), [xa, ra, wa])]
    c = compile_graph(g)
    for st in c.plan.steps:
        if st.spec is not None and st.spec.kind == "rows":
            rows_out = [o for i, o in enumerate(st.outputs) if st.spec.outputs[i][1] == "row"]
            assert not any(o in st.inplace for o in rows_out), c.plan
    ex = Executor(c.plan)
    for _ in range(2):
        got = ex([xa, ra, wa])
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# ---- issue 23 item 7: GroupNorm backward ---------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_group_norm_compiled_backward(dtype):
    """GroupNorm(3, 6) on a (4, 6, 5) input: compiled module backward and a compiled
    step both build plans (no 'fusion produced a cycle') and match eager."""
    torch.manual_seed(0)
    m = nn.GroupNorm(3, 6).to(dtype)
    x = torch.randn(4, 6, 5, dtype=dtype, requires_grad=True)
    w = torch.randn(4, 6, 5, dtype=dtype)

    def grads(fn):
        x.grad = None
        m.zero_grad()
        (fn(x) * w).sum().backward()
        return x.grad.numpy().copy(), m.weight.grad.numpy().copy(), m.bias.grad.numpy().copy()
    want = grads(m)
    cm = torch.compile(m)
    for _ in range(2):
        got = grads(cm)
    assert cm._compiled.entries
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)

    def step(x):
        y = F.group_norm(x, 3, m.weight, m.bias)
        (y * w).sum().backward()
        return y
    f = torch.compile(step, fullgraph=True)
    for _ in range(2):
        x.grad = None
        m.zero_grad()
        f(x)
    assert f.entries
    for a, b in zip((x.grad.numpy(), m.weight.grad.numpy(), m.bias.grad.numpy()), want):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_linear_on_permuted_rows_copies_them_for_one_gemm(gemm_calls):
    """A batch_first RNN's (T, B, H) output permuted to (B, T, H) into its decoder: the
    rows do not collapse by a view, so the step copies them into a kept buffer and runs
    one GEMM (NumPy would run one per batch entry), equal to eager bit for bit."""
    h = torch.randn(6, 4, 16)
    w = torch.randn(16, 5)
    f = torch.compile(lambda h, w: h.permute(1, 0, 2) @ w)
    want = (h.permute(1, 0, 2) @ w).numpy()
    for _ in range(3):
        out = f(h, w)
        np.testing.assert_array_equal(out.numpy(), want)
    a, b, o = gemm_calls[-1]
    assert a.shape == (24, 16) and o.shape == (24, 5)
    buf = a.base if a.base is not None else a
    assert not np.shares_memory(a, h.numpy())
    f(h, w)
    a2 = gemm_calls[-1][0]
    assert np.shares_memory(a2, buf), "the copy buffer is kept between calls"


def test_conv_relu_maxpool_step_runs_relu_on_the_pooled_values():
    """A training step's conv -> ReLU -> max-pool: the plan pools the convolution's
    output and runs the ReLU, its mask and its gradient on the pooled shape; losses and
    parameters equal eager's to rounding (the convolution's weight gradient sums in
    another order compiled, with or without the rewrite)."""
    def make():
        torch.manual_seed(4)
        model = nn.Sequential(nn.Conv2d(2, 8, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(8 * 3 * 3, 4))
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        return model, train_step(model, opt, F.cross_entropy)
    x, y = torch.randn(5, 2, 8, 8), torch.randint(0, 4, (5,))
    (m1, s1), (m2, s2) = make(), make()
    f = torch.compile(s2)
    for _ in range(4):
        np.testing.assert_allclose(f(x, y).item(), s1(x, y).item(), rtol=1e-6)
    for p, q in zip(m1.parameters(), m2.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5,
                                   atol=1e-7)
    shapes = {n.op: n.out.shape for s in _plan_of(f).steps for n in s.nodes
              if n.op in ("relu", "max_pool_indices")}
    assert shapes["relu"] == shapes["max_pool_indices"] == (5, 8, 3, 3)
    # the indices and the pooled values come from one step (``pool_pair_step``)
    names = [s.name for s in _plan_of(f).steps]
    assert any(n.startswith("max_pool_indices") and "+ pool_gather" in n for n in names)
    assert not any(n.startswith("pool_gather") for n in names)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "padded"])
def test_max_pool_with_returned_indices_from_one_step(layout, monkeypatch):
    """An inference call returning max-pool values and indices: one pair step computes
    both, in one pass where the windows fit a contiguous input and as the two ops
    where they do not (a channels-last view, padding); the same as eager either way."""
    from ir.registry import REGISTRY
    impl = REGISTRY["max_pool_indices"].impl
    passes = []

    def counted(*a, _real=impl.with_values, **k):
        passes.append(_real(*a, **k))
        return passes[-1]
    monkeypatch.setattr(impl, "with_values", counted)
    pad = 1 if layout == "padded" else 0

    def f(x):
        y = x * 2.0
        if layout == "channels_last":
            y = y.permute(0, 3, 1, 2)   # (N, H, W, C) data seen as (N, C, H, W)
        return F.max_pool2d(y, 2, stride=2, padding=pad, return_indices=True)
    x = torch.randn(3, 10, 9, 4) if layout == "channels_last" else torch.randn(3, 4, 10, 9)
    cf = torch.compile(f)
    for _ in range(3):
        got_v, got_i = cf(x)
    want_v, want_i = f(x)
    np.testing.assert_array_equal(got_v.numpy(), want_v.numpy())
    np.testing.assert_array_equal(got_i.numpy(), want_i.numpy())
    names = [s.name for s in _plan_of(cf).steps]
    assert sum("+ pool_gather" in n for n in names) == 1
    assert passes and all(passes) == (layout == "contiguous") and len(set(passes)) == 1
