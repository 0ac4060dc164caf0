"""What every compiled entry is: one traced signature and how a call runs it.

A ``CompiledFunction`` keeps entries per signature. Whatever kind an entry is,
a call does the same things in the same order, written here once: find this
call's tensor for every graph input (arguments, parameters, captured live
tensors, scalars read from Python now), run a plan, give mutated inputs their
new values (in place where the plan computed them there directly, else by a
copy), and rebuild the caller's output structure. The kinds differ only in
which plans they run:

- ``InferenceEntry`` (``api.py``): one plan; outputs that are views of an input
  stay views of this call's input;
- ``TrainingEntry`` (``training.py``): a forward plan, and a backward plan that
  eager autograd runs through one tape node;
- ``StepEntry`` (``training.py``): a whole training step in one plan, whose
  outputs also include the new ``.grad`` tensors.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._tensor import Tensor
from .guards import snapshot


class Entry:
    """A traced signature: its graph, where its inputs come from, the guards it is
    valid under, and what it writes back."""

    kind = "entry"

    def __init__(self, graph, out_spec, n_out: int, live: list, writebacks: list,
                 input_map: list) -> None:
        self.graph = graph
        self.out_spec = out_spec
        self.n_out = n_out
        self.live = live  # [(tensor, Value)] captured live tensors
        # [(graph input position, output index)]: this call's tensor at that input
        # receives that output (in-place writes bind to the current call's arguments)
        self.writebacks = writebacks
        self.input_map = input_map  # per graph input: ("arg"|"param"|"live"|"scalar", i)
        self.scalars: list = []     # ("scalar", j): (evaluate, dtype) -> this call's value
        self.guards: list = []      # (check, expected, description), see guards.py
        self.traced_text = ""
        self.idle = 0               # calls in a row that went to other entries
        self._scalar_tensors: dict = {}  # ("scalar", j) input: (value's snapshot, tensor)

    def input_tensors(self, arg_tensors: list[Tensor], params: list[Tensor]) -> list[Tensor]:
        """The tensor behind each graph input for this call (a scalar input, e.g. an
        optimizer's lr, is read from its owner now)."""
        out = []
        for kind, i in self.input_map:
            if kind == "arg":
                out.append(arg_tensors[i])
            elif kind == "param":
                out.append(params[i])
            elif kind == "live":
                out.append(self.live[i][0])
            else:
                out.append(self._scalar_tensor(i))
        return out

    def _scalar_tensor(self, i: int) -> Tensor:
        """Scalar input ``i`` as a 0-d tensor: the one of the last call while the value
        is the same (an unchanged array lets the plan's kernels keep their bound
        arguments: a GPT step's 30 AdamW bias-correction kernels took ~13 us each
        rebinding four fresh scalars, ~9 us with these kept)."""
        evaluate, dtype = self.scalars[i]
        v = evaluate()
        if type(v) not in (float, int, bool):
            return Tensor._make(np.asarray(v, dtype))
        key = snapshot(v)   # by bits: -0.0 is not 0.0
        held = self._scalar_tensors.get(i)
        if held is not None and held[0] == key:
            return held[1]
        t = Tensor._make(np.asarray(v, dtype))
        self._scalar_tensors[i] = (key, t)
        return t

    def executables(self) -> list:
        """The executors this entry runs (for explain, export, arena release)."""
        return []

    def release(self) -> None:
        """Give back the arenas of an entry not used lately (made again on its next
        call)."""
        for ex in self.executables():
            release = getattr(ex, "release", None)
            if release is not None:
                release()

    def direct_writebacks(self, executable) -> dict[int, int]:
        """Write-backs the plan can compute straight into the mutated tensor (e.g. an
        optimizer update in one pass instead of a new buffer copied back): output
        index -> input position, for captured (live) tensors, never for arguments (a
        call may pass aliased or overlapping ones)."""
        plan = getattr(executable, "plan", None)
        if plan is None:
            return {}
        return {k: j for j, k in self.writebacks
                if self.input_map[j][0] == "live" and plan.can_write_output_into_input(k, j)}

    def run_plan(self, executable, tensors: list[Tensor], direct: dict | None) -> list:
        """Run ``executable`` on this call's input ``tensors``; mutated ones receive
        their new values (in place where the plan computes them there directly, else
        by a copy), and their version counters move as eager in-place ops move them."""
        into = None
        if direct:
            into = {}
            for k, j in direct.items():
                a = tensors[j]._data
                if a.flags.c_contiguous and a.flags.writeable:
                    into[k] = a
        arrays = [t._data for t in tensors]
        outs = executable(arrays, into) if into else executable(arrays)
        for j, k in self.writebacks:
            t = tensors[j]
            if into is None or k not in into:
                np.copyto(t._data, outs[k])
            t._vbox[0] += 1
        return outs

    def run(self, arg_tensors: list[Tensor], params: list[Tensor]) -> Any:
        raise NotImplementedError(f"{type(self).__name__}.run")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.graph.name}: {len(self.graph.inputs)} inputs, "
                f"{self.n_out} outputs, {len(self.writebacks)} write-backs, "
                f"{len(self.guards)} guards)")
