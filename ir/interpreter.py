"""Reference interpreter: runs a graph op by op through the registry's NumPy impls.

This is the oracle that passes, fusion and generated kernels are tested against,
so it follows eager dispatch exactly: elementwise operands are cast to the op's
compute dtype (``ir.registry.compute_dtype``) and Python scalars become NumPy
scalars of that dtype before the impl runs.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from . import dtypes as dt
from .graph import Graph, Node, Value
from .registry import REGISTRY, OpDef, compute_dtype

_EMPTY: dict = {}


def elementwise_compute_dtype(op: OpDef, args: Sequence[Any]) -> dt.DType | None:
    """The dtype eager dispatch computes ``op`` in, for arrays/Values/scalars ``args``."""
    if op.dtype_rule == "cast":
        return None
    specs = []
    for a in args:
        if isinstance(a, np.ndarray):
            specs.append((dt.from_numpy(a.dtype), a.ndim))
        elif isinstance(a, Value):
            specs.append((a.dtype, a.ndim))
        elif isinstance(a, np.generic):
            specs.append((dt.from_numpy(a.dtype), 0))
        else:
            specs.append(a)
    if op.dtype_rule == "where":
        specs = specs[1:]
    return compute_dtype(op, specs)


def eval_op(name: str | OpDef, args: Sequence[Any], attrs: dict = _EMPTY) -> np.ndarray:
    """Apply one op to NumPy arrays / Python scalars as eager dispatch would."""
    op = REGISTRY[name] if isinstance(name, str) else name
    if op.is_elementwise:
        cdt = elementwise_compute_dtype(op, args)
        skip_first = op.dtype_rule == "where"
        arrays = []
        for i, a in enumerate(args):
            if isinstance(a, np.ndarray):
                if cdt is not None and a.dtype != cdt.np and not (skip_first and i == 0):
                    a = a.astype(cdt.np)
                arrays.append(a)
            elif cdt is not None and not (skip_first and i == 0):
                arrays.append(cdt.np.type(a))
            else:
                arrays.append(a)
    else:
        arrays = list(args)
    with np.errstate(all="ignore"):
        out = op.impl(*arrays, **attrs)
    if type(out) is not np.ndarray:
        out = np.asarray(out)
    return out


def run_node(node: Node, env: dict[int, np.ndarray]) -> np.ndarray:
    args = [env[id(a)] if isinstance(a, Value) else a for a in node.inputs]
    return eval_op(node.op, args, node.attrs)


def interpret(graph: Graph, inputs: Sequence[np.ndarray], *, check: bool = False
              ) -> list[np.ndarray]:
    """Run ``graph`` on NumPy ``inputs`` (one per graph input); returns output arrays.

    With ``check=True`` each result's shape and dtype are compared to the value's
    declared type (a cheap verifier of shape rules against the impls).
    """
    if len(inputs) != len(graph.inputs):
        raise TypeError(f"{graph.name}: expected {len(graph.inputs)} inputs, got {len(inputs)}")
    env: dict[int, np.ndarray] = {}
    for v, a in zip(graph.inputs, inputs):
        a = np.asarray(a)
        if tuple(a.shape) != v.shape or a.dtype != v.dtype.np:
            raise TypeError(f"{graph.name}: input %{v.name} expects {v.type}, got "
                            f"{a.dtype}{list(a.shape)}")
        env[id(v)] = a
    for c in graph.constants:
        env[id(c)] = c.data
    for n in graph.nodes:
        out = run_node(n, env)
        if check and (tuple(out.shape) != n.out.shape or out.dtype != n.out.dtype.np):
            raise RuntimeError(f"interpreter: {n.op} produced {out.dtype}{list(out.shape)} but "
                               f"the graph declares %{n.out.name}: {n.out.type}")
        env[id(n.out)] = out
    return [env[id(o)] for o in graph.outputs]
