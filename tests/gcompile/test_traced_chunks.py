"""In-place composites traced over big tensors (``_methods.traced_in_chunks``): recorded
on the whole tensors, computed in chunks. The traced call's numbers are the op-by-op
ones bit for bit, the plan then trains as eager does, and the trace makes no
parameter-sized temporary."""
from __future__ import annotations

import numpy as np
import pytest

import gcompile as torch
from gcompile import _methods, nn
from gcompile.bench_models import train_step

WIDTH = 640  # 409600 weights: above four chunks


def _run(make_opt, compiled, steps=4):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.Tanh(), nn.Linear(WIDTH, 4))
    opt = make_opt(model.parameters())
    x, y = torch.randn(8, WIDTH), torch.randn(8, 4)
    step = train_step(model, opt, nn.MSELoss())
    fn = torch.compile(step) if compiled else step
    for _ in range(steps):
        fn(x, y)
    return fn, [p.detach().numpy().copy() for p in model.parameters()]


OPTIMIZERS = {
    "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
    "adamw": lambda ps: torch.optim.AdamW(ps, lr=1e-2, weight_decay=0.1),
    "adam_amsgrad": lambda ps: torch.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "sgd_momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1),
    "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-3),
}


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_compiled_training_with_chunked_composites_matches_eager(name, monkeypatch):
    ran = []
    real = _methods.traced_in_chunks

    def spy(*a):
        r = real(*a)
        ran.append(r)
        return r
    monkeypatch.setattr(_methods, "traced_in_chunks", spy)
    import gcompile.optim.adam as adam_mod
    monkeypatch.setattr(adam_mod, "traced_in_chunks", spy)
    fn, compiled = _run(OPTIMIZERS[name], True)
    assert fn.entries and any(ran), "nothing was traced in chunks"
    _, eager = _run(OPTIMIZERS[name], False)
    for a, b in zip(compiled, eager):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)


def test_chunks_give_the_whole_tensor_ops_bits(monkeypatch):
    """addcmul_, add_ with alpha, lerp_ and addcdiv_ computed in chunks under a trace
    equal the same ops on the whole tensors."""
    ran = []
    real = _methods.traced_in_chunks
    monkeypatch.setattr(_methods, "traced_in_chunks", lambda *a: ran.append(real(*a)) or ran[-1])
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(300_000).astype(np.float32) for _ in range(3)]

    def ops(a, b, c):
        a.addcmul_(b, c, value=0.3)
        a.add_(b, alpha=-0.7)
        a.lerp_(c, 0.25)
        a.addcdiv_(b, c.abs() + 1, value=2.0)
        return a

    want = ops(*(torch.tensor(x.copy()) for x in arrays))
    ts = [torch.tensor(x.copy()) for x in arrays]
    cf = torch.compile(lambda a, b, c: ops(a, b, c))
    got = cf(*ts)  # the traced call: values computed in chunks
    np.testing.assert_array_equal(got.numpy(), want.numpy())
    assert ran == [False] * 4 + [True] * 4 and cf.entries  # eager, then the trace
