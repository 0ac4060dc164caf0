"""A NumPy evaluator for ``KernelSpec``: the oracle for lowering tests, and the
fallback when a generated kernel is unavailable. Same calling convention as a
compiled kernel: ``kernel(inputs, outputs)`` writing into ``outputs``."""
from __future__ import annotations

import numpy as np

from ir import dtypes as dt
from ir.registry import REGISTRY
from kernels.spec import KernelSpec, Stmt

_RED = {"sum": np.sum, "max": np.max, "min": np.min, "prod": np.prod}


def _attrs(stmt: Stmt) -> dict:
    out = {}
    for k, v in stmt.attrs:
        if k == "dtype" and isinstance(v, str):
            v = dt.as_dtype(v)
        out[k] = v
    return out


def _eval(stmt: Stmt, get) -> np.ndarray:
    args = [get(a) for a in stmt.args]
    op = REGISTRY[stmt.op]
    with np.errstate(all="ignore"):
        if stmt.op == "clone":
            out = np.array(args[0], copy=True)
        else:
            # the NumPy implementation even where a native kernel serves eager calls:
            # this is the oracle generated kernels are checked against
            out = (op.reference or op.impl)(*args, **_attrs(stmt))
    return np.asarray(out).astype(np.dtype(dt.as_dtype(stmt.dtype).np), copy=False)


class ReferenceKernel:
    """Evaluates a spec with whole-array NumPy operations."""

    def __init__(self, spec: KernelSpec) -> None:
        spec.validate()
        self.spec = spec
        self.source = f"# NumPy reference evaluation of\n# {spec!r}"

    def __call__(self, inputs: list[np.ndarray], outputs: list[np.ndarray],
                 parallel: bool | None = None) -> None:
        spec = self.spec
        env: dict[str, np.ndarray] = {}
        reds: dict[int, np.ndarray] = {}
        R = inputs[0].shape[-1] if inputs else (outputs[0].shape[-1] if outputs else 1)
        if spec.kind == "rows":
            for o, (_, kind) in zip(outputs, spec.outputs):
                if kind == "full":
                    R = o.shape[-1]
            for a in inputs:
                R = a.shape[-1]

        def get(ref):
            tag = ref[0]
            if tag == "in":
                return inputs[ref[1]]
            if tag == "v":
                return env[ref[1]]
            if tag == "c":
                return np.dtype(dt.as_dtype(ref[2]).np).type(ref[1])
            if tag == "r":
                return reds[ref[1]]
            if tag == "n":
                return np.dtype(dt.as_dtype(ref[1]).np).type(R)
            raise ValueError(ref)

        k = 0
        for p in spec.phases:
            for s in p.stmts:
                env[s.name] = _eval(s, get)
            if p.kind == "reduce":
                val = np.asarray(get(p.reduce_value))
                if spec.kind == "rows" and val.ndim == 0:
                    val = np.broadcast_to(val, inputs[0].shape)
                r = _RED[p.reduce_op](val, axis=-1, keepdims=True).astype(val.dtype, copy=False)
                reds[k] = r
                for s in p.post:
                    env[s.name] = _eval(s, get)
                if p.post:
                    reds[k] = env[p.post[-1].name]
                if p.store_result is not None:
                    out = outputs[p.store_result]
                    out[...] = np.asarray(reds[k]).reshape(out.shape)
                k += 1
            else:
                for idx, ref in p.stores:
                    out = outputs[idx]
                    np.copyto(out, np.broadcast_to(get(ref), out.shape), casting="unsafe")
