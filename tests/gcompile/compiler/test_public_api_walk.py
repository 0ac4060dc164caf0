"""Every public callable, compiled, agrees with eager on fresh values.

The walk covers ``gcompile.*`` functions, ``gcompile.nn.functional`` and ``Tensor``
methods. Each is called with the first argument pattern that works eagerly, then
compiled (reference kernels: this checks tracing and dispatch, not code generation)
and called twice with different values of the same shapes. A callable that
computes outside the op registry leaves a value the trace did not see; the plan
would bake it in as a constant and the second call would return the first call's
numbers. So each must either record its work in the graph (the plan's results
follow the inputs) or report a named graph break (and run eagerly). Random ops are
seeded identically before the eager and the compiled call: the plan draws from the
generator as eager code does.
"""
from __future__ import annotations

import inspect
import warnings

import numpy as np
import pytest

import gcompile as g
import gcompile.nn.functional as F

def _idx(y, n, shape=None):
    """int64 indices in [0, n) computed from ``y`` (so they too change per call)."""
    i = (y * 7).long() % n
    return i if shape is None else i.reshape(-1)[:int(np.prod(shape))].reshape(shape)


def _img(x):
    return x.reshape(1, 1, 3, 4)


# argument patterns over two float tensors of shape (3, 4) with values in [0.5, 2);
# every derived argument is computed from them inside the compiled function
PATTERNS = (
    lambda x, y: (x,), lambda x, y: (x, y), lambda x, y: (x, 1), lambda x, y: (x, 0),
    lambda x, y: (x, 2.0), lambda x, y: (x, y, y), lambda x, y: (x, (4, 3)),
    lambda x, y: (x, y.T),
    lambda x, y: (x, 0, 1), lambda x, y: (x, 0, 0, 2), lambda x, y: (x, (1, 0)),
    lambda x, y: (x, y > 1, 0.0), lambda x, y: (x, y > 1),
    lambda x, y: (x, 1, _idx(y, 4)), lambda x, y: (x, 1, _idx(y, 4), y),
    lambda x, y: (x, 0, _idx(y, 3, (3,))), lambda x, y: (x, 0, _idx(y, 3, (3,)), y),
    lambda x, y: (x, 0, _idx(y, 3, (3,)), 1.5),
    lambda x, y: (x, (_idx(y, 3, (3,)),), y[0]),
    lambda x, y: (x, _idx(y, 12, (5,))),
    lambda x, y: (_img(x), 2), lambda x, y: (_img(x),),
    lambda x, y: (_img(x), y[:2, :2].reshape(1, 1, 2, 2)),
    lambda x, y: (x.reshape(1, 3, 4), y.reshape(1, 4, 3)),
    lambda x, y: (x, y.reshape(1, 3, 4), g.ones(1, 4, 4) * y[0, 0]),
    lambda x, y: (x, y[0]), lambda x, y: (x[0], y[0]), lambda x, y: (x, y, y[0]),
    lambda x, y: (x[:, :3] + 3 * g.eye(3),), lambda x, y: (x[:, :3] + 3 * g.eye(3), y[:, :3]),
    lambda x, y: (_idx(y, 3), x), lambda x, y: (x.log_softmax(1), _idx(y, 4, (3,))),
    lambda x, y: (x, (4,)), lambda x, y: (x, 4), lambda x, y: (x, 1, (2, 2)),
    lambda x, y: (x.reshape(1, 12), 2), lambda x, y: (x, 2, 0, 1.0),
    lambda x, y: (x, 0, 1, (2, 2)), lambda x, y: (x, 4.0),
)
# not computations on tensors: state, I/O, the compiler itself
NOT_OPS = ("save", "load", "compile", "set_", "manual_seed", "seed", "export", "profile",
           "explain", "from_file", "onnx", "use_deterministic", "register", "get_rng",
           "rng_state", "set_printoptions")


def _public():
    out = []
    for prefix, ns in (("gcompile", g), ("F", F)):
        for name in dir(ns):
            obj = getattr(ns, name)
            if (name.startswith("_") or inspect.isclass(obj) or inspect.ismodule(obj)
                    or not callable(obj)):
                continue
            out.append((f"{prefix}.{name}", obj))
    for name in dir(g.Tensor):
        obj = getattr(g.Tensor, name)
        if not name.startswith("_") and callable(obj):
            out.append((f"Tensor.{name}", obj))
    return [(n, f) for n, f in out if not any(s in n for s in NOT_OPS)]


PUBLIC = _public()


def _leaves(obj, out):
    if isinstance(obj, g.Tensor):
        out.append(obj.detach().numpy().copy())
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _leaves(v, out)
    elif obj is None or isinstance(obj, (bool, int, float, complex, np.ndarray, np.generic)):
        out.append(np.asarray(obj))
    else:
        out.append(type(obj).__name__)
    return out


def _assert_same(eager, compiled, what):
    assert len(eager) == len(compiled), what
    for e, c in zip(eager, compiled):
        if isinstance(e, str) or isinstance(c, str):
            assert e == c, what
            continue
        assert e.shape == c.shape, what
        np.testing.assert_allclose(c, e, rtol=1e-4, atol=1e-5, equal_nan=True, err_msg=what)


def _values(seed):
    r = np.random.default_rng(seed)
    return [r.uniform(0.5, 2.0, (3, 4)).astype(np.float32) for _ in range(2)]


def _run(fn, pattern, a, b):
    g.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*pattern(g.tensor(a.copy()), g.tensor(b.copy())))


def test_the_walk_covers_most_of_the_public_api():
    assert len(PUBLIC) > 450


@pytest.mark.parametrize("name,fn", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_compiled_follows_its_inputs_or_breaks_by_name(name, fn):
    first, second = _values(0), _values(1)
    for pattern in PATTERNS:
        try:
            eager1 = _leaves(_run(fn, pattern, *first), [])
        except Exception:  # noqa: BLE001 - this pattern is not a valid call
            continue
        eager2 = _leaves(_run(fn, pattern, *second), [])
        cf = g.compile(lambda x, y, f=fn, p=pattern: f(*p(x, y)),
                       options={"kernels": "reference"})
        got1 = _leaves(_run(cf, lambda x, y: (x, y), *first), [])
        got2 = _leaves(_run(cf, lambda x, y: (x, y), *second), [])
        what = f"{name}: compiled vs eager (graph breaks: {cf.graph_breaks})"
        _assert_same(eager1, got1, what)
        _assert_same(eager2, got2, what)
        assert cf.entries or cf.graph_breaks, f"{name}: neither a plan nor a named graph break"
        return
    pytest.skip(f"{name}: no argument pattern of this walk is a valid call")
