"""Compiled training: a traced forward whose backward is a compiled plan too.

The traced graph goes through the autodiff pass (``ir.passes.autodiff``): the
joint graph is partitioned into a forward plan that also returns what the
backward needs and a backward plan. Calling the compiled object runs the
forward plan and hands eager autograd one tape node, ``CompiledFunctionBackward``,
which runs the backward plan; ``.grad`` accumulation stays the tape's job, so
parameter sharing, frozen parameters and gradients to inputs behave as eager.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ir.passes.autodiff import joint_graph, partition

from .._state import state
from .._tensor import Tensor
from ..autograd.graph import _FREED_MSG, Node


class CompiledFunctionBackward(Node):
    """One tape node for a whole compiled forward; may have several outputs."""

    def __init__(self, entry: TrainingEntry, saved: list[np.ndarray], wrt_tensors: list[Tensor]):
        super().__init__()
        self.entry = entry
        self._saved = saved
        self.num_outputs = len(entry.diff_outputs)
        nxt, nrs = [], []
        for t in wrt_tensors:
            if t.requires_grad:
                nxt.append(t.grad_fn if t.grad_fn is not None else t._grad_accumulator())
                nrs.append(t.__dict__.get("_out_nr", 0))
            else:
                nxt.append(None)
                nrs.append(0)
        self._next = tuple(nxt)
        self._next_nr = tuple(nrs)

    @property
    def next_functions(self):
        return tuple((n, k) for n, k in zip(self._next, self._next_nr))

    def name(self) -> str:
        return "CompiledFunctionBackward"

    def apply(self, grads):
        if self._saved is None:
            raise RuntimeError(_FREED_MSG)
        if state.grad_enabled:
            raise RuntimeError("double backward (create_graph=True) through a gcompile.compile'd "
                               "function is not supported; call the function uncompiled")
        if not isinstance(grads, list):
            grads = [grads]
        e = self.entry
        arrays = list(self._saved)
        for g, (shape, dtype) in zip(grads, e.tangent_types):
            if g is None:
                arrays.append(np.zeros(shape, dtype))
            else:
                arrays.append(np.ascontiguousarray(g._data, dtype=dtype))
        outs = e.backward(arrays)
        res = [None] * len(e.wrt_inputs)
        it = iter(outs)
        for k, has in enumerate(e.has_grad):
            if has:
                res[k] = Tensor._make(next(it))
        return res

    def release(self):
        self._saved = None


class TrainingEntry:
    """A traced signature with grad-requiring inputs: forward + backward plans."""

    def __init__(self, graph, build: Callable, out_spec, n_out: int, live, writebacks,
                 input_map, input_tensors: list[Tensor], out_tensors: list[Tensor]):
        self.graph = graph
        self.out_spec = out_spec
        self.n_out = n_out
        self.live = live
        self.writebacks = writebacks
        self.input_map = input_map
        wrt = [i for i, t in enumerate(input_tensors)
               if t.requires_grad and t.dtype.is_floating_point]
        diff = [k for k, t in enumerate(out_tensors) if t.requires_grad]
        joint = joint_graph(graph, wrt=wrt, diff_outputs=diff)
        self.joint = joint
        # the joint graph numbers inputs like the traced graph; map wrt back to positions
        self.wrt_inputs = [joint.graph.inputs.index(v) for v in joint.wrt]
        self.has_grad = [gv is not None for gv in joint.grads]
        self.diff_outputs = joint.differentiable_outputs
        self.tangent_types = [(v.shape, v.dtype.np) for v in joint.grad_inputs]
        self.part = partition(joint)
        self.num_forward_outputs = joint.num_forward_outputs
        self.forward = build(self.part.forward)
        self.backward = build(self.part.backward)

    def run(self, arg_tensors: list[Tensor], params: list[Tensor]):
        from .api import _unflatten
        tensors = []
        for kind, i in self.input_map:
            tensors.append(arg_tensors[i] if kind == "arg" else params[i] if kind == "param"
                           else self.live[i][0])
        outs = self.forward([t._data for t in tensors])
        for t, k in self.writebacks:
            np.copyto(t._data, outs[k])
            t._vbox[0] += 1
        results = [Tensor._make(outs[k]) for k in range(self.n_out)]
        if state.grad_enabled and any(tensors[i].requires_grad for i in self.wrt_inputs):
            saved = list(outs[self.num_forward_outputs:])
            node = CompiledFunctionBackward(self, saved, [tensors[i] for i in self.wrt_inputs])
            for nr, k in enumerate(self.diff_outputs):
                if k >= self.n_out:
                    continue
                r = results[k]
                r.grad_fn = node
                r._requires_grad = True
                if node.num_outputs > 1:
                    r._out_nr = nr
        return _unflatten(self.out_spec, results)

    @property
    def saved_bytes(self) -> int:
        return self.part.saved_bytes

    @property
    def saved_bytes_no_recompute(self) -> int:
        return self.part.saved_bytes_no_recompute
