"""Autograd semantics (FEATURES A1-A7) and torch's tie-splitting rules."""
import numpy as np
import pytest

import gcompile as torch


def leaf(values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype, requires_grad=True)


# ---- A1: leaves, grad_fn names, retain_grad ------------------------------------
def test_leaf_and_nonleaf():
    x = leaf([1.0, 2.0])
    assert x.is_leaf and x.requires_grad and x.grad_fn is None
    y = x * 2
    assert not y.is_leaf and y.requires_grad
    assert y.grad_fn.name() == "MulBackward0"
    z = torch.tensor([1.0])
    assert z.is_leaf and not z.requires_grad
    assert (z * 2).is_leaf  # no grad: still a leaf
    y.sum().backward()
    assert x.grad.tolist() == [2.0, 2.0]
    assert y.grad is None


@pytest.mark.parametrize("expr,name", [
    ("x + y", "AddBackward0"), ("x - y", "SubBackward0"), ("x * y", "MulBackward0"),
    ("x / y", "DivBackward0"), ("x ** 2", "PowBackward0"), ("x.exp()", "ExpBackward0"),
    ("x.sum()", "SumBackward0"), ("x.mean()", "MeanBackward0"), ("x.view(4)", "ViewBackward0"),
    ("x.t()", "TransposeBackward0"), ("x @ y", "MmBackward0"), ("x[0]", "SelectBackward0"),
    ("x[:, 1:]", "SliceBackward0"), ("x.relu()", "ReluBackward0"),
    ("x.sigmoid()", "SigmoidBackward0"), ("x.tanh()", "TanhBackward0"),
    ("x.unsqueeze(0)", "UnsqueezeBackward0"), ("x.squeeze()", "SqueezeBackward0"),
    ("x.clone()", "CloneBackward0"), ("x.permute(1, 0)", "PermuteBackward0"),
    ("x.expand(3, 2, 2)", "ExpandBackward0"), ("torch.cat([x, y])", "CatBackward0"),
    ("x.max()", "MaxBackward1"), ("x.max(0)[0]", "MaxBackward0"), ("x.abs()", "AbsBackward0"),
    ("x.double()", "ToCopyBackward0"), ("x.norm()", "LinalgVectorNormBackward0"),
    ("torch.where(x > 0, x, y)", "WhereBackward0"), ("x.neg()", "NegBackward0"),
])
def test_grad_fn_names(expr, name):
    x = leaf([[1.0, 2.0], [3.0, 4.0]])
    y = leaf([[1.0, 0.5], [2.0, 1.0]])
    out = eval(expr, {"torch": torch, "x": x, "y": y})
    assert out.grad_fn.name() == name
    assert f"grad_fn=<{name}>" in repr(out)


def test_retain_grad():
    x = leaf([1.0, 2.0])
    y = x * 3
    y.retain_grad()
    assert y.retains_grad
    (y * y).sum().backward()
    assert y.grad.tolist() == [6.0, 12.0]
    assert x.grad.tolist() == [18.0, 36.0]


def test_requires_grad_rules():
    x = torch.ones(2)
    x.requires_grad_()
    assert x.requires_grad
    y = x * 2
    with pytest.raises(RuntimeError, match="leaf variables"):
        y.requires_grad = False
    with pytest.raises(RuntimeError, match="floating point"):
        torch.ones(2, dtype=torch.int64).requires_grad_()
    assert not (x > 0).requires_grad  # comparisons are not differentiable
    assert not x.argmax().requires_grad


# ---- A2: backward on scalars, with gradient, accumulation -------------------------
def test_backward_with_gradient_and_accumulation():
    x = leaf([1.0, 2.0, 3.0])
    y = x * x
    y.backward(torch.tensor([1.0, 0.1, 0.01]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 0.4, 0.06], rtol=1e-6)
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 2.4, 2.06], rtol=1e-6)
    x.grad.zero_()
    (x * 1).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0, 1.0]
    x.grad = None
    (x * 5).sum().backward()
    assert x.grad.tolist() == [5.0, 5.0, 5.0]


def test_backward_non_scalar_needs_gradient():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar"):
        (x * 2).backward()


def test_shared_leaf_and_diamond():
    x = leaf([2.0])
    a = x * 3
    b = x * x
    (a * b + a).sum().backward()  # 3x^3 + 3x -> 9x^2 + 3
    assert x.grad.tolist() == [39.0]


def test_hooks():
    x = leaf([1.0, 2.0])
    seen = []
    y = x * 2
    h = y.register_hook(lambda g: seen.append(g.tolist()) or g * 10)
    y.sum().backward()
    assert seen == [[1.0, 1.0]]
    assert x.grad.tolist() == [20.0, 20.0]
    h.remove()


# ---- A3: graph freed after backward --------------------------------------------
def test_second_backward_raises_unless_retain_graph():
    x = leaf([1.0, 2.0])
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert x.grad.tolist() == [4.0, 8.0]
    with pytest.raises(RuntimeError, match="Trying to backward through the graph a second time"):
        y.backward()


# ---- A4: autograd.grad ------------------------------------------------------------
def test_autograd_grad_and_double_backward():
    x = leaf([1.0, 2.0], torch.float64)
    y = (x ** 3).sum()
    (g,) = torch.autograd.grad(y, x, create_graph=True)
    assert g.tolist() == [3.0, 12.0] and g.requires_grad
    assert x.grad is None
    (g2,) = torch.autograd.grad(g.sum(), x)
    assert g2.tolist() == [6.0, 12.0]
    # third order through backward()
    x = leaf([2.0], torch.float64)
    (d1,) = torch.autograd.grad(x ** 4, x, create_graph=True)
    (d2,) = torch.autograd.grad(d1, x, create_graph=True)
    d2.backward()
    assert x.grad.tolist() == [48.0]


def test_autograd_grad_outputs_and_unused():
    x = leaf([1.0, 2.0])
    w = leaf([3.0])
    y = x * 2
    (gx,) = torch.autograd.grad(y, x, grad_outputs=torch.tensor([1.0, -1.0]), retain_graph=True)
    assert gx.tolist() == [2.0, -2.0]
    with pytest.raises(RuntimeError, match="appears to not have been used"):
        torch.autograd.grad(y.sum(), [x, w], retain_graph=True)
    gx, gw = torch.autograd.grad(y.sum(), [x, w], allow_unused=True, retain_graph=True)
    assert gw is None
    gx, gw = torch.autograd.grad(y.sum(), [x, w], materialize_grads=True)
    assert gw.tolist() == [0.0]


def test_grad_wrt_nonleaf():
    x = leaf([1.0, 2.0])
    h = x * 2
    y = (h * h).sum()
    (gh,) = torch.autograd.grad(y, h)
    assert gh.tolist() == [4.0, 8.0]


# ---- A5: grad modes -----------------------------------------------------------------
def test_grad_modes_context_and_decorator():
    x = leaf([1.0])
    with torch.no_grad():
        assert not torch.is_grad_enabled()
        assert not (x * 2).requires_grad
        with torch.enable_grad():
            assert (x * 2).requires_grad
    assert torch.is_grad_enabled()

    @torch.no_grad()
    def f(t):
        return t * 2

    @torch.no_grad
    def f2(t):
        return t * 2

    assert not f(x).requires_grad and not f2(x).requires_grad
    assert torch.is_grad_enabled()
    with torch.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    torch.set_grad_enabled(False)
    assert not torch.is_grad_enabled()
    torch.set_grad_enabled(True)

    @torch.set_grad_enabled(False)
    def k(t):
        return t * 2

    assert torch.is_grad_enabled()
    assert not k(x).requires_grad and torch.is_grad_enabled()
    with torch.inference_mode():
        assert torch.is_inference_mode_enabled()
        assert not (x * 2).requires_grad

    @torch.inference_mode()
    def g(t):
        return t * 2

    assert not g(x).requires_grad
    assert not torch.is_inference_mode_enabled()

    @torch.enable_grad()
    def h(t):
        return t * 2

    with torch.no_grad():
        assert h(x).requires_grad


def test_detach():
    x = leaf([1.0, 2.0])
    y = x * 2
    d = y.detach()
    assert not d.requires_grad and d.grad_fn is None
    d[0] = 10.0  # shares memory
    assert y[0].item() == 10.0
    z = x * 3
    z.detach_()
    assert not z.requires_grad and z.is_leaf


# ---- A6: autograd.Function ------------------------------------------------------------
def test_function_multi_output_and_saved():
    class SplitScale(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, k):
            ctx.save_for_backward(x)
            ctx.k = k
            return x * k, x * x

        @staticmethod
        def backward(ctx, ga, gb):
            (x,) = ctx.saved_tensors
            return ga * ctx.k + gb * 2 * x, None

    x = leaf([1.0, 2.0], torch.float64)
    a, b = SplitScale.apply(x, 3.0)
    assert a.grad_fn is b.grad_fn
    (a.sum() + (b * 2).sum()).backward()
    assert x.grad.tolist() == [7.0, 11.0]
    x.grad = None
    a, b = SplitScale.apply(x, 3.0)
    b.sum().backward()  # the unused output gets a zero gradient
    assert x.grad.tolist() == [2.0, 4.0]
    assert torch.autograd.gradcheck(lambda t: SplitScale.apply(t, 2.0), (x,))


def test_function_saved_tensor_version_check():
    class Sq(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return 2 * x * g

    x = leaf([1.0, 2.0])
    h = x * 1
    y = Sq.apply(h)
    h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# ---- ties --------------------------------------------------------------------------
def test_tie_gradients():
    x = leaf([1.0, 3.0, 3.0])
    x.max().backward()
    assert x.grad.tolist() == [0.0, 0.5, 0.5]  # max() without dim spreads evenly
    x = leaf([[3.0, 3.0, 1.0]])
    x.max(1).values.sum().backward()
    assert x.grad.tolist() == [[1.0, 0.0, 0.0]]  # max(dim) goes to the returned index
    x = leaf([1.0, 2.0, 0.0])
    y = leaf([1.0, 1.0, 1.0])
    torch.maximum(x, y).sum().backward()
    assert x.grad.tolist() == [0.5, 1.0, 0.0] and y.grad.tolist() == [0.5, 0.0, 1.0]
    x = leaf([1.0, 2.0])
    y = leaf([1.0, 1.0])
    torch.minimum(x, y).sum().backward()
    assert x.grad.tolist() == [0.5, 0.0] and y.grad.tolist() == [0.5, 1.0]
    x = leaf([0.0, 1.0, 2.0, -1.0, 0.5])
    x.clamp(0, 1).sum().backward()  # boundaries pass the gradient
    assert x.grad.tolist() == [1.0, 1.0, 0.0, 0.0, 1.0]
    x = leaf([0.0, 0.0, 1.0])
    x.relu().sum().backward()
    assert x.grad.tolist() == [0.0, 0.0, 1.0]
    x = leaf([2.0, 2.0])
    x.amax().backward()
    assert x.grad.tolist() == [0.5, 0.5]
    x = leaf([0.0, 0.0])
    x.norm().backward()
    assert x.grad.tolist() == [0.0, 0.0]
    x = leaf([0.0, -1.0])
    x.abs().sum().backward()
    assert x.grad.tolist() == [0.0, -1.0]


# ---- in-place semantics and version counters ------------------------------------------
def test_version_counter():
    x = torch.ones(3)
    assert x._version == 0
    x.add_(1)
    x[0] = 5
    x *= 2
    assert x._version == 3
    v = x[1:]
    v.zero_()
    assert x._version == 4 and v._version == 4
    assert x.tolist() == [10.0, 0.0, 0.0]


def test_inplace_on_saved_tensor_raises():
    x = leaf([1.0, 2.0])
    y = x.sigmoid()
    y.mul_(2)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()
    a = leaf([1.0, 2.0])
    h = a * 1
    z = h * a
    h.zero_()
    with pytest.raises(RuntimeError, match="is at version 1; expected version 0"):
        z.sum().backward()


def test_inplace_through_view_rebases_history():
    a = leaf([[1.0, 2.0], [3.0, 4.0]])
    b = a * 1
    b[0].mul_(2)
    assert b.grad_fn.name() == "CopySlices"
    b.sum().backward()
    assert a.grad.tolist() == [[2.0, 2.0], [1.0, 1.0]]
    a = leaf([1.0, 2.0, 3.0])
    b = a.clone()
    b[1:] += a[:2] * 10
    b.sum().backward()
    assert a.grad.tolist() == [11.0, 11.0, 1.0]
    # a write through a chain of views (view + transpose + select)
    a = leaf([0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    b = a * 1
    b.view(2, 3).t()[1].mul_(10)
    assert b.tolist() == [0.0, 10.0, 2.0, 3.0, 40.0, 5.0]
    b.sum().backward()
    assert a.grad.tolist() == [1.0, 10.0, 1.0, 1.0, 10.0, 1.0]
    e = (leaf([1.0]) * 1).expand(3)
    with pytest.raises(RuntimeError, match="more than one element of the written-to tensor"):
        e.mul_(2)


def test_inplace_rules_under_grad():
    x = leaf([1.0, -1.0])
    with pytest.raises(RuntimeError, match="leaf Variable that requires grad"):
        x.add_(1)
    with torch.no_grad():
        x.add_(1)  # allowed: an optimiser step
    assert x.tolist() == [2.0, 0.0]
    y = x * 1
    y.relu_()
    y.exp_()
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [np.exp(2.0), 0.0], rtol=1e-6)
    w = leaf([1.0, 2.0])
    t = torch.zeros(2)
    t.mul_(0).add_(w * w)  # in-place op taking a grad input into a plain tensor
    assert t.requires_grad
    t.sum().backward()
    assert w.grad.tolist() == [2.0, 4.0]


def test_inplace_int_result_cast_error():
    t = torch.ones(2, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="result type Float can't be cast"):
        t.mul_(1.5)
    with pytest.raises(RuntimeError, match="result type Float can't be cast"):
        t /= 2
    t += 2
    assert t.tolist() == [3, 3] and t.dtype is torch.int64


def test_iadd_aliasing():
    a = torch.zeros(3)
    b = a
    a += 1
    assert b.tolist() == [1.0, 1.0, 1.0] and a is b
    c = a + 1
    c += 1
    assert a.tolist() == [1.0, 1.0, 1.0]
    v = a[:2]
    v += 5
    assert a.tolist() == [6.0, 6.0, 1.0]


def test_backward_inputs_and_leaf_hook():
    x = leaf([1.0, 2.0])
    w = leaf([3.0, 4.0])
    (x * w).sum().backward(inputs=[x])
    assert x.grad.tolist() == [3.0, 4.0] and w.grad is None
    seen = []
    w.register_hook(lambda g: seen.append(g.tolist()))
    (x * w).sum().backward()
    assert seen == [[1.0, 2.0]] and w.grad.tolist() == [1.0, 2.0]
    with pytest.raises(RuntimeError, match="assigned grad has data of a different size"):
        x.grad = torch.ones(3)


def test_no_grad_optimizer_step_pattern():
    w = torch.tensor([1.0, 2.0], requires_grad=True)
    for _ in range(3):
        loss = ((w - 5.0) ** 2).sum()
        loss.backward()
        with torch.no_grad():
            w -= 0.25 * w.grad
        w.grad.zero_()
    assert w.is_leaf and w.requires_grad
    np.testing.assert_allclose(w.detach().numpy(), [4.5, 4.625], rtol=1e-6)


@pytest.mark.parametrize("shape", [(5, 6), (2, 3, 6)])
def test_eager_linear_weight_grad_is_one_gemm_in_the_weights_layout(shape):
    """The derived (eager) gradient of linear gets the compiler's weight-gradient rewrites:
    the weight's gradient arrives dense in (out, in) order, equal to NumPy's."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 4)
    x = torch.randn(*shape, requires_grad=True)
    lin(x).square().sum().backward()
    w, b = lin.weight.detach().numpy(), lin.bias.detach().numpy()
    xn = x.detach().numpy().reshape(-1, 6)
    gy = 2 * (xn @ w.T + b)
    assert lin.weight.grad._data.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(lin.weight.grad.numpy(), gy.T @ xn, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(x.grad.numpy().reshape(-1, 6), gy @ w, rtol=1e-5, atol=1e-5)
