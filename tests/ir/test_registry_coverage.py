"""Every registered op, driven by the registry (no opt-in lists).

For each op in ``ir.registry.REGISTRY`` the case table (``tests/op_cases.py``) gives
sample calls, and this module runs:

1. eager (``gcompile._tensor.apply_op``) against the table's independent NumPy
   reference, plus the op's shape/dtype rule against what eager produced;
2. ``gcompile.compile`` of a function calling the op against eager, on contiguous,
   transposed, sliced and broadcast inputs: one plan, no graph break, the op in the
   traced graph, a verified graph that round-trips through JSON, and the reference
   interpreter agreeing;
3. for differentiable ops (``OpDef.grad is not None``) a float64 finite-difference
   gradcheck through ``gcompile.autograd``;
4. the compiled backward (autodiff pass, partition, plans) against the eager tape;
5. a gradgradcheck (second derivatives through the gradient rules).

``test_cases_cover_exactly_the_registry`` fails, naming the op, when an op is
registered without cases; an op that cannot take one of the checks must be in
``EXEMPT`` with the reason, and an op with a float result but no gradient rule in
``NONDIFF``.
"""
from __future__ import annotations

import importlib.util
import pathlib
import re
import sys
import warnings

import numpy as np
import pytest

import gcompile as torch
from gcompile._tensor import apply_op
from gcompile.autograd import gradcheck, gradgradcheck
from gcompile.compiler.api import GraphBreakWarning
from ir import dtypes as dt
from ir import serialize
from ir.interpreter import interpret
from ir.registry import REGISTRY
from ir.verify import verify


def _load_cases():
    name = "_gcompile_op_cases"
    if name not in sys.modules:
        path = pathlib.Path(__file__).resolve().parents[1] / "op_cases.py"
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


OC = _load_cases()
CASES = OC.CASES
CHECKS = ("eager", "compiled", "grad", "compiled_grad", "gradgrad")

# Gradient rules that deliberately raise NotImplementedError (no second derivatives):
# backward op -> the forward op whose double backward it blocks. Their checks are exempt
# below, and test_no_double_backward_says_so checks that each one raises.
NO_DOUBLE_BACKWARD = {
    "cumprod_backward": "cumprod",
    "prod_others": "prod",
    "lstm_scan_backward": "lstm_scan",
    "gru_scan_backward": "gru_scan",
    "rnn_scan_backward": "rnn_scan",
}

# (op, check) -> why that check cannot apply to the op. Every entry is checked to name a
# registered op and to be needed.
EXEMPT: dict[tuple[str, str], str] = {}
for _bw, _fw in NO_DOUBLE_BACKWARD.items():
    EXEMPT[(_bw, "grad")] = EXEMPT[(_bw, "compiled_grad")] = EXEMPT[(_bw, "gradgrad")] = (
        f"its gradient rule raises NotImplementedError: second derivatives of {_fw} are not "
        "supported (test_no_double_backward_says_so)")
    EXEMPT[(_fw, "gradgrad")] = (
        f"second derivatives of {_fw} are not supported: gradgradcheck raises "
        "NotImplementedError (test_no_double_backward_says_so)")

for _check in ("grad", "compiled_grad", "gradgrad"):
    EXEMPT[("nextafter", _check)] = ("its gradient rule raises, as torch's ('the derivative "
                                     "for 'nextafter' is not implemented')")

# ops with a float result and no gradient rule -> why none is right (any other such op fails
# test_float_results_have_gradient_rules: autograd would silently treat it as a constant)
NONDIFF = {
    "detach": "cuts the gradient by definition (x.detach() in a traced function)",
    "zeros_like": "the result does not depend on the input's values (no grad_fn in torch)",
    "ones_like": "the result does not depend on the input's values (no grad_fn in torch)",
    "full_like": "the result does not depend on the input's values (no grad_fn in torch)",
}

# (op, check, case label) -> a known bug outside the files this suite may fix; the case runs as a
# strict xfail, so it starts failing (and must be removed from here) once the bug is fixed.
XFAIL: dict[tuple[str, str, str], str] = {}


def _params(check, pred=lambda op, case, k: True, extra=((),)):
    out = []
    for name in sorted(CASES):
        op = REGISTRY.get(name)
        if op is None:
            continue  # test_cases_cover_exactly_the_registry names it
        for k, case in enumerate(CASES[name]):
            label = case.label or str(k)
            for e in extra:
                if not pred(op, case, k, *e):
                    continue
                reason = XFAIL.get((name, check, label))
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                out.append(pytest.param(name, k, *e, marks=marks,
                                        id="-".join((name, label) + tuple(e))))
    return out


# ---- the table covers exactly the registry -------------------------------------------------
def test_cases_cover_exactly_the_registry():
    missing = sorted(set(REGISTRY) - set(CASES))
    unknown = sorted(set(CASES) - set(REGISTRY))
    assert not missing, (f"registered ops with no cases in tests/op_cases.py: {missing} "
                         "(add sample calls and a NumPy reference for each)")
    assert not unknown, f"tests/op_cases.py has cases for ops that are not registered: {unknown}"
    empty = sorted(n for n, cs in CASES.items() if not cs)
    assert not empty, f"ops with an empty case list: {empty}"


def _takes_grad(op, case, k):
    """A gradient case: the op is differentiable, the case is marked for it, and it has a
    float input to differentiate (int and bool cases are forward-only)."""
    if not (op.differentiable and case.grad):
        return False
    return bool(_diff_args(op, case, _float64(OC.make_args(op.name, k, case))))


def _grad_cases(name):
    return [c for k, c in enumerate(CASES.get(name, [])) if _takes_grad(REGISTRY[name], c, k)]


def test_exemptions_name_real_ops_and_are_needed():
    for (name, check), reason in EXEMPT.items():
        assert name in REGISTRY, f"EXEMPT names {name!r}, which is not a registered op"
        assert check in CHECKS, f"EXEMPT[{name!r}]: unknown check {check!r}"
        assert isinstance(reason, str) and len(reason) > 20, f"EXEMPT[{name!r}] needs a reason"
        if "grad" in check:
            assert REGISTRY[name].differentiable, \
                f"EXEMPT: {name} has no gradient rule, so needs no gradient exemption"
        if check in ("grad", "compiled_grad"):
            assert not _grad_cases(name), f"EXEMPT: {name} has gradient cases now; drop it"
    for name, reason in NONDIFF.items():
        assert name in REGISTRY and not REGISTRY[name].differentiable and reason, name
    for (name, check, label), reason in XFAIL.items():
        assert name in REGISTRY and check in CHECKS and reason
        assert label in [c.label or str(k) for k, c in enumerate(CASES[name])], (name, label)


def test_every_op_takes_every_check():
    """Each op has eager and compiled cases, and each differentiable op gradient cases, or
    an exemption saying why not."""
    lacking = {}
    for name, op in sorted(REGISTRY.items()):
        need = ["eager", "compiled"]
        if op.differentiable:
            need += ["grad", "compiled_grad", "gradgrad"]
        for check in need:
            covered = bool(_grad_cases(name) if "grad" in check else CASES.get(name))
            if not covered and (name, check) not in EXEMPT:
                lacking.setdefault(name, []).append(check)
    assert not lacking, f"ops missing a check (add a case or an EXEMPT reason): {lacking}"


def test_float_results_have_gradient_rules():
    """An op that makes floats from floats needs a gradient rule (one that raises is fine):
    without one, autograd silently treats its result as a constant."""
    lacking = []
    for name, op in sorted(REGISTRY.items()):
        if op.differentiable or name in NONDIFF:
            continue
        for k, case in enumerate(CASES.get(name, [])):
            args = OC.make_args(name, k, case)
            out = case.out_dtype or OC.expected_dtype(args)
            if out.startswith("float") and any(
                    isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in args):
                lacking.append(name)
                break
    assert not lacking, (f"ops with float results and no gradient rule: {lacking} (give them "
                         "one, or a reason in NONDIFF)")


@pytest.mark.parametrize("backward", sorted(NO_DOUBLE_BACKWARD))
def test_no_double_backward_says_so(backward):
    """The backward op's gradient raises, and so does gradgradcheck of its forward op."""
    forward = NO_DOUBLE_BACKWARD[backward]
    op = REGISTRY[backward]
    case = CASES[backward][0]
    args = _float64(OC.make_args(backward, 0, case))
    inputs = [_tensor(a) for a in args]
    for i in _diff_args(op, case, args):
        inputs[i].requires_grad_(True)
    out = apply_op(backward, tuple(inputs), case.attrs)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        out.sum().backward()
    fop = REGISTRY[forward]
    k, fcase = next((k, c) for k, c in enumerate(CASES[forward]) if _takes_grad(fop, c, k))
    fargs = _float64(OC.make_args(forward, k, fcase))
    finputs = [_tensor(a) for a in fargs]
    for i in _diff_args(fop, fcase, fargs):
        finputs[i].requires_grad_(True)
    with pytest.raises(NotImplementedError, match="second derivatives"):
        gradgradcheck(_grad_fn(forward, fcase), finputs)


# ---- helpers ---------------------------------------------------------------------------------
def _float64(args):
    out = OC.Sample([a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
                     else a for a in args])
    out.ctx = getattr(args, "ctx", {})
    return out


def _diff_args(op, case, args):
    if case.grad_args is not None:
        return list(case.grad_args)
    return [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"
            and i not in op.nondiff_inputs]


def _tensor(a):
    return torch.tensor(a) if isinstance(a, np.ndarray) else a


def _reference(case, args):
    ctx = getattr(args, "ctx", None)
    kw = dict(case.attrs, ctx=ctx) if ctx else case.attrs
    with np.errstate(all="ignore"):
        return np.asarray(case.ref(*args, **kw))


def _tol(dtype_name, case=None):
    if case is not None and case.tol is not None:
        return dict(rtol=case.tol[0], atol=case.tol[1])
    if dtype_name == "float64":
        return dict(rtol=1e-10, atol=1e-12)
    return dict(rtol=1e-5, atol=1e-6)


def _assert_matches(got: np.ndarray, want: np.ndarray, tol: dict, what: str):
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    if got.dtype.kind == "f":
        np.testing.assert_allclose(got.astype(np.float64), np.asarray(want, np.float64),
                                   equal_nan=True, err_msg=what, **tol)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


# ---- 1. eager against the reference ---------------------------------------------------------
def _check_eager(name, case, args):
    op = REGISTRY[name]
    inputs = [_tensor(a) for a in args]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns about none of these calls
        out = apply_op(name, tuple(inputs), case.attrs)
    want = _reference(case, args)
    expect = case.out_dtype or OC.expected_dtype(args)
    got = out.numpy()
    assert out.dtype.name == expect, f"{name}: result dtype {out.dtype.name}, expected {expect}"
    assert got.dtype == np.dtype(expect), f"{name}: data dtype {got.dtype} behind {expect}"
    _assert_matches(got, want, _tol(expect, case), f"{name}: eager vs reference")
    # the op left its inputs alone
    for a, t in zip(args, inputs):
        if isinstance(a, np.ndarray):
            np.testing.assert_array_equal(t.numpy(), a, err_msg=f"{name} wrote into an input")
    # the shape/dtype rule agrees with eager
    specs = [(tuple(a.shape), dt.from_numpy(a.dtype)) if isinstance(a, np.ndarray) else a
             for a in args]
    shape, d = op.infer(specs, case.attrs)
    assert (tuple(shape), d.name) == (got.shape, expect), \
        f"{name}: infer gives {tuple(shape)} {d.name}, eager gives {got.shape} {expect}"


@pytest.mark.parametrize("name,k", _params("eager"))
def test_eager_matches_reference(name, k):
    case = CASES[name][k]
    args = OC.make_args(name, k, case)
    _check_eager(name, case, args)
    if case.out_dtype is None and any(isinstance(a, np.ndarray) and a.dtype == np.float32
                                      for a in args):
        _check_eager(name, case, _float64(args))


# ---- 2. compiled against eager --------------------------------------------------------------
LAYOUTS = ("contiguous", "transposed", "sliced", "broadcast")


def _laid_out(a, layout):
    """A Tensor for array ``a`` in ``layout`` (same values, except that ``broadcast`` repeats
    the first row of float inputs, through a stride-0 expand)."""
    if not isinstance(a, np.ndarray):
        return a
    if layout == "transposed" and a.ndim >= 2:
        return torch.tensor(np.ascontiguousarray(np.swapaxes(a, -1, -2))).transpose(-1, -2)
    if layout == "sliced" and a.ndim >= 1:
        base = np.zeros(a.shape[:-1] + (2 * a.shape[-1] + 1,), a.dtype)
        base[..., 1::2] = a
        return torch.tensor(base)[..., 1::2]
    if layout == "broadcast" and a.ndim >= 2 and a.dtype.kind == "f" and a.shape[0] > 1:
        return torch.tensor(a[:1]).expand(*a.shape)
    return torch.tensor(a)


@pytest.fixture
def reference_kernels():
    """Plans evaluate their KernelSpecs with NumPy: the lowering of every op without a
    Numba compile each (tests/kernels covers the generated kernels)."""
    from runtime import lower
    from runtime.reference import ReferenceKernel
    old = lower._KERNEL_FACTORY
    lower.set_kernel_factory(ReferenceKernel)
    yield
    lower.set_kernel_factory(old)


def _compiled_check(name, case, inputs):
    tensor_pos = [i for i, a in enumerate(inputs) if isinstance(a, torch.Tensor)]

    def call(*ts):
        args = list(inputs)
        for i, t in zip(tensor_pos, ts):
            args[i] = t
        return apply_op(name, tuple(args), case.attrs)

    ts = [inputs[i] for i in tensor_pos]
    with torch.no_grad():
        want = call(*ts)
        cf = torch.compile(call)
        with warnings.catch_warnings():
            warnings.simplefilter("error", GraphBreakWarning)
            cf(*ts)        # traces
            got = cf(*ts)  # runs the plan
    assert len(cf.entries) == 1, f"{name}: no compiled plan ({len(cf.entries)} entries)"
    entry = cf.entries[0]
    assert re.search(rf"= {name}\b", entry.traced_text), \
        f"{name} is not in the traced graph:\n{entry.traced_text}"
    verify(entry.graph)
    assert str(serialize.loads(serialize.dumps(entry.graph))) == str(entry.graph)
    arrays = [ts[i]._data if kind == "arg" else entry.live[i][0]._data
              for kind, i in entry.input_map]
    (oracle,) = interpret(entry.graph, arrays, check=True)
    tol = _tol(want.dtype.name)
    assert got.dtype == want.dtype, f"{name}: compiled dtype {got.dtype}, eager {want.dtype}"
    _assert_matches(got.numpy(), want.numpy(), tol, f"{name}: compiled vs eager")
    _assert_matches(np.asarray(oracle), want.numpy(), tol, f"{name}: interpreter vs eager")


def _layout_applies(op, case, k, layout):
    """contiguous always; another layout when it gives some input other strides."""
    if layout == "contiguous":
        return True
    args = OC.make_args(op.name, k, case)
    return any(isinstance(t, torch.Tensor) and not t.is_contiguous()
               for t in (_laid_out(a, layout) for a in args))


@pytest.mark.parametrize("name,k,layout", _params("compiled", _layout_applies,
                                                  extra=[(lo,) for lo in LAYOUTS]))
def test_compiled_matches_eager(reference_kernels, name, k, layout):
    case = CASES[name][k]
    inputs = [_laid_out(a, layout) for a in OC.make_args(name, k, case)]
    _compiled_check(name, case, inputs)


# ---- 3. gradients by finite differences ------------------------------------------------------
@pytest.mark.parametrize("name,k", _params("grad", _takes_grad))
def test_gradcheck(name, k):
    op = REGISTRY[name]
    case = CASES[name][k]
    args = _float64(OC.make_args(name, k, case))
    diff = _diff_args(op, case, args)
    assert diff, f"{name}: this gradient case has no float input to differentiate"
    inputs = [_tensor(a) for a in args]
    for i in diff:
        inputs[i].requires_grad_(True)

    def fn(*xs):
        out = apply_op(name, xs, case.attrs)
        return case.grad_out(out) if case.grad_out else out

    assert gradcheck(fn, inputs, **case.gradcheck)


# ---- 4. the compiled backward (autodiff pass + partition) against the eager tape -------------
def _grad_fn(name, case):
    def fn(*xs):
        out = apply_op(name, xs, case.attrs)
        if case.grad_out is None:
            return out
        outs = case.grad_out(out)
        return torch.cat([o.reshape(-1) for o in outs]) if isinstance(outs, tuple) else outs
    return fn


def _run_backward(fn, inputs, diff, cot):
    for i in diff:
        inputs[i].grad = None
    out = fn(*inputs)
    out.backward(cot)
    return out.detach().numpy().copy(), [inputs[i].grad.numpy().copy()
                                         if inputs[i].grad is not None else None for i in diff]


@pytest.mark.parametrize("name,k", _params("compiled_grad", _takes_grad))
def test_compiled_backward_matches_eager(reference_kernels, name, k):
    op = REGISTRY[name]
    case = CASES[name][k]
    args = _float64(OC.make_args(name, k, case))
    diff = _diff_args(op, case, args)
    inputs = [_tensor(a) for a in args]
    for i in diff:
        inputs[i].requires_grad_(True)
    fn = _grad_fn(name, case)
    out = fn(*inputs)
    cot = torch.tensor(np.random.default_rng(OC.seed_of(name, k)).standard_normal(
        tuple(out.shape)))
    want_out, want = _run_backward(fn, inputs, diff, cot)
    cf = torch.compile(fn)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GraphBreakWarning)
        _run_backward(cf, inputs, diff, cot)  # traces
        got_out, got = _run_backward(cf, inputs, diff, cot)
    assert len(cf.entries) == 1, f"{name}: no compiled plan"
    assert type(cf.entries[0]).__name__ == "TrainingEntry"
    tol = dict(rtol=1e-9, atol=1e-12)
    _assert_matches(got_out, want_out, tol, f"{name}: compiled forward vs eager")
    for i, g, w in zip(diff, got, want):
        assert (g is None) == (w is None), f"{name}: input {i} gradient presence differs"
        if w is not None:
            _assert_matches(g, w, tol, f"{name}: compiled gradient of input {i} vs eager")


# ---- 5. second derivatives ---------------------------------------------------------------------
def _takes_gradgrad(op, case, k):
    return (op.name, "gradgrad") not in EXEMPT and _takes_grad(op, case, k)


@pytest.mark.parametrize("name,k", _params("gradgrad", _takes_gradgrad))
def test_gradgradcheck(name, k):
    op = REGISTRY[name]
    case = CASES[name][k]
    args = _float64(OC.make_args(name, k, case))
    inputs = [_tensor(a) for a in args]
    for i in _diff_args(op, case, args):
        inputs[i].requires_grad_(True)
    assert gradgradcheck(_grad_fn(name, case), inputs, **case.gradcheck)
