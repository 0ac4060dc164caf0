"""kernels.cpu.cost_weight: costly per-element code lowers the size at which a kernel
splits over threads (a 262K-element attention softmax runs on two threads)."""
import numpy as np

import kernels.cpu as kcpu
from kernels.spec import KernelSpec, Phase, Stmt


def _ew(ops):
    stmts, prev = [], ("in", 0)
    for i, op in enumerate(ops):
        args = (prev,) if op in ("exp", "tanh", "neg") else (prev, ("in", 0))
        stmts.append(Stmt(f"t{i}", op, args, (), "float32"))
        prev = ("v", f"t{i}")
    return KernelSpec(("float32",), (("float32", "full"),),
                      (Phase("map", tuple(stmts), stores=((0, prev),)),), "elementwise")


def test_weights():
    assert kcpu.cost_weight(_ew(["add", "mul"])) == 1
    assert kcpu.cost_weight(_ew(["exp", "add"])) == 3
    assert kcpu.cost_weight(_ew(["exp", "div", "tanh"])) == 7
    assert kcpu.cost_weight(_ew(["exp"] * 10)) == 8


def test_costly_kernel_splits_below_the_cheap_threshold(monkeypatch):
    """Same size: the cheap kernel runs on one thread, the exp/tanh one on two; both give
    NumPy's values."""
    monkeypatch.setattr(kcpu, "_nthreads", lambda: 2)
    calls = []
    real = kcpu.CompiledKernel._run_parallel

    def spy(self, *a, **k):
        calls.append(self.spec)
        return real(self, *a, **k)
    monkeypatch.setattr(kcpu.CompiledKernel, "_run_parallel", spy)
    n = kcpu.PARALLEL_THRESHOLD // 4
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32) * 0.1
    cheap, costly = _ew(["add", "mul"]), _ew(["exp", "tanh"])
    out = np.empty_like(x)
    kcpu.compile_kernel(cheap)([x], [out])
    np.testing.assert_allclose(out, (x + x) * x, rtol=1e-6)
    assert calls == []
    kcpu.compile_kernel(costly)([x], [out])
    np.testing.assert_allclose(out, np.tanh(np.exp(x)), rtol=1e-5)
    assert calls == [costly]
