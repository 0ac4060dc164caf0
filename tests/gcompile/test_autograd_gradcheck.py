"""Every differentiable op through gradcheck (float64 finite differences)."""
import numpy as np
import pytest

import gcompile as torch
from gcompile.autograd import gradcheck, gradgradcheck

RNG = np.random.default_rng(1)


def T(*shape, lo=-2.0, hi=2.0, away=0.0):
    """A float64 leaf that requires grad, values kept ``away`` from 0 and ties."""
    a = RNG.uniform(lo, hi, shape)
    if away:
        a = np.where(np.abs(a) < away, np.sign(a + 1e-12) * away, a)
    return torch.tensor(a, dtype=torch.float64, requires_grad=True)


def P(*shape):
    return T(*shape, lo=0.5, hi=2.0)


# name -> (function, input factory)
CASES = {
    "neg": (lambda x: -x, lambda: (T(2, 3),)),
    "abs": (torch.abs, lambda: (T(2, 3, away=0.1),)),
    "exp": (torch.exp, lambda: (T(2, 3),)),
    "log": (torch.log, lambda: (P(2, 3),)),
    "log2": (torch.log2, lambda: (P(3),)),
    "log10": (torch.log10, lambda: (P(3),)),
    "log1p": (torch.log1p, lambda: (P(3),)),
    "expm1": (torch.expm1, lambda: (T(3),)),
    "sqrt": (torch.sqrt, lambda: (P(2, 3),)),
    "rsqrt": (torch.rsqrt, lambda: (P(2, 3),)),
    "reciprocal": (torch.reciprocal, lambda: (P(3),)),
    "sin": (torch.sin, lambda: (T(3),)),
    "cos": (torch.cos, lambda: (T(3),)),
    "tan": (torch.tan, lambda: (T(3, lo=-1, hi=1),)),
    "tanh": (torch.tanh, lambda: (T(2, 3),)),
    "sigmoid": (torch.sigmoid, lambda: (T(2, 3),)),
    "erf": (torch.erf, lambda: (T(2, 3),)),
    "relu": (torch.relu, lambda: (T(2, 3, away=0.1),)),
    "clamp": (lambda x: x.clamp(-0.5, 0.5), lambda: (T(4, away=0.1),)),
    "clamp_min_tensor": (lambda x, m: torch.clamp(x, min=m), lambda: (T(4), T(4))),
    "square": (torch.square, lambda: (T(3),)),
    "add_bcast": (lambda x, y: x + y, lambda: (T(2, 3), T(3))),
    "sub_bcast": (lambda x, y: x - y, lambda: (T(2, 1), T(1, 3))),
    "rsub_scalar": (lambda x: 2.0 - x, lambda: (T(3),)),
    "mul_bcast": (lambda x, y: x * y, lambda: (T(2, 3), T(2, 1))),
    "div": (lambda x, y: x / y, lambda: (T(2, 3), P(3))),
    "rdiv": (lambda x: 1.5 / x, lambda: (P(3),)),
    "pow_scalar": (lambda x: x ** 3, lambda: (T(3),)),
    "pow_tensor": (lambda x, y: x ** y, lambda: (P(3), T(3))),
    "rpow": (lambda y: 2.0 ** y, lambda: (T(3),)),
    "maximum": (torch.maximum, lambda: (T(4), T(4))),
    "minimum": (torch.minimum, lambda: (T(2, 2), T(2))),
    "atan2": (torch.atan2, lambda: (T(3), P(3))),
    "remainder": (lambda x: x % 0.7, lambda: (P(4),)),
    "where": (lambda x, y: torch.where(x > 0, x, y), lambda: (T(2, 3, away=0.1), T(3))),
    "lerp": (lambda x, y: torch.lerp(x, y, 0.3), lambda: (T(3), T(3))),
    "addcmul": (lambda x, y, z: torch.addcmul(x, y, z, value=0.5), lambda: (T(3), T(3), T(3))),
    "sum": (lambda x: x.sum(), lambda: (T(2, 3),)),
    "sum_dim": (lambda x: x.sum((0, 2), keepdim=True), lambda: (T(2, 3, 2),)),
    "mean": (lambda x: x.mean(1), lambda: (T(2, 3),)),
    "prod": (lambda x: x.prod(1), lambda: (T(2, 3, away=0.2),)),
    "prod_with_zero": (lambda x: x.prod(), lambda: (torch.tensor(
        [0.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True),)),
    "var": (lambda x: x.var(1), lambda: (T(2, 4),)),
    "std": (lambda x: x.std(), lambda: (T(2, 4),)),
    "amax": (lambda x: x.amax(1), lambda: (T(3, 4),)),
    "max_dim": (lambda x: x.max(1).values, lambda: (T(3, 4),)),
    "min_all": (lambda x: x.min(), lambda: (T(3, 4),)),
    "logsumexp": (lambda x: x.logsumexp(1), lambda: (T(3, 4),)),
    "norm2": (lambda x: x.norm(), lambda: (T(3, 4),)),
    "norm1_dim": (lambda x: x.norm(p=1, dim=1), lambda: (T(3, 4, away=0.1),)),
    "norm3": (lambda x: x.norm(p=3, dim=0, keepdim=True), lambda: (T(3, 4, away=0.1),)),
    "cumsum": (lambda x: x.cumsum(1), lambda: (T(2, 4),)),
    "cumprod": (lambda x: x.cumprod(1), lambda: (T(2, 4, away=0.2),)),
    "cumprod_zero": (lambda x: x.cumprod(0), lambda: (torch.tensor(
        [2.0, 0.0, 3.0, 0.5], dtype=torch.float64, requires_grad=True),)),
    "sort": (lambda x: x.sort(1, descending=True).values, lambda: (T(2, 4),)),
    "topk": (lambda x: x.topk(2).values, lambda: (T(2, 4),)),
    "quantile": (lambda x: torch.quantile(x, 0.4, dim=1), lambda: (T(2, 5),)),
    "matmul": (torch.matmul, lambda: (T(2, 3), T(3, 4))),
    "matmul_bcast": (torch.matmul, lambda: (T(2, 2, 3), T(3, 2))),
    "mv": (torch.mv, lambda: (T(2, 3), T(3))),
    "dot": (torch.dot, lambda: (T(3), T(3))),
    "vecmat": (torch.matmul, lambda: (T(3), T(3, 2))),
    "bmm": (torch.bmm, lambda: (T(2, 2, 3), T(2, 3, 2))),
    "einsum": (lambda x, y: torch.einsum("ij,jk->ik", x, y), lambda: (T(2, 3), T(3, 2))),
    "outer": (torch.outer, lambda: (T(2), T(3))),
    "reshape": (lambda x: x.reshape(3, 2), lambda: (T(2, 3),)),
    "view_t": (lambda x: x.t().reshape(6), lambda: (T(2, 3),)),
    "permute": (lambda x: x.permute(2, 0, 1), lambda: (T(2, 3, 2),)),
    "expand": (lambda x: x.expand(3, 2, 4), lambda: (T(2, 1),)),
    "squeeze": (lambda x: x.squeeze(1).unsqueeze(0), lambda: (T(2, 1, 3),)),
    "flatten": (lambda x: x.flatten(1), lambda: (T(2, 2, 2),)),
    "getitem_slice": (lambda x: x[1:, ::2], lambda: (T(3, 4),)),
    "getitem_int": (lambda x: x[1], lambda: (T(3, 4),)),
    "getitem_tensor": (lambda x: x[torch.tensor([0, 2, 0])], lambda: (T(3, 2),)),
    "getitem_mask": (lambda x: x[x > 0], lambda: (T(3, 2, away=0.1),)),
    "index_select": (lambda x: x.index_select(1, torch.tensor([1, 1, 0])), lambda: (T(2, 3),)),
    "gather": (lambda x: x.gather(1, torch.tensor([[0, 0], [2, 1]])), lambda: (T(2, 3),)),
    "scatter": (lambda x, s: x.scatter(1, torch.tensor([[0], [2]]), s),
                lambda: (T(2, 3), T(2, 1))),
    "scatter_add": (lambda x, s: x.scatter_add(1, torch.tensor([[0, 0], [2, 1]]), s),
                    lambda: (T(2, 3), T(2, 2))),
    "masked_fill": (lambda x: x.masked_fill(torch.tensor([True, False, True]), 0.5),
                    lambda: (T(2, 3),)),
    "cat": (lambda x, y: torch.cat([x, y], 1), lambda: (T(2, 2), T(2, 3))),
    "stack": (lambda x, y: torch.stack([x, y], 1), lambda: (T(2, 3), T(2, 3))),
    "split": (lambda x: x.split([1, 2], 1)[1], lambda: (T(2, 3),)),
    "chunk_unbind": (lambda x: x.chunk(2)[1] * x.unbind(0)[0], lambda: (T(2, 3),)),
    "flip": (lambda x: x.flip(1), lambda: (T(2, 3),)),
    "roll": (lambda x: x.roll(1, 1), lambda: (T(2, 3),)),
    "repeat": (lambda x: x.repeat(2, 3), lambda: (T(2, 2),)),
    "tril": (lambda x: x.tril(), lambda: (T(3, 3),)),
    "triu": (lambda x: x.triu(1), lambda: (T(3, 3),)),
    "clone_contig": (lambda x: x.t().contiguous(), lambda: (T(2, 3),)),
    "diag": (lambda x: torch.diag(x), lambda: (T(3, 3),)),
    "diag_vec": (lambda x: torch.diag(x), lambda: (T(3),)),
    "trace": (lambda x: torch.trace(x), lambda: (T(3, 3),)),
    "setitem": (lambda x, v: _setitem(x, v), lambda: (T(3, 3), T(3))),
    "inplace_chain": (lambda x: _inplace_chain(x), lambda: (T(2, 3, lo=0.5),)),
    "inplace_views": (lambda x: _inplace_through_views(x), lambda: (T(2, 3),)),
}


def _setitem(x, v):
    y = x * 1.0
    y[1] = v
    y[:, 0] = v * 2
    return y


def _inplace_through_views(x):
    y = x * 2
    y.t()[0].add_(x[:, 0] * 3)
    y.view(-1)[4:].mul_(x.view(-1)[:2])
    return y


def _inplace_chain(x):
    y = x * 2
    y.add_(1.0).mul_(x).exp_()
    y[0].div_(3.0)
    return y


@pytest.mark.parametrize("name", sorted(CASES))
def test_gradcheck(name):
    fn, make = CASES[name]
    assert gradcheck(fn, make())


def test_gradcheck_cast_roundtrip():
    # through float32 the finite difference needs a larger step
    x = T(3, lo=0.5, hi=1.0)
    assert gradcheck(lambda t: t.float().double() * 2, (x,), eps=1e-3, atol=1e-3)
    y = x.float()
    assert y.grad_fn.name() == "ToCopyBackward0"
    y.sum().backward()
    assert x.grad.dtype is torch.float64 and x.grad.tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["mul", "tanh", "sigmoid", "exp", "matmul", "div", "sum_mean",
                                  "pow", "norm"])
def test_gradgradcheck(name):
    fns = {
        "mul": (lambda x, y: x * y * x, (T(3), T(3))),
        "tanh": (torch.tanh, (T(3),)),
        "sigmoid": (torch.sigmoid, (T(3),)),
        "exp": (torch.exp, (T(2, 2),)),
        "matmul": (torch.matmul, (T(2, 3), T(3, 2))),
        "div": (lambda x, y: x / y, (T(3), P(3))),
        "sum_mean": (lambda x: (x * x).mean(0), (T(3, 2),)),
        "pow": (lambda x: x ** 3, (T(3),)),
        "norm": (lambda x: x.norm(), (T(3),)),
    }
    fn, inputs = fns[name]
    assert gradgradcheck(fn, inputs)


def test_gradcheck_non_contiguous_input():
    x = torch.tensor(np.random.default_rng(3).standard_normal((3, 2)), dtype=torch.float64).t()
    x.requires_grad_()
    assert not x.is_contiguous()
    assert gradcheck(lambda t: (t * t).sum(1), (x,))


def test_gradcheck_catches_a_wrong_gradient():
    class BadSquare(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x * x

        @staticmethod
        def backward(ctx, g):
            (x,) = ctx.saved_tensors
            return g * x  # should be 2 * g * x

    x = T(3)
    with pytest.raises(RuntimeError, match="Jacobian mismatch"):
        gradcheck(BadSquare.apply, (x,))
    assert gradcheck(BadSquare.apply, (x,), raise_exception=False) is False
