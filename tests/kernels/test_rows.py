"""Rows kernels: multi-phase reduce/map per row (reductions, softmax, LayerNorm)."""
from __future__ import annotations

import numpy as np
import pytest

from kernels.cpu import compile_kernel, set_parallel_threshold
from kernels.spec import KernelSpec, Phase, Stmt, const, inp, red, rowlen, var

F = "float32"
TOL = dict(rtol=1e-4, atol=1e-5)  # DESIGN tolerance for reductions


def S(name, op, *args, dtype=F):
    return Stmt(name, op, tuple(args), (), dtype)


def stats_spec():
    """sum, max, min, prod and mean of each row, as row outputs."""
    return KernelSpec((F,), ((F, "row"),) * 5, (
        Phase("reduce", (), reduce_op="sum", reduce_value=inp(0), store_result=0),
        Phase("reduce", (), reduce_op="max", reduce_value=inp(0), store_result=1),
        Phase("reduce", (), reduce_op="min", reduce_value=inp(0), store_result=2),
        Phase("reduce", (), reduce_op="prod", reduce_value=inp(0), store_result=3),
        Phase("reduce", (S("sq", "mul", inp(0), inp(0)),), reduce_op="sum",
              reduce_value=var("sq"), post=(S("ms", "div", red(4), rowlen(F)),),
              store_result=4),
    ), "rows")


def softmax_spec():
    return KernelSpec((F,), ((F, "full"),), (
        Phase("reduce", (), reduce_op="max", reduce_value=inp(0)),
        Phase("reduce", (S("d", "sub", inp(0), red(0)), S("e", "exp", var("d"))),
              reduce_op="sum", reduce_value=var("e")),
        Phase("map", (S("d2", "sub", inp(0), red(0)), S("e2", "exp", var("d2")),
                      S("y", "div", var("e2"), red(1))), stores=((0, var("y")),)),
    ), "rows")


def layernorm_spec():
    return KernelSpec((F, F, F), ((F, "full"), (F, "row"), (F, "row")), (
        Phase("reduce", (), reduce_op="sum", reduce_value=inp(0),
              post=(S("mean", "div", red(0), rowlen(F)),), store_result=1),
        Phase("reduce", (S("d", "sub", inp(0), red(0)), S("sq", "mul", var("d"), var("d"))),
              reduce_op="sum", reduce_value=var("sq"),
              post=(S("var", "div", red(1), rowlen(F)),
                    S("ve", "add", var("var"), const(1e-5, F)),
                    S("rstd", "rsqrt", var("ve"))), store_result=2),
        Phase("map", (S("d3", "sub", inp(0), red(0)), S("y", "mul", var("d3"), red(1)),
                      S("z", "mul", var("y"), inp(1)), S("o", "add", var("z"), inp(2))),
              stores=((0, var("o")),)),
    ), "rows")


rng = np.random.default_rng(0)


def _check_stats(x, axis=-1):
    xr = np.moveaxis(x, axis, -1)
    outer = xr.shape[:-1]
    outs = [np.empty(outer, np.float32) for _ in range(5)]
    compile_kernel(stats_spec())([xr], outs)
    with np.errstate(all="ignore"):
        want = [xr.sum(-1), xr.max(-1, initial=-np.inf), xr.min(-1, initial=np.inf),
                xr.prod(-1), (xr * xr).mean(-1) if xr.shape[-1] else np.full(outer, np.nan)]
    for got, w in zip(outs, want):
        np.testing.assert_allclose(got, w, equal_nan=True, **TOL)


@pytest.mark.parametrize("case", ["contiguous", "reduce_dim0", "middle_axis", "sliced",
                                  "odd_length", "one_row", "nan"])
def test_reductions(case):
    x = (rng.standard_normal((6, 37)) * 0.5).astype(np.float32)
    if case == "contiguous":
        _check_stats(x)
    elif case == "reduce_dim0":
        _check_stats(rng.standard_normal((29, 12)).astype(np.float32), axis=0)
    elif case == "middle_axis":
        _check_stats(rng.standard_normal((3, 19, 4)).astype(np.float32), axis=1)
    elif case == "sliced":
        _check_stats(rng.standard_normal((8, 50)).astype(np.float32)[::2, 3::3])
    elif case == "odd_length":
        _check_stats(x[:, :5])
    elif case == "one_row":
        _check_stats(x[:1])
    else:
        x[2, 5] = np.nan
        x[4, 0] = np.nan
        _check_stats(x)


def test_row_outputs_keepdim_and_empty_rows():
    x = rng.standard_normal((4, 9)).astype(np.float32)
    outs = [np.empty((4, 1), np.float32) for _ in range(5)]
    compile_kernel(stats_spec())([x], outs)
    np.testing.assert_allclose(outs[0][:, 0], x.sum(1), **TOL)
    e = np.empty((3, 0), np.float32)
    outs = [np.empty(3, np.float32) for _ in range(5)]
    compile_kernel(stats_spec())([e], outs)
    np.testing.assert_array_equal(outs[0], 0.0)
    np.testing.assert_array_equal(outs[1], -np.inf)
    np.testing.assert_array_equal(outs[2], np.inf)
    np.testing.assert_array_equal(outs[3], 1.0)


def _softmax_ref(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.mark.parametrize("case", ["contiguous", "transposed", "3d", "parallel", "in_place"])
def test_softmax(case):
    k = compile_kernel(softmax_spec())
    x = (rng.standard_normal((16, 45)) * 4).astype(np.float32)
    if case == "transposed":
        x = np.ascontiguousarray(x.T).T
    elif case == "3d":
        x = (rng.standard_normal((2, 5, 13)) * 3).astype(np.float32)
    want = _softmax_ref(x)
    if case == "in_place":
        k([x], [x])
        np.testing.assert_allclose(x, want, **TOL)
        return
    out = np.empty(x.shape, np.float32)
    old = set_parallel_threshold(0 if case == "parallel" else 1 << 40)
    try:
        k([x], [out])
    finally:
        set_parallel_threshold(old)
    np.testing.assert_allclose(out, want, **TOL)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("shape", [(4, 5, 37), (7, 64), (1, 3)])
def test_layernorm(shape):
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    w = rng.standard_normal(shape[-1]).astype(np.float32)
    b = rng.standard_normal(shape[-1]).astype(np.float32)
    out = np.empty_like(x)
    mean = np.empty(shape[:-1], np.float32)
    rstd = np.empty(shape[:-1] + (1,), np.float32)
    compile_kernel(layernorm_spec())(
        [x, np.broadcast_to(w, shape), np.broadcast_to(b, shape)], [out, mean, rstd])
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    want = (x - mu) / np.sqrt(var + 1e-5) * w + b
    np.testing.assert_allclose(out, want, **TOL)
    np.testing.assert_allclose(mean, mu[..., 0], **TOL)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(var + 1e-5), **TOL)


def test_int_sum_of_bools_and_mixed_dtypes():
    # count of positive entries per row (bool -> int64 accumulate) and float64 sum of float32
    spec = KernelSpec((F,), (("int64", "row"), ("float64", "row")), (
        Phase("reduce", (S("p", "gt", inp(0), const(0.0, F), dtype="bool"),
                         S("pi", "cast", var("p"), dtype="int64")),
              reduce_op="sum", reduce_value=var("pi"), store_result=0),
        Phase("reduce", (S("x64", "cast", inp(0), dtype="float64"),), reduce_op="sum",
              reduce_value=var("x64"), store_result=1),
    ), "rows")
    x = rng.standard_normal((5, 23)).astype(np.float32)
    cnt, tot = np.empty(5, np.int64), np.empty(5, np.float64)
    compile_kernel(spec)([x], [cnt, tot])
    np.testing.assert_array_equal(cnt, (x > 0).sum(1))
    np.testing.assert_allclose(tot, x.astype(np.float64).sum(1), rtol=1e-12)


def test_layernorm_over_dim0_column_blocked():
    # normalise each column of a C-contiguous (R, C) matrix: the reduced axis is strided,
    # the next one contiguous -> the column-blocked variant; weight/bias vary along the row
    r, c = 19, 70
    x = rng.standard_normal((r, c)).astype(np.float32)
    w = rng.standard_normal(r).astype(np.float32)
    b = rng.standard_normal(r).astype(np.float32)
    out = np.empty_like(x)
    mean = np.empty(c, np.float32)
    rstd = np.empty(c, np.float32)
    k = compile_kernel(layernorm_spec())
    k([x.T, np.broadcast_to(w, (c, r)), np.broadcast_to(b, (c, r))], [out.T, mean, rstd])
    assert any(v[0] == "rowsblk" for v in k._fns)
    mu = x.mean(0, keepdims=True)
    var = ((x - mu) ** 2).mean(0, keepdims=True)
    want = (x - mu) / np.sqrt(var + 1e-5) * w[:, None] + b[:, None]
    np.testing.assert_allclose(out, want, **TOL)
    np.testing.assert_allclose(mean, mu[0], **TOL)
    np.testing.assert_allclose(rstd, 1 / np.sqrt(var[0] + 1e-5), **TOL)


def test_column_blocks_narrow_for_threads_and_keep_the_sums(monkeypatch):
    # the bias gradient of a [1024, 512] activation: one 512-wide block left one thread
    # doing everything; with two threads the blocks narrow to two tasks, and since each
    # column is still summed in row order the results are bit-identical to one thread
    import kernels.cpu as kc
    x = rng.standard_normal((1024, 512)).astype(np.float32)
    spec = KernelSpec((F,), ((F, "row"),), (
        Phase("reduce", (S("e", "exp", inp(0)),), reduce_op="sum", reduce_value=var("e"),
              store_result=0),), "rows")
    got = {}
    for threads in (1, 2):
        monkeypatch.setattr(kc, "_nthreads", lambda t=threads: t)
        old = set_parallel_threshold(1 << 10)
        try:
            k = compile_kernel(spec)
            plan = k._plan([x.T], [np.empty(512, np.float32)], x.T.shape, (-1,))
            assert plan[1][0] == "rowsblk"
            assert plan[3] == threads  # tasks: one block, or one per thread
            out = np.empty(512, np.float32)
            k([x.T], [out])
            got[threads] = out
        finally:
            set_parallel_threshold(old)
    np.testing.assert_array_equal(got[1], got[2])
    np.testing.assert_allclose(got[2], np.exp(x.astype(np.float64)).sum(0), rtol=1e-5)


def test_costly_rows_split_over_threads_below_the_element_threshold(monkeypatch):
    """The threshold is weighed in plain passes: softmax (three passes, two exps an
    element) splits at a ninth of the elements a one-pass copy needs."""
    import kernels.cpu as cpu
    from kernels.cpu import work_weight
    assert work_weight(softmax_spec()) == 9 and work_weight(stats_spec()) == 5
    copy = KernelSpec((F,), ((F, "full"),), (Phase("map", (), stores=((0, inp(0)),)),),
                      "elementwise")
    assert work_weight(copy) == 1
    from ir.registry import REGISTRY
    assert all(REGISTRY[op].expr is not None for op in cpu._COSTLY)  # names of real ops
    split = []
    real = cpu.CompiledKernel._run_parallel
    monkeypatch.setattr(cpu.CompiledKernel, "_run_parallel",
                        lambda self, *a, **k: (split.append(self.spec), real(self, *a, **k)))
    x = rng.standard_normal((64, 100)).astype(np.float32)
    old = set_parallel_threshold(x.size * 5)
    try:
        for spec in (softmax_spec(), copy):
            out = np.empty_like(x)
            compile_kernel(spec)([x], [out], parallel=None)
    finally:
        set_parallel_threshold(old)
    # (specs come back canonical: the softmax is the one rows kernel)
    assert [s.kind for s in split] == (["rows"] if cpu._nthreads() >= 2 else [])
    np.testing.assert_array_equal(out, x)
