"""PyTorch's ``module_db`` against gcompile.nn: for every module class (up to three
samples each) construct the gcompile class with the same arguments, copy torch's
state, and compare forward, backward (input and parameter gradients), and the same
through ``gcompile.compile(module)``, which must have built a plan (no graph break).

Expected failures live in ``unsupported.py`` (strict xfails)."""
from __future__ import annotations

import pathlib
import sys
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
common_modules = pytest.importorskip("torch.testing._internal.common_modules")

import gcompile  # noqa: E402
import gcompile.nn as gnn  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import unsupported  # noqa: E402
from _convert import convert, flatten, to_numpy  # noqa: E402

pytestmark = pytest.mark.torch

MODES = ("construct", "forward", "backward", "forward_compiled", "backward_compiled")
SAMPLES_PER_CLASS = 3
RTOL, ATOL = 1e-6, 1e-8


def _samples(info) -> list:
    """Up to three samples spread over the db's list (first, middle, last)."""
    try:
        s = info.module_inputs_func(info, device="cpu", dtype=torch.float64,
                                    requires_grad=True, training=True)
    except Exception:  # a sample generator that needs something this torch lacks
        return []
    idx = sorted({0, len(s) // 2, len(s) - 1})[:SAMPLES_PER_CLASS] if s else []
    return [s[i] for i in idx]


def _cases() -> list:
    cases = []
    for info in common_modules.module_db:
        name = info.module_cls.__name__
        for k, sample in enumerate(_samples(info)):
            for mode in MODES:
                cases.append(pytest.param(info, k, sample, mode,
                                          id=f"{name}-{k}-{sample.desc or 'default'}-{mode}"))
    return cases


def _close(got, want, what: str) -> None:
    got, want = to_numpy(got), to_numpy(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != torch {want.shape}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


class _Run:
    """One sample: torch's results, and a factory for equivalent gcompile modules."""

    def __init__(self, info, sample) -> None:
        self.name = info.module_cls.__name__
        ci, fi = sample.constructor_input, sample.forward_input
        self.fargs, self.fkwargs = fi.args, fi.kwargs
        self.cargs, self.ckwargs = ci.args, ci.kwargs
        torch.manual_seed(0)
        tm = info.module_cls(*ci.args, **ci.kwargs).to(torch.float64)
        if any(isinstance(p, torch.nn.parameter.UninitializedParameter)
               for p in tm.parameters()):
            with torch.no_grad():  # lazy: materialise before taking the state
                tm(*self._torch_inputs()[0], **self._torch_inputs()[1])
        self.state = {k: to_numpy(v) for k, v in tm.state_dict().items()}
        args, kwargs = self._torch_inputs()
        self.out = tm(*args, **kwargs)
        self.state_after = {k: to_numpy(v) for k, v in tm.state_dict().items()}
        self.outs = flatten(self.out, [])
        diff = [o for o in self.outs if o.requires_grad]
        self.weights = [np.random.default_rng(i).standard_normal(tuple(o.shape))
                        for i, o in enumerate(self.outs)]
        self.differentiable = bool(diff)
        if diff:
            loss = sum((o * torch.from_numpy(w)).sum()
                       for o, w in zip(self.outs, self.weights) if o.requires_grad)
            loss.backward()
        self.in_grads = [None if getattr(t, "grad", None) is None else to_numpy(t.grad)
                         for t in flatten((args, kwargs), [])]
        self.param_grads = {n: to_numpy(p.grad) for n, p in tm.named_parameters()
                            if p.grad is not None}

    def _torch_inputs(self):
        def fresh(v):
            if isinstance(v, torch.Tensor):
                return v.detach().clone().requires_grad_(v.requires_grad)
            if isinstance(v, (list, tuple)):
                return type(v)(fresh(a) for a in v)
            if isinstance(v, dict):
                return {k: fresh(a) for k, a in v.items()}
            return v
        return fresh(self.fargs), fresh(self.fkwargs)

    def inputs(self):
        """The sample's forward inputs as new gcompile tensors."""
        return convert(self.fargs), convert(self.fkwargs)

    def make(self):
        """A gcompile module built with the sample's arguments and torch's state."""
        gm = getattr(gnn, self.name)(*convert(self.cargs), **convert(self.ckwargs))
        gm.to(gcompile.float64)
        gm.load_state_dict({k: gcompile.tensor(v) for k, v in self.state.items()})
        return gm

    def check_forward(self, out, gm=None) -> None:
        outs = flatten(out, [])
        assert len(outs) == len(self.outs), f"{len(outs)} outputs, torch has {len(self.outs)}"
        for i, (g, t) in enumerate(zip(outs, self.outs)):
            _close(g, t, f"output {i}")
        if gm is not None:
            got = gm.state_dict()
            for k, v in self.state_after.items():
                _close(got[k], v, f"state {k} after forward")

    def check_backward(self, out, args, gm) -> None:
        outs = flatten(out, [])
        loss = None
        for o, w in zip(outs, self.weights):
            if o.requires_grad:
                term = (o * gcompile.tensor(w)).sum()
                loss = term if loss is None else loss + term
        assert loss is not None, "no output requires grad (torch's does)"
        loss.backward()
        for i, (t, want) in enumerate(zip(flatten(args, []), self.in_grads)):
            if want is not None:
                assert t.grad is not None, f"input {i} has no grad"
                _close(t.grad, want, f"grad of input {i}")
        got = {n: p.grad for n, p in gm.named_parameters()}
        for n, want in self.param_grads.items():
            assert got.get(n) is not None, f"parameter {n} has no grad"
            _close(got[n], want, f"grad of {n}")


_RUNS: dict = {}


def _run(info, k: int, sample) -> _Run:
    key = (info.name, k)
    if key not in _RUNS:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _RUNS[key] = _Run(info, sample)
    return _RUNS[key]


def _compiled_call(cm, args, kwargs):
    """Call until a plan exists, then once more through it; the plan's result."""
    compiled = cm._compiled
    for _ in range(3):
        out = cm(*args, **kwargs)
        assert not compiled.graph_breaks, f"graph break: {compiled.graph_breaks[0]}"
        if compiled.entries:
            break
    assert compiled.entries, "no plan was built (every call ran eagerly)"
    n = len(compiled.entries)
    out = cm(*args, **kwargs)
    assert len(compiled.entries) == n, "the plan was not reused (retraced)"
    return out, compiled.entries[-1]


# CTCLoss's recursion over time unrolls into a backward graph of ~100 distinct fused
# kernels: about two minutes of cold kernel compiles per sample in CI. Its compiled
# backward is checked with the NumPy reference kernels (tracing, autodiff and the plan
# are what this suite checks; tests/kernels checks generated kernels against them).
REFERENCE_KERNELS = {"CTCLoss"}


def _options(name: str) -> dict | None:
    return {"kernels": "reference"} if name in REFERENCE_KERNELS else None


@pytest.mark.parametrize("info, k, sample, mode", _cases())
def test_module_db(info, k, sample, mode, request) -> None:
    name = info.module_cls.__name__
    features = tuple(k for k, v in sample.constructor_input.kwargs.items()
                     if isinstance(v, (bool, int)) and v)
    why = unsupported.reason(unsupported.MODULES, name, sample.desc, mode, features)
    if why is not None:
        request.applymarker(pytest.mark.xfail(reason=why, strict=True))
    assert hasattr(gnn, name), f"gcompile.nn has no {name}"
    run = _run(info, k, sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = run.make()
        args, kwargs = run.inputs()
        if mode == "construct":
            return
        if mode == "forward":
            run.check_forward(gm(*args, **kwargs), gm)
        elif mode == "backward":
            if not run.differentiable:
                pytest.skip("no output requires grad")
            run.check_backward(gm(*args, **kwargs), (args, kwargs), gm)
        elif mode == "forward_compiled":
            with gcompile.no_grad():
                out, _ = _compiled_call(gcompile.compile(gm), args, kwargs)
            run.check_forward(out)
        else:
            if not run.differentiable:
                pytest.skip("no output requires grad")
            out, entry = _compiled_call(gcompile.compile(gm, options=_options(name)), args,
                                        kwargs)
            assert type(entry).__name__ == "TrainingEntry", type(entry).__name__
            run.check_backward(out, (args, kwargs), gm)
