"""Finite-difference checks of analytical gradients (torch.autograd.gradcheck)."""
from __future__ import annotations

import warnings

import numpy as np


class GradcheckError(RuntimeError):
    pass


def _outputs(fn, inputs):
    out = fn(*inputs)
    return out if isinstance(out, (tuple, list)) else (out,)


def _numerical(fn, inputs, i, out_idx, eps):
    from .grad_mode import no_grad
    x = inputs[i]
    data = x._data  # perturbed in place, element by element (any strides)
    cols = []
    with no_grad():
        for k in range(data.size):
            pos = np.unravel_index(k, data.shape)
            orig = data[pos]
            data[pos] = orig + eps
            plus = _outputs(fn, inputs)[out_idx]._data.astype(np.float64).reshape(-1).copy()
            data[pos] = orig - eps
            minus = _outputs(fn, inputs)[out_idx]._data.astype(np.float64).reshape(-1).copy()
            data[pos] = orig
            cols.append((plus - minus) / (2 * eps))
    return np.stack(cols, axis=0) if cols else np.zeros((0, 0))


def _analytical(fn, inputs, diff_idx, out_idx, create_graph=False):
    from .. import autograd
    from .._creation import zeros_like
    out = _outputs(fn, inputs)[out_idx]
    n = out.numel()
    rows = {i: np.zeros((inputs[i].numel(), n)) for i in diff_idx}
    if not out.requires_grad:
        return rows
    for j in range(n):
        g = zeros_like(out)
        g._data.reshape(-1)[j] = 1.0
        grads = autograd.grad(out, [inputs[i] for i in diff_idx], g, retain_graph=True,
                              allow_unused=True)
        for i, gi in zip(diff_idx, grads):
            if gi is not None:
                rows[i][:, j] = gi._data.astype(np.float64).reshape(-1)
    return rows


def gradcheck(func, inputs, *, eps: float = 1e-6, atol: float = 1e-5, rtol: float = 1e-3,
              raise_exception: bool = True, nondet_tol: float = 0.0, check_undefined_grad=True,
              fast_mode: bool = False, **_) -> bool:
    """Compare the autograd Jacobian with central finite differences."""
    from .._tensor_base import Tensor
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff_idx = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not diff_idx:
        raise ValueError("gradcheck expects at least one input tensor to require gradient")
    for i in diff_idx:
        if inputs[i].dtype.name != "float64":
            warnings.warn(f"Input #{i} requires gradient and is not a double precision floating "
                          "point. This check will likely fail if all the inputs are not of double "
                          "precision floating point.", stacklevel=2)
    n_out = len(_outputs(func, inputs))
    for o in range(n_out):
        ana = _analytical(func, inputs, diff_idx, o)
        for i in diff_idx:
            num = _numerical(func, inputs, i, o, eps)
            a = ana[i]
            if num.size == 0 and a.size == 0:
                continue
            if not np.allclose(a, num, rtol=rtol, atol=atol):
                diff = np.abs(a - num).max()
                msg = (f"Jacobian mismatch for output {o} with respect to input {i},\n"
                       f"numerical:{num}\nanalytical:{a}\nmax abs difference {diff}")
                if raise_exception:
                    raise GradcheckError(msg)
                return False
    return True


def gradgradcheck(func, inputs, grad_outputs=None, *, eps=1e-6, atol=1e-5, rtol=1e-3,
                  raise_exception=True, **_) -> bool:
    """gradcheck of the function x -> grad(func(x), x, v) (second derivatives)."""
    from .. import autograd
    from .._creation import randn
    from .._tensor_base import Tensor
    from .grad_mode import enable_grad
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff = [x for x in inputs if isinstance(x, Tensor) and x.requires_grad]
    outs = _outputs(func, inputs)
    if grad_outputs is None:
        grad_outputs = [randn(tuple(o.shape), dtype=o.dtype) for o in outs]

    def first(*xs):
        # the numerical pass runs under no_grad; the first derivative needs a graph
        with enable_grad():
            res = _outputs(func, xs)
            d = [x for x in xs if isinstance(x, Tensor) and x.requires_grad]
            return autograd.grad(res, d, grad_outputs, create_graph=True, allow_unused=True)

    del diff
    return gradcheck(first, inputs, eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception)
