"""compiled == eager for fused op combinations, on contiguous/transposed/sliced/broadcast
inputs (each op alone: tests/ir/test_registry_coverage.py, driven by the registry).

Breadth runs with the NumPy evaluation of each KernelSpec (``reference_kernels``:
no Numba compile per op); the generated Numba kernels are exercised by a few
fused mega-kernels (sixteen unary ops in one kernel, a multi-phase rows kernel)
whose compile is shared across layouts.
"""
import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from gcompile.compiler import compile
from ir import serialize
from ir.interpreter import interpret
from ir.verify import verify

RTOL = {torch.float32: 1e-5, torch.float64: 1e-10}
RED_TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


def make(layout, dtype, seed=0, shape=(6, 5)):
    g = torch.Generator().manual_seed(seed)
    r, c = shape
    if layout == "contiguous":
        return torch.randn(r, c, generator=g, dtype=dtype)
    if layout == "transposed":
        return torch.randn(c, r, generator=g, dtype=dtype).t()
    if layout == "sliced":
        return torch.randn(2 * r, c + 3, generator=g, dtype=dtype)[::2, 1:c + 1]
    if layout == "broadcast":
        return torch.randn(1, c, generator=g, dtype=dtype).expand(r, c)
    raise ValueError(layout)


def check(fn, *args, rtol=1e-5, atol=1e-6):
    with torch.no_grad():
        cf = compile(fn)
        cf(*args)  # trace (eager results)
        got = cf(*args)  # compiled plan
        want = fn(*args)
    got = got if isinstance(got, (tuple, list)) else (got,)
    want = want if isinstance(want, (tuple, list)) else (want,)
    assert len(cf.entries) == 1
    entry = cf.entries[0]
    verify(entry.graph)  # the optimised graph is well formed, and round-trips through JSON
    assert str(serialize.loads(serialize.dumps(entry.graph))) == str(entry.graph)
    arrays = [args[i]._data if kind == "arg" else entry.live[i][0]._data
              for kind, i in entry.input_map]
    oracle = interpret(entry.graph, arrays)
    for o, w in zip(oracle, want):
        np.testing.assert_allclose(o, w.numpy(), rtol=rtol, atol=atol)
    for g_, w in zip(got, want):
        assert g_.dtype == w.dtype and tuple(g_.shape) == tuple(w.shape)
        np.testing.assert_allclose(g_.numpy(), w.numpy(), rtol=rtol, atol=atol)
    return cf


# Each registered op alone, on every layout, is compiled and checked against eager by the
# registry-driven tests/ir/test_registry_coverage.py. Here: fused combinations of ops.
FUSED_UNARY = {
    "square": lambda x: x * x,
    "cast_round_trip": lambda x: (x * 3).to(torch.int64).to(x.dtype),
    "isfinite_of_nan": lambda x: torch.where(torch.isfinite(x / (x - x)), x, -x),
    "log_of_abs": lambda x: torch.log(x.abs() + 0.5),
    "gelu_tanh_clamp": lambda x: F.gelu(x, approximate="tanh").clamp(-0.5, 0.7),
}
FUSED_BINARY = {
    "cmp": lambda a, b: ((a < b).float() + (a >= b).float() * 2 + (a == a).float()).to(a.dtype),
    "where": lambda a, b: torch.where(a > b, a, b * 2),
    "scalar": lambda a, b: (a * 2.5 - 1) / 3 + b ** 2,
    "pow_abs": lambda a, b: torch.pow(a.abs() + 0.1, b),
}
LAYOUTS = ["contiguous", "transposed", "sliced", "broadcast"]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_elementwise(reference_kernels, layout, dtype):
    x = make(layout, dtype)
    row = make("contiguous", dtype, seed=1, shape=(1, 5)).reshape(5)
    col = make(layout, dtype, seed=2)
    for name, fn in FUSED_UNARY.items():
        try:
            check(fn, x, rtol=RTOL[dtype], atol=1e-6)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
    for name, fn in FUSED_BINARY.items():
        for y in (row, col):
            try:
                check(fn, x, y, rtol=RTOL[dtype], atol=1e-6)
            except AssertionError as e:
                raise AssertionError(f"{name}: {e}") from None


@pytest.mark.parametrize("layout", LAYOUTS)
def test_fused_reduction(reference_kernels, layout):
    x = make(layout, torch.float32)
    for dims in (-1, 0, (0, 1)):
        for keep in (False, True):
            check(lambda x, dims=dims, keep=keep: (x.exp() * 2).sum(dims, keepdim=keep) + 1, x,
                  rtol=RED_TOL[torch.float32], atol=1e-5)


def test_reduction_over_middle_and_3d(reference_kernels):
    x = torch.randn(3, 4, 5)
    check(lambda x: torch.softmax(x, 1) if hasattr(torch, "softmax") else F.softmax(x, 1), x)
    check(lambda x: (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1), x, atol=1e-5)
    check(lambda x: x.sum((1, 2)) * 2, x, rtol=1e-4)
    check(lambda x: x.sum((0, 2), keepdim=True) + x, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_movement_and_matmul(reference_kernels, layout):
    x = make(layout, torch.float32)
    w = torch.randn(5, 3)
    v = torch.randn(5)
    b = torch.randn(3, 6, 5)
    cases = {
        "permute": lambda x: x.t().exp() + 1,
        "reshape": lambda x: x.reshape(5, 6).sin() * 2,
        "expand": lambda x: x[:, :1].expand(6, 5) + x,
        "slice": lambda x: x[1:4, ::2].tanh(),
        "index": lambda x: x[torch.tensor([0, 2, 2])] * 3,
        "cat": lambda x: torch.cat([x, x * 2], 0).relu(),
        "flip": lambda x: x.flip(0) - x,
        "clone": lambda x: x.clone() + 1,
        "roll": lambda x: torch.roll(x, 2, 1) * x,
        "repeat": lambda x: x.repeat(2, 1).sin(),
        "pad": lambda x: F.pad(x, (1, 2)) - 1,
        "tril": lambda x: torch.tril(x) + torch.triu(x, 1) * 2,
        "squeeze": lambda x: x.unsqueeze(0).squeeze(0).exp(),
        "where_bcast": lambda x: torch.where(x[:1] > 0, x, x.t()[:1, :].t()[:5].t()),
        "masked_fill": lambda x: x.masked_fill(x > 0.5, 0.0) + 1,
        "cumsum": lambda x: torch.cumsum(x, 0) * 2,
        "argmax": lambda x: torch.argmax(x, 1) + 1,
        "max_dim": lambda x: torch.max(x, 1).values * 2,
        "matmul": lambda x: torch.relu(x @ w + 1.0),
        "matvec": lambda x: (x @ v).exp(),
        "bmm": lambda x: torch.matmul(b, x.t()).sum(-1),
        "gather": lambda x: torch.gather(x, 1, torch.tensor([[0, 1]] * 6)) * 2,
        "softmax": lambda x: F.softmax(x * 2, -1),
        "log_softmax": lambda x: F.log_softmax(x, 0),
        "layer_norm": lambda x: F.layer_norm(x, (5,)),
    }
    for name, fn in cases.items():
        try:
            check(fn, x, rtol=1e-4, atol=1e-5)
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None


def test_int_and_bool_dtypes(reference_kernels):
    a = torch.arange(12).reshape(3, 4)
    check(lambda a: (a * 3 + 1) % 5 - (a // 2), a)
    check(lambda a: ((a > 3) & (a < 9)) | (a == 0), a)
    check(lambda a: a.sum(1) + a.float().mean(), a)


# ---- the generated Numba kernels ------------------------------------------------------------
MEGA_UNARY = (
    torch.exp, torch.tanh, torch.sigmoid, torch.erf, torch.relu,
    lambda x: F.gelu(x, approximate="tanh"), F.silu, lambda x: torch.log1p(x.abs()), torch.sin,
    lambda x: torch.clamp(x, -0.5, 0.7), torch.floor, lambda x: torch.sqrt(x.abs()),
    lambda x: torch.rsqrt(x.abs() + 0.5), F.elu, F.softplus,
    lambda x: torch.where(x > 0, x, x * 0.5),
)


def _mega_unary(x):
    return tuple(fn(x) for fn in MEGA_UNARY)


def test_generated_elementwise_kernel_all_layouts():
    cf = None
    for layout in LAYOUTS:
        x = make(layout, torch.float32, shape=(40, 33))
        cf = cf or compile(_mega_unary)
        with torch.no_grad():
            got = cf(x) if cf.entries else (cf(x), cf(x))[1]
        want = _mega_unary(x)
        for g_, w in zip(got, want):
            np.testing.assert_allclose(g_.numpy(), w.numpy(), rtol=1e-5, atol=1e-6)
    assert len(cf.entries) == 1
    plan = cf.entries[0].executable.plan
    assert plan.num_kernels == 1


def test_generated_kernels_float64_and_rows():
    x = torch.randn(37, 29, dtype=torch.float64)
    check(_mega_unary, x, rtol=1e-10, atol=1e-12)

    def rows(x):
        y = x.exp()
        a = y.sum(-1, keepdim=True)
        b = (y / a).amax(-1, keepdim=True)
        c = (y - b).mean(-1, keepdim=True)
        d = (y * c).var(-1, keepdim=True)
        return y * d + a, c
    cf = check(rows, torch.randn(37, 29), rtol=1e-4, atol=1e-5)
    assert cf.entries[0].executable.plan.num_kernels == 1
