"""Independent matmul steps of a CPU plan run side by side, one GEMM per thread.

A training step's products are mostly too small for OpenBLAS to keep two threads busy:
measured alone on the 2-core benchmark machine, a Linear layer's two gradient products
(``g^T @ x`` and ``g @ W``, which read the same ``g`` and nothing of each other) took
208 us one after the other on two threads and 188 us side by side on one thread each
(GPT's head), 408 against 374 us (the LSTM's decoder) and 372 against 339 us (GPT's
attention output projection). ``pair_matmuls`` finds such pairs in the step list and
makes each one step, ``_MatmulPairRun``, whose bound call is one pool task of two
chunks (``kernels.cpu.bound_gemm.bind_pair``). Inside the benchmark LSTM's compiled
step (one process alternating the plan with and without pairs, 20 rounds) its decoder
gradients took 0.39 against 0.45 ms and the step's GEMMs 2.23 against 2.29 ms. GPT's
attention-input, first MLP and head products do not pair: their weight gradients read
the layer norm's output, which the kernel reading their input gradients recomputes.

Two products pair when neither needs the other's result, their FLOPs are within
``PAIR_BALANCE`` of each other, each output is at most ``PAIR_OUT_MAX`` bytes (larger
outputs are memory-bound on one thread: the MNIST CNN's fc1 gradients, 2.4 and 4.7 MB,
ran 3-4% slower side by side), and the later one is at most ``PAIR_WINDOW`` steps on.
The steps between that the later one needs (views of its operands, the LSTM decoder's
copy of its input in batch order) move up with it, in their order; steps are pure
functions of their input slots, so any order that keeps each after its inputs computes
the same values. The pass runs before memory planning, which then sees the new order.
The pair runs its two products one after the other, as two matmul steps would,
wherever the bound call cannot: one kernel thread, a layout NumPy would not run as one
plain GEMM, a product ``matmul_step`` runs swapped or through a copy, no native pool.

Why the balance matters: the pair takes as long as its larger product on one thread.
If two threads run a product at efficiency ``e`` (1: twice as fast as one thread), a
pair whose FLOPs differ by a factor ``r`` wins only while ``e < (r + 1) / (2 r)``: any
``e < 1`` for ``r = 1``, but only ``e < 0.87`` for ``r = 1.34``, and GPT's larger
products run at ``e`` of about 0.95. A Linear layer's two gradient products have the
same FLOPs.
"""
from __future__ import annotations

import numpy as np

from ir.ops.linalg import gemm_swaps_operands, matmul_flops

from .plan import Step
from .steps import _Binding, _BoundRun, _fold_mode, _gemm_binder, _MatmulRun, _threads

__all__ = ["pair_matmuls", "PAIR_BALANCE", "PAIR_OUT_MAX", "PAIR_WINDOW"]

PAIR_BALANCE = 1.1
PAIR_OUT_MAX = 2 << 20
PAIR_WINDOW = 16
_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def pair_matmuls(steps: list[Step]) -> list[Step]:
    """``steps`` with each pair of independent matmul steps that pays off side by side
    made one step (see the module's docstring); the order is otherwise kept."""
    out = list(steps)
    i = 0
    while i < len(out):
        fa = _flops(out[i])
        found = _partner(out, i, fa) if fa else None
        if found is not None:
            j, hoist = found
            moved = set(hoist)
            out = (out[:i] + [out[k] for k in hoist] + [_pair_step(out[i], out[j])]
                   + [out[k] for k in range(i + 1, j) if k not in moved] + out[j + 1:])
            i += len(hoist)
        i += 1
    return out


def _flops(st: Step) -> int:
    """2*M*N*K of a matmul step that may pair, else 0."""
    if st.kind != "matmul" or len(st.nodes) != 1 or not isinstance(st.run, _MatmulRun):
        return 0
    n = st.nodes[0]
    a, b = n.inputs
    dts = {getattr(v.dtype, "np", None) for v in (a, b, n.out)}
    if b.ndim != 2 or a.ndim < 2 or (a.ndim > 2) != st.run.fold or len(dts) != 1 or \
            dts.pop() not in _FLOATS or n.out.nbytes > PAIR_OUT_MAX:
        return 0
    return matmul_flops(n)


def _partner(steps: list[Step], i: int, fa: int) -> tuple[int, list[int]] | None:
    """The index of the step that pairs with matmul step ``i`` and the steps between
    that must move up with it, or None."""
    for j in range(i + 1, min(len(steps), i + 1 + PAIR_WINDOW)):
        fb = _flops(steps[j])
        if not fb or max(fa, fb) > PAIR_BALANCE * min(fa, fb):
            continue
        hoist = _needed_steps(steps, i, j)
        if hoist is not None:
            return j, hoist
    return None


def _needed_steps(steps: list[Step], i: int, j: int) -> list[int] | None:
    """The steps between ``i`` and ``j`` whose results step ``j`` reads (directly or
    through each other), or None where one of them, or ``j``, reads step ``i``'s."""
    need = set(steps[j].inputs)
    hoist = []
    for k in range(j - 1, i, -1):
        st = steps[k]
        if need.isdisjoint(st.outputs):
            continue
        hoist.append(k)
        need.update(st.inputs)
    if not need.isdisjoint(steps[i].outputs):
        return None
    return sorted(hoist)


def _pair_step(a: Step, b: Step) -> Step:
    return Step("matmul", f"{a.name} | {b.name}", _MatmulPairRun(a.run, b.run),
                a.inputs + b.inputs, a.outputs + b.outputs, a.nodes + b.nodes,
                bytes_moved=a.bytes_moved + b.bytes_moved)


class _MatmulPairRun(_BoundRun):
    """The ``run`` of a pair step: after a call of the two products one after the other
    (each ``_MatmulRun`` binds its own GEMM), the pair is bound (``_Binding``); while
    that holds, a call is the bound pool task alone. A pair whose layouts cannot be
    bound stops trying after ``_TRIES`` refusals."""

    __slots__ = ("first", "second", "binding", "refused")
    _TRIES = 3

    def __init__(self, first: _MatmulRun, second: _MatmulRun) -> None:
        self.first, self.second = first, second
        self.binding = _Binding((first.sa, first.sb, first.so,
                                 second.sa, second.sb, second.so))
        self.refused = 0

    def __call__(self, env) -> None:
        if self.binding.run(env):
            return
        self.first(env)
        self.second(env)
        if self.refused < self._TRIES and _threads() >= 2 and _gemm_binder() is not None:
            self.binding.make("matmul pair", self._bind, env,
                              [env[s] for s in self.binding.slots], {})

    def _bind(self, xa, ya, oa, xb, yb, ob):
        binder = _gemm_binder()
        first = _operands(self.first, xa, ya, oa)
        second = _operands(self.second, xb, yb, ob)
        try:
            pair = None if first is None or second is None else \
                binder.bind_pair(first, second)
        except binder.Deferred:
            return None   # its kernel compiles with the plan's batch: bind next call
        if pair is None:
            self.refused += 1
        return pair


def _operands(run: _MatmulRun, x: np.ndarray, y: np.ndarray, o: np.ndarray) -> tuple | None:
    """The 2-D ``(x, y, o)`` views whose GEMM ``run`` computes, where it runs one plain
    GEMM on views of the step's arrays (not swapped, no copy of ``x``), else None."""
    if not run.fold:
        if x.ndim != 2 or (o.flags.c_contiguous and gemm_swaps_operands(x, y)):
            return None
        return x, y, o
    mode = _fold_mode(x, o)
    if mode is None or mode[2] is not None:
        return None
    return x.reshape(mode[0]), y, o.reshape(mode[1])
