"""A compiled function's first call compiles only what its plan runs
(``kernels.cpu.defer_compile``): eager kernels that are not compiled yet (elementwise
activations, the fused optimizer update) are left alone while ``compile()`` traces, the
NumPy paths serve that call, and the results equal eager ones. Outside a trace, and
once cached, those kernels serve as usual."""
from __future__ import annotations

import numpy as np

import gcompile as torch
import gcompile._fused_optim as fused
import gcompile.nn.functional as F
import kernels.cpu
from gcompile import nn
from gcompile.bench_models import train_step
from ir.registry import REGISTRY


def _spy_ref(monkeypatch, op: str) -> list:
    calls: list = []
    native = REGISTRY[op].impl
    ref = native.ref
    monkeypatch.setattr(native, "ref", lambda *a, **k: calls.append(1) or ref(*a, **k))
    return calls


def test_a_trace_takes_numpy_where_an_eager_activation_kernel_would_compile(monkeypatch,
                                                                             tmp_path):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path))  # an empty kernel cache
    slope = 0.0123  # attributes of their own: a kernel this process has not built
    x = torch.randn(64, 256)
    calls = _spy_ref(monkeypatch, "leaky_relu")
    f = torch.compile(lambda x: F.leaky_relu(x, slope) * 2)
    want = 2 * np.where(x.numpy() > 0, x.numpy(), slope * x.numpy())
    np.testing.assert_allclose(f(x).numpy(), want, rtol=1e-6)
    (k, _, _), = [v for (_, attrs), v in REGISTRY["leaky_relu"].impl.kernels.items()
                  if dict(attrs).get("negative_slope") == slope]
    assert calls == [1] and not k._fns  # the trace: NumPy, the eager kernel not compiled
    f(x)
    assert calls == [1]  # the plan runs its own fused kernel
    np.testing.assert_allclose(F.leaky_relu(x, slope).numpy(), want / 2, rtol=1e-6)
    assert calls == [1] and k._fns  # outside a trace the eager kernel compiles and serves


def test_a_compiled_steps_first_call_leaves_the_fused_update_alone(monkeypatch):
    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    comp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 4))
    comp.load_state_dict(eager.state_dict())
    x, y = torch.randn(5, 8), torch.randn(5, 4)
    seen: list = []
    real = fused.defer_compile
    monkeypatch.setattr(fused, "defer_compile",
                        lambda ks: seen.append(real(ks)) or seen[-1])
    monkeypatch.setattr(kernels.cpu, "needs_compile", lambda ks: True)
    loss_fn = nn.functional.mse_loss
    step = train_step(eager, torch.optim.Adam(eager.parameters(), lr=0.01), loss_fn)
    fast = torch.compile(train_step(comp, torch.optim.Adam(comp.parameters(), lr=0.01),
                                    loss_fn))
    for i in range(3):
        seen.clear()
        want = step(x, y)
        assert seen == [False]  # eager: the fused kernel serves (it would compile)
        seen.clear()
        got = fast(x, y)
        assert seen == ([True] if i == 0 else [])  # the first call defers; plans never ask
        np.testing.assert_allclose(got.item(), want.item(), rtol=1e-5)
    for p, q in zip(eager.parameters(), comp.parameters()):
        np.testing.assert_allclose(q.detach().numpy(), p.detach().numpy(), rtol=1e-5,
                                   atol=1e-6)
