"""PyTorch's ``optim_db`` against gcompile.optim: every configuration runs several steps
with fixed gradients (a closure for LBFGS) beside torch's optimizer, then a
state_dict round trip, and the same under StepLR and OneCycleLR.

Expected failures live in ``unsupported.py`` (strict xfails)."""
from __future__ import annotations

import pathlib
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
common_optimizers = pytest.importorskip("torch.testing._internal.common_optimizers")

import gcompile  # noqa: E402
import gcompile.optim as goptim  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import unsupported  # noqa: E402
from _convert import convert, to_numpy  # noqa: E402

pytestmark = pytest.mark.torch

SHAPES = ((4, 3), (3,))   # Muon takes 2-D parameters only: it gets the first
STEPS = 4
CHECKS = ("steps", "state_dict", "StepLR", "OneCycleLR")


def _cases() -> list:
    cases = []
    for info in common_optimizers.optim_db:
        name = info.optim_cls.__name__
        for cfg in info.optim_inputs_func(device="cpu", dtype=torch.float64):
            for check in CHECKS:
                cases.append(pytest.param(info, cfg, check, id=f"{name}-{cfg.desc}-{check}"))
    return cases


class _Pair:
    """The same parameters, gradients and optimizer in torch and gcompile."""

    def __init__(self, info, cfg) -> None:
        self.name = info.optim_cls.__name__
        shapes = SHAPES[:1] if self.name == "Muon" else SHAPES
        rng = np.random.default_rng(0)
        self.init = [rng.standard_normal(s) for s in shapes]
        self.grads = [[rng.standard_normal(s) for s in shapes] for _ in range(2 * STEPS)]
        self.targets = [rng.standard_normal(s) for s in shapes]
        self.sparse = info.only_supports_sparse_grads
        self.closure = info.step_requires_closure
        # a scheduler writes a Tensor lr in place: each run gets its own copy
        self.kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v
                       for k, v in cfg.kwargs.items()}
        self.tp = [torch.tensor(a, requires_grad=True) for a in self.init]
        self.gp = [gcompile.tensor(a, requires_grad=True) for a in self.init]
        self.topt = info.optim_cls(self.tp, **self.kwargs)
        self.gopt = getattr(goptim, self.name)(self.gp, **convert(self.kwargs))

    def _loss(self, params, lib):
        """A quadratic with a fixed minimum (LBFGS needs values, not only gradients)."""
        total = 0
        for p, t in zip(params, self.targets):
            d = p - lib.tensor(t)
            total = total + (d * d).sum() + (d * d * d).sum() * 0.1
        return total

    def step(self, k: int) -> None:
        for lib, params, opt in ((torch, self.tp, self.topt), (gcompile, self.gp, self.gopt)):
            if self.closure:
                def closure(lib=lib, params=params, opt=opt):
                    opt.zero_grad()
                    loss = self._loss(params, lib)
                    loss.backward()
                    return loss
                opt.step(closure)
                continue
            for p, g in zip(params, self.grads[k]):
                t = lib.tensor(g)
                if self.sparse and lib is torch:  # gcompile: zeros stand for absent entries
                    t = t.to_sparse()
                p.grad = t
            opt.step()

    def compare(self, what: str) -> None:
        # torch's Muon orthogonalises in bfloat16 (gcompile: float32): bfloat16's precision
        tol = 1e-9
        for i, (t, g) in enumerate(zip(self.tp, self.gp)):
            np.testing.assert_allclose(to_numpy(g), to_numpy(t), rtol=1e-6, atol=tol,
                                       err_msg=f"{what}: parameter {i}")


def _run(info, cfg, check: str) -> None:
    pair = _Pair(info, cfg)
    if check == "steps":
        for k in range(STEPS):
            pair.step(k)
            pair.compare(f"after step {k + 1}")
        return
    if check == "state_dict":
        for k in range(2):
            pair.step(k)
        sd = pair.gopt.state_dict()
        fresh = getattr(goptim, pair.name)(pair.gp, **convert(pair.kwargs))
        fresh.load_state_dict(sd)
        pair.gopt = fresh
        for k in range(2, STEPS):
            pair.step(k)
            pair.compare(f"after reload, step {k + 1}")
        return
    tsched, gsched = [], []
    for lib, opt, out in ((torch.optim, pair.topt, tsched), (goptim, pair.gopt, gsched)):
        if check == "StepLR":
            out.append(lib.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5))
        else:
            cycle = "momentum" in opt.defaults or "betas" in opt.defaults
            out.append(lib.lr_scheduler.OneCycleLR(opt, max_lr=0.01, total_steps=2 * STEPS,
                                                   cycle_momentum=cycle))
    for k in range(2 * STEPS):
        pair.step(k)
        tsched[0].step()
        gsched[0].step()
        pair.compare(f"{check}, step {k + 1}")


@pytest.mark.parametrize("info, cfg, check", _cases())
def test_optim_db(info, cfg, check, request) -> None:
    name = info.optim_cls.__name__
    why = unsupported.reason(unsupported.OPTIMIZERS, name, cfg.desc, check)
    if why is not None:
        request.applymarker(pytest.mark.xfail(reason=why, strict=True))
    assert hasattr(goptim, name), f"gcompile.optim has no {name}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _run(info, cfg, check)
