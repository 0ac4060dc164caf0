"""Graphs as JSON (no pickle), validated against the op registry on load.

Attribute values are encoded with small tags so they round-trip exactly:
tuples ``{"tuple": [...]}``, dtypes ``{"dtype": "float32"}``, non-finite floats
``{"float": "nan"}``; constants carry base64 little-endian bytes.
"""
from __future__ import annotations

import base64
import json
import math
from typing import Any

import numpy as np

from . import dtypes as dt
from .graph import Graph, Value
from .registry import REGISTRY
from .verify import verify

FORMAT = "gcompile.graph"
VERSION = 1


class GraphFormatError(ValueError):
    """A serialised graph is malformed; the message names the field."""


def _enc(v: Any) -> Any:
    if isinstance(v, dt.DType):
        return {"dtype": v.name}
    if isinstance(v, bool) or v is None or isinstance(v, (int, str)):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else {"float": repr(v)}
    if isinstance(v, (np.integer, np.floating, np.bool_)):
        return _enc(v.item())
    if isinstance(v, (tuple, list)):
        return {"tuple": [_enc(x) for x in v]}
    if isinstance(v, dict):
        return {"dict": {k: _enc(x) for k, x in v.items()}}
    raise TypeError(f"cannot serialise attribute value {v!r} of type {type(v).__name__}")


def _dec(v: Any, where: str) -> Any:
    if isinstance(v, dict):
        if "dtype" in v:
            return dt.as_dtype(v["dtype"])
        if "float" in v:
            return float(v["float"])
        if "tuple" in v:
            return tuple(_dec(x, where) for x in v["tuple"])
        if "dict" in v:
            return {k: _dec(x, where) for k, x in v["dict"].items()}
        raise GraphFormatError(f"{where}: unknown tagged value {v!r}")
    if isinstance(v, list):
        raise GraphFormatError(f"{where}: untagged list {v!r}")
    return v


def to_dict(graph: Graph) -> dict:
    """A JSON-ready dict."""
    def vdesc(v: Value) -> dict:
        return {"name": v.name, "shape": list(v.shape), "dtype": v.dtype.name,
                "device": v.device}

    consts = []
    for c in graph.constants:
        d = vdesc(c)
        d["data"] = base64.b64encode(np.ascontiguousarray(c.data).astype(
            c.data.dtype.newbyteorder("<"), copy=False).tobytes()).decode("ascii")
        consts.append(d)
    nodes = []
    for n in graph.nodes:
        nodes.append({"op": n.op, "out": vdesc(n.out),
                      "inputs": [{"v": a.name} if isinstance(a, Value) else {"s": _enc(a)}
                                 for a in n.inputs],
                      "attrs": {k: _enc(v) for k, v in sorted(n.attrs.items())}})
    return {"format": FORMAT, "version": VERSION, "name": graph.name,
            "inputs": [vdesc(v) for v in graph.inputs], "constants": consts, "nodes": nodes,
            "outputs": [o.name for o in graph.outputs]}


def dumps(graph: Graph, indent: int | None = None) -> str:
    return json.dumps(to_dict(graph), indent=indent)


def _field(d: dict, key: str, where: str, typ=None):
    if not isinstance(d, dict) or key not in d:
        raise GraphFormatError(f"{where}: missing field {key!r}")
    v = d[key]
    if typ is not None and not isinstance(v, typ):
        raise GraphFormatError(f"{where}.{key}: expected {typ.__name__}, got "
                               f"{type(v).__name__}")
    return v


def _vtype(d: dict, where: str):
    shape = _field(d, "shape", where, list)
    if not all(isinstance(s, int) and s >= 0 for s in shape):
        raise GraphFormatError(f"{where}.shape: expected non-negative ints, got {shape}")
    try:
        dtype = dt.as_dtype(_field(d, "dtype", where, str))
    except TypeError as e:
        raise GraphFormatError(f"{where}.dtype: {e}") from None
    return tuple(shape), dtype


def from_dict(d: dict) -> Graph:
    """Rebuild and verify a graph; errors name the offending field."""
    if _field(d, "format", "graph", str) != FORMAT:
        raise GraphFormatError(f"graph.format: expected {FORMAT!r}, got {d['format']!r}")
    if _field(d, "version", "graph", int) > VERSION:
        raise GraphFormatError(f"graph.version: {d['version']} is newer than {VERSION}")
    g = Graph(str(d.get("name", "graph")))
    env: dict[str, Value] = {}
    for i, vd in enumerate(_field(d, "inputs", "graph", list)):
        where = f"graph.inputs[{i}]"
        shape, dtype = _vtype(vd, where)
        v = g.add_input(shape, dtype, _field(vd, "name", where, str), vd.get("device", "cpu"))
        env[v.name] = v
    for i, cd in enumerate(_field(d, "constants", "graph", list)):
        where = f"graph.constants[{i}]"
        shape, dtype = _vtype(cd, where)
        try:
            raw = base64.b64decode(_field(cd, "data", where, str), validate=True)
            arr = np.frombuffer(raw, dtype=dtype.np.newbyteorder("<")).astype(dtype.np)
            arr = arr.reshape(shape)
        except Exception as e:  # noqa: BLE001
            raise GraphFormatError(f"{where}.data: {e}") from None
        v = g.add_const(arr, _field(cd, "name", where, str))
        env[v.name] = v
    for i, nd in enumerate(_field(d, "nodes", "graph", list)):
        where = f"graph.nodes[{i}]"
        op = _field(nd, "op", where, str)
        if op not in REGISTRY:
            raise GraphFormatError(f"{where}.op: unknown op {op!r}")
        ins = []
        for j, a in enumerate(_field(nd, "inputs", where, list)):
            if isinstance(a, dict) and "v" in a:
                if a["v"] not in env:
                    raise GraphFormatError(f"{where}.inputs[{j}]: undefined value {a['v']!r}")
                ins.append(env[a["v"]])
            elif isinstance(a, dict) and "s" in a:
                s = _dec(a["s"], f"{where}.inputs[{j}]")
                if not isinstance(s, (bool, int, float)):
                    raise GraphFormatError(f"{where}.inputs[{j}]: scalar expected, got {s!r}")
                ins.append(s)
            else:
                raise GraphFormatError(f"{where}.inputs[{j}]: expected {{'v': name}} or "
                                       f"{{'s': scalar}}, got {a!r}")
        attrs = {k: _dec(v, f"{where}.attrs.{k}")
                 for k, v in _field(nd, "attrs", where, dict).items()}
        od = _field(nd, "out", where, dict)
        shape, dtype = _vtype(od, f"{where}.out")
        try:
            v = g.add_node(op, ins, attrs, shape=shape, dtype=dtype)
        except Exception as e:  # noqa: BLE001
            raise GraphFormatError(f"{where}: {e}") from None
        name = _field(od, "name", f"{where}.out", str)
        if name in env:
            raise GraphFormatError(f"{where}.out.name: {name!r} is defined twice")
        g.name_value(v, name)
        env[name] = v
    outs = []
    for i, name in enumerate(_field(d, "outputs", "graph", list)):
        if name not in env:
            raise GraphFormatError(f"graph.outputs[{i}]: undefined value {name!r}")
        outs.append(env[name])
    g.set_outputs(outs)
    digits = [int(v.name) for v in g.all_values() if v.name.isdigit()]
    g._next = max([v.id for v in g.all_values()] + digits, default=-1) + 1
    try:
        verify(g)
    except ValueError as e:
        raise GraphFormatError(f"graph: {e}") from None
    return g


def loads(text: str) -> Graph:
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise GraphFormatError(f"graph: not valid JSON: {e}") from None
    return from_dict(d)
