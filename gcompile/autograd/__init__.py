"""torch.autograd: backward, grad, Function, gradcheck and grad modes."""
from __future__ import annotations

from .._creation import ones_like, tensor, zeros_like
from .._state import state
from .._tensor_base import Tensor
from .function import Function, FunctionCtx, once_differentiable
from .gradcheck import gradcheck, gradgradcheck
from .grad_mode import (enable_grad, inference_mode, is_grad_enabled, is_inference_mode_enabled,
                        no_grad, set_grad_enabled)
from .graph import AccumulateGrad, Node, _accumulate, run_backward  # noqa: F401  (re-exported)

__all__ = ["backward", "grad", "Function", "FunctionCtx", "once_differentiable", "gradcheck",
           "gradgradcheck", "no_grad", "enable_grad", "set_grad_enabled", "inference_mode",
           "is_grad_enabled", "is_inference_mode_enabled", "Node", "set_detect_anomaly",
           "detect_anomaly", "Variable"]


def _as_list(x):
    if x is None:
        return None
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]


def _root(t, i):
    if not t.requires_grad:
        raise RuntimeError(f"element {i} of tensors does not require grad and does not have a "
                           "grad_fn")
    return t.grad_fn if t.grad_fn is not None else t._grad_accumulator()


def _make_grads(outputs, grad_outputs, create_graph):
    grads = []
    for i, (t, g) in enumerate(zip(outputs, grad_outputs)):
        if g is None:
            if t.numel() != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs (got output {i} of "
                    f"shape {tuple(t.shape)}; pass `gradient` with that shape)")
            g = ones_like(t)
        elif not hasattr(g, "_data"):
            g = tensor(g, dtype=t.dtype)
        if tuple(g.shape) != tuple(t.shape):
            raise RuntimeError(f"Mismatch in shape: grad_output[{i}] has a shape of {g.shape} and "
                               f"output[{i}] has a shape of {t.shape}.")
        if g.dtype is not t.dtype:
            g = g.to(t.dtype)
        grads.append(g)
    return grads


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None,
             grad_variables=None) -> None:
    """Accumulate d(tensors)/d(leaf) into every leaf's ``.grad``."""
    tensors = _as_list(tensors)
    grad_tensors = _as_list(grad_tensors if grad_tensors is not None else grad_variables)
    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    if len(grad_tensors) != len(tensors):
        raise RuntimeError(f"got {len(grad_tensors)} gradients for {len(tensors)} tensors")
    if retain_graph is None:
        retain_graph = create_graph
    roots = [_root(t, i) for i, t in enumerate(tensors)]
    nrs = [t.__dict__.get("_out_nr", 0) for t in tensors]
    grads = _make_grads(tensors, grad_tensors, create_graph)
    if inputs is not None:
        inputs = _as_list(inputs)
        res = grad(tensors, inputs, grads, retain_graph=retain_graph, create_graph=create_graph,
                   allow_unused=True)
        for x, g in zip(inputs, res):
            if g is None:
                continue
            if x.grad_fn is None:
                _accumulate(x, g, create_graph)
            else:
                x.grad = g if x.grad is None else x.grad + g
        return
    run_backward(roots, grads, retain_graph, create_graph, root_nrs=nrs)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False,
         only_inputs=True, allow_unused=None, is_grads_batched=False, materialize_grads=False):
    """Return d(outputs)/d(inputs) without touching ``.grad``."""
    single = not isinstance(inputs, (list, tuple))
    outputs = _as_list(outputs)
    inputs = _as_list(inputs)
    grad_outputs = _as_list(grad_outputs) or [None] * len(outputs)
    if retain_graph is None:
        retain_graph = create_graph
    if allow_unused is None:
        allow_unused = materialize_grads
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"One of the differentiated Tensors (input {i}) does not require "
                               "grad")
    roots = [_root(t, i) for i, t in enumerate(outputs)]
    grads = _make_grads(outputs, grad_outputs, create_graph)
    targets = [x.grad_fn if x.grad_fn is not None else x._grad_accumulator() for x in inputs]
    capture = dict.fromkeys(targets)
    nrs = [t.__dict__.get("_out_nr", 0) for t in outputs]
    results = run_backward(roots, grads, retain_graph, create_graph, capture=capture,
                           root_nrs=nrs)
    out = []
    for i, (x, node) in enumerate(zip(inputs, targets)):
        g = results.get(node)
        if g is None:
            if materialize_grads:
                g = zeros_like(x)
            elif not allow_unused:
                raise RuntimeError(f"One of the differentiated Tensors (input {i}) appears to not "
                                   "have been used in the graph. Set allow_unused=True if this is "
                                   "the desired behavior.")
        elif not create_graph:
            g = g.detach()
        out.append(g)
    del single
    return tuple(out)


def Variable(data, requires_grad: bool = False, volatile: bool = False):
    """The pre-0.4 ``Variable`` wrapper: today just a tensor (sharing ``data``'s
    memory) with ``requires_grad`` set, as in torch."""
    t = Tensor._make(data._data)
    if requires_grad:
        t.requires_grad = True
    return t


class set_detect_anomaly:
    """Accepted for compatibility; errors here already name the failing op."""

    def __init__(self, mode: bool, check_nan: bool = True) -> None:
        self.mode = mode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


detect_anomaly = set_detect_anomaly
_ = state
