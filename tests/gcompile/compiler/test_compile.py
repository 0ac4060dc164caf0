"""compile(): guards, recompiles, graph breaks, mutation, modules, explain, logs, caching."""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn as nn
import gcompile.nn.functional as F
from gcompile.compiler import (RECOMPILE_LIMIT, GraphBreakError, GraphBreakWarning,
                               RecompileLimitWarning, compile)

pytestmark = pytest.mark.usefixtures("reference_kernels")


def test_decorator_forms_and_outputs():
    @compile
    def f(x, y):
        return {"s": x + y, "t": [x * y, 3]}

    @compile(fullgraph=True)
    def g(x):
        return x.exp()

    x, y = torch.randn(3, 4), torch.randn(4)
    for _ in range(2):
        out = f(x, y)
        np.testing.assert_allclose(out["s"].numpy(), (x + y).numpy())
        np.testing.assert_allclose(out["t"][0].numpy(), (x * y).numpy())
        assert out["t"][1] == 3
        np.testing.assert_allclose(g(x).numpy(), x.exp().numpy(), rtol=1e-6)
    assert len(f.entries) == 1 and len(g.entries) == 1


def test_guards_retrace_on_shape_and_dtype(capfd, monkeypatch):
    monkeypatch.setenv("GCOMPILE_LOG", "recompiles")
    f = compile(lambda x: torch.tanh(x) * 2)
    for x in (torch.randn(3, 4), torch.randn(3, 4), torch.randn(5, 4),
              torch.randn(5, 4, dtype=torch.float64)):
        out = f(x)
        assert out.dtype == x.dtype
        np.testing.assert_allclose(out.numpy(), (torch.tanh(x) * 2).numpy(), rtol=1e-6)
    assert len(f.entries) == 3
    err = capfd.readouterr().err
    assert "tensor argument 0: shape (3, 4) -> (5, 4)" in err
    assert "dtype float32 -> float64" in err


def test_outputs_do_not_alias_the_arena():
    f = compile(lambda x: (x.exp() + 1).sum(1) * x.sum())
    a = torch.randn(4, 5)
    b = torch.randn(4, 5)
    f(a)
    r1 = f(a)
    keep = r1.numpy().copy()
    f(b)
    np.testing.assert_array_equal(r1.numpy(), keep)


class Toy:
    """A module-like object: forward + named_parameters, with a training flag."""

    def __init__(self):
        self.w = torch.randn(4, 3)
        self.b = torch.zeros(3)
        self.training = True

    def named_parameters(self):
        return [("w", self.w), ("b", self.b)]

    def forward(self, x):
        y = x @ self.w + self.b
        return y * 2 if self.training else torch.relu(y)

    def __call__(self, x):
        return self.forward(x)


def test_module_parameters_are_inputs_and_training_guard():
    m = Toy()
    cm = compile(m)
    x = torch.randn(5, 4)
    cm(x)
    np.testing.assert_allclose(cm(x).numpy(), m(x).numpy(), rtol=1e-5)
    assert {v.name for v in cm.entries[0].graph.inputs} >= {"w", "b"}
    m.b.add_(1.0)  # in-place update between calls is seen
    np.testing.assert_allclose(cm(x).numpy(), ((x @ m.w + m.b) * 2).numpy(), rtol=1e-5)
    m.training = False  # the guard sees the flag
    np.testing.assert_allclose(cm(x).numpy(), torch.relu(x @ m.w + m.b).numpy(), rtol=1e-5)
    m.w = torch.randn(4, 3)  # a replaced parameter retraces
    np.testing.assert_allclose(cm(x).numpy(), torch.relu(x @ m.w + m.b).numpy(), rtol=1e-5)
    assert len(cm.entries) == 3


def test_nn_module_under_no_grad():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4), nn.LayerNorm(4))
    cm = compile(model)
    x = torch.randn(6, 8)
    with torch.no_grad():
        cm(x)
        got = cm(x)
        want = model(x)
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)
        model[0].weight.mul_(0.5)
        np.testing.assert_allclose(cm(x).numpy(), model(x).numpy(), rtol=1e-4, atol=1e-5)
        model.eval()
        cm(x)
    assert len(cm.entries) == 2
    assert cm.parameters is not None  # attribute pass-through to the module


def test_grad_mode_keeps_gradients():
    f = compile(lambda x: (x * x).sum())
    x = torch.randn(3, requires_grad=True)
    for _ in range(2):
        x.grad = None
        y = f(x)
        y.backward()
        np.testing.assert_allclose(x.grad.numpy(), 2 * x.detach().numpy(), rtol=1e-6)


def test_graph_break_warns_with_file_and_line_then_runs_eager():
    def f(x):
        if x.sum() > 0:  # graph break: bool(tensor)
            return x + 1
        return x - 1
    line = f.__code__.co_firstlineno + 1
    cf = compile(f)
    x = torch.ones(3)
    with pytest.warns(GraphBreakWarning) as rec:
        out = cf(x)
    assert len(rec) == 1
    assert rec[0].filename == __file__ and rec[0].lineno == line
    assert "bool(Tensor)" in str(rec[0].message)
    np.testing.assert_allclose(out.numpy(), [2, 2, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(cf(-x).numpy(), [-2, -2, -2])  # same signature: eager
    assert not cf.entries


def test_fullgraph_raises_naming_the_break():
    def f(x):
        return x * x.sum().item()
    with pytest.raises(GraphBreakError, match=r"Tensor.item\(\).*test_compile.py:\d+"):
        compile(f, fullgraph=True)(torch.ones(2))


def test_recompile_limit_warns_once_then_eager():
    f = compile(lambda x: x + 1, dynamic=False)  # one trace per size (dynamic: one in all)
    with pytest.warns(RecompileLimitWarning):
        for n in range(1, RECOMPILE_LIMIT + 4):
            np.testing.assert_allclose(f(torch.zeros(n)).numpy(), np.ones(n))
    assert len(f.entries) == RECOMPILE_LIMIT


def test_input_mutation_is_written_back():
    def f(x, y):
        x.add_(y)
        x[0] = 5.0
        return x * 2
    cf = compile(f)
    a, b = torch.zeros(3), torch.zeros(3)
    y = torch.ones(3)
    for _ in range(3):
        got = cf(a, y)
        want = f(b, y)
        np.testing.assert_allclose(got.numpy(), want.numpy())
        np.testing.assert_allclose(a.numpy(), b.numpy())

    def g(x):
        x.mul_(2)
        return x
    cg = compile(g)
    a = torch.ones(2)
    for _ in range(2):
        assert cg(a) is a
    np.testing.assert_allclose(a.numpy(), [4, 4])


def test_closure_tensors_are_live_and_locals_are_constants():
    scale = torch.tensor([2.0, 3.0])

    def f(x):
        z = torch.zeros(2)
        z[1] = 1.0
        return x * scale + z
    cf = compile(f)
    x = torch.ones(2)
    cf(x)
    np.testing.assert_allclose(cf(x).numpy(), [2, 4])
    scale.mul_(10)
    np.testing.assert_allclose(cf(x).numpy(), [20, 31])


def test_explain_reports_groups_kernels_and_memory():
    w = torch.randn(16, 32)
    b = torch.randn(32)
    e = torch.explain(lambda x: F.softmax(torch.relu(x @ w + b), -1), torch.randn(8, 16))
    assert e.num_kernels == 1  # bias + relu + softmax: one rows kernel after the BLAS call
    assert any("matmul" in g for g in e.groups)
    assert any("[rows" in g for g in e.groups)
    assert e.unplanned_bytes > e.planned_bytes >= 0
    assert len(e.kernel_sources) == 1
    text = str(e)
    assert "== fusion" in text and "planned arena" in text and "not fused" in text
    assert e.graph is not None and "matmul" in str(e.graph)
    with pytest.warns(GraphBreakWarning):
        brk = torch.explain(lambda x: x * float(x.sum()), torch.ones(2))
    assert brk.graph_breaks and "Tensor.item()" in str(brk)


def test_log_channels(capfd, monkeypatch):
    monkeypatch.setenv("GCOMPILE_LOG", "kernels,memory,graph_breaks")
    f = compile(lambda x: (x.exp() * 2).sum(-1))
    f(torch.randn(4, 4))
    g = compile(lambda x: x + x.sum().item())
    with pytest.warns(GraphBreakWarning):
        g(torch.ones(2))
    err = capfd.readouterr().err
    assert "[gcompile:kernels] kernel 1:" in err
    assert "[gcompile:memory] arena" in err
    assert "[gcompile:graph_breaks]" in err and "Tensor.item()" in err


def test_compiled_kernel_disk_cache_second_process(kernel_cache_dir, tmp_path):
    """A second process compiling the same function loads machine code from disk, and
    does not import Numba at all."""
    script = tmp_path / "job.py"
    script.write_text(textwrap.dedent("""
        import json
        import sys
        import gcompile as torch
        from kernels.cpu import cache_stats

        @torch.compile
        def f(x):
            return (x * 3.0 + 1.0).relu()
        x = torch.randn(64, 64)
        f(x)
        y = f(x)
        assert float((y - (x * 3.0 + 1.0).relu()).abs().max()) < 1e-5
        print(json.dumps(dict(cache_stats(), numba="numba" in sys.modules)))
    """))
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("GCOMPILE_LOG", None)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    import json
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                             text=True, timeout=240, cwd=root)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    assert runs[0]["disk_hits"] == 0 and runs[0]["compiles"] >= 1
    assert runs[1]["disk_hits"] >= 1 and runs[1]["compiles"] == 0
    assert runs[0]["numba"] and not runs[1]["numba"]


def test_random_draws_without_a_random_op_fall_back_to_eager():
    # randn is a graph op (tests/gcompile/test_random_ops.py); randperm still draws
    # from the generator in Python, which would bake its numbers in: a graph break
    def f(x):
        return x + torch.randperm(3).float()
    cf = compile(f)
    with pytest.warns(GraphBreakWarning, match="random"):
        cf(torch.zeros(3))
    outs = {tuple(cf(torch.zeros(3)).numpy()) for _ in range(20)}
    assert len(outs) > 1
    with pytest.raises(GraphBreakError, match="random"):
        compile(f, fullgraph=True)(torch.zeros(3))


def test_view_read_after_base_mutation_is_a_graph_break():
    def f(x):
        y = x * 1
        v = y[0]
        y.add_(1)
        return v * 2  # eager: v sees the update
    cf = compile(f)
    x = torch.zeros(2, 2)
    with pytest.warns(GraphBreakWarning, match="view"):
        out = cf(x)
    np.testing.assert_allclose(out.numpy(), [2, 2])
    np.testing.assert_allclose(cf(x).numpy(), [2, 2])


def test_copy_from_a_view_taken_before_its_base_was_written_is_a_graph_break():
    # found by the property test: x.copy_(v) with v = x[0] taken before x.add_(x) read
    # the old x[0] in the plan (eager copies the doubled value)
    def f(x):
        v = x[0]
        x.add_(x)
        return x.copy_(v)
    cf = compile(f)
    for _ in range(2):
        a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GraphBreakWarning)
            got = cf(a)
        np.testing.assert_allclose(got.numpy(), f(b).numpy())
        np.testing.assert_allclose(a.numpy(), [2.0, 2.0, 2.0])


def test_tracing_frees_intermediates_the_code_drops():
    """The first call traces while running eagerly; it must not keep every activation
    alive (peak memory of a first call = eager's)."""
    import weakref
    freed = []

    def f(x):
        y = x * 2.0
        ref = weakref.ref(y._data)
        z = y + 1.0
        del y
        freed.append(ref() is None)
        return z

    cf = compile(f)
    x = torch.randn(1000)
    np.testing.assert_allclose(cf(x).numpy(), x.numpy() * 2 + 1, rtol=1e-6)
    assert freed == [True]
