"""``ExportedProgram``: trace, optimise and keep a graph with its weights; save and load it.

The file ``save`` writes is a gcompile checkpoint (``gcompile.save``: one
safetensors file, JSON structure in its metadata, a SHA-256 over structure and
data that refuses a truncated or edited file, atomic write, no pickle) holding::

    {"format": "gcompile.exported_program", "version": 1,
     "graph": <ir.serialize JSON text, validated against the op registry on load>,
     "program": <JSON text: graph input bindings, input/output pytree specs,
                 dynamic dimensions and how the graph's sizes follow them>,
     "weights": {name: tensor},
     "kernels": [{"source": str, "header": JSON text, "object": uint8 tensor}]}

Every field is checked on load, and an error names the field that is wrong.

Kernels: the generated source of every kernel variant the plan ran, with its
machine code for this CPU (the signed kernel-cache entry: ``kernels.cache``).
Machine code is native code, so a stored object is used only when (1) it was
built for this CPU and these library versions (the cache's salt, which hashes
both, names the same module) and (2) its HMAC verifies under this user's
kernel-cache key, i.e. this user exported it (on this machine, or one sharing
the key). ``load(path, trust_kernels=True)`` also accepts objects signed by
another key when (1) holds: only for files you trust as you would trust a
shared library. Accepted objects are installed into the kernel cache and then
loaded through its usual verification; anything else is compiled again from
source that the kernel generator derives from the (registry-validated)
graph. The stored source text is never executed: running Python from a file
would be as unsafe as pickle.
"""
from __future__ import annotations

import collections
import copy
import hmac
import inspect
import json
from collections.abc import Callable
from typing import Any

import numpy as np

from ir import dtypes as dt
from ir import serialize
from ir.graph import Graph
from ir.registry import REGISTRY

from .._tensor import Tensor

FORMAT = "gcompile.exported_program"
VERSION = 1
_SCALAR_CONSTS = (type(None), bool, int, float, str)


class Dim:
    """A dimension whose size may change between calls (``torch.export.Dim``)."""

    def __init__(self, name: str, *, min: int = 2, max: int = 2 ** 62) -> None:  # noqa: A002
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"Dim: name must be an identifier, got {name!r}")
        if min < 2:
            raise ValueError(f"Dim {name!r}: min must be at least 2 (sizes 0 and 1 are "
                             "specialised, as in torch.export), got {min}")
        if max < min:
            raise ValueError(f"Dim {name!r}: max {max} is smaller than min {min}")
        self.name, self.min, self.max = name, int(min), int(max)

    def __repr__(self) -> str:
        return f"Dim({self.name!r}, min={self.min}, max={self.max})"


# ---- pytree specs as JSON ---------------------------------------------------------------
def _spec_to_json(spec, where: str) -> Any:
    """The compiler's pytree spec (``compiler.api._flatten``) as JSON."""
    tag = spec[0]
    if tag == "T":
        return {"tensor": spec[1]}
    if tag in ("U", "L"):
        return {"tuple" if tag == "U" else "list":
                [_spec_to_json(s, f"{where}[{i}]") for i, s in enumerate(spec[1])]}
    if tag == "N":
        cls = spec[1]
        return {"namedtuple": cls.__name__, "fields": list(cls._fields),
                "items": [_spec_to_json(s, f"{where}.{f}") for f, s in zip(cls._fields, spec[2])]}
    if tag == "D":
        for k, _ in spec[1]:
            if not isinstance(k, (str, int)) or isinstance(k, bool):
                raise TypeError(f"gcompile.export: {where} has a dict key {k!r} of type "
                                f"{type(k).__name__}; only str and int keys can be exported")
        return {"dict": [[k, _spec_to_json(s, f"{where}[{k!r}]")] for k, s in spec[1]]}
    v = spec[1]
    if not isinstance(v, _SCALAR_CONSTS) or (isinstance(v, float) and not np.isfinite(v)):
        raise TypeError(f"gcompile.export: {where} is a {type(v).__name__} ({v!r:.60}); only "
                        "tensors, None, bool, int, finite float and str can be exported")
    return {"const": v}


def _spec_from_json(j: Any, where: str, n_leaves: int) -> Any:
    """Validate a JSON spec (errors name the field); returns it unchanged."""
    if not isinstance(j, dict) or len(j) not in (1, 3):
        raise _bad(where, f"expected a one-key spec object, got {j!r:.80}")
    if "tensor" in j:
        if type(j["tensor"]) is not int or not 0 <= j["tensor"] < n_leaves:
            raise _bad(f"{where}.tensor", f"not a tensor index below {n_leaves}")
    elif "tuple" in j or "list" in j:
        kids = j.get("tuple", j.get("list"))
        if not isinstance(kids, list):
            raise _bad(where, "children must be a list")
        for i, k in enumerate(kids):
            _spec_from_json(k, f"{where}[{i}]", n_leaves)
    elif "namedtuple" in j:
        f, items = j.get("fields"), j.get("items")
        if not (isinstance(j["namedtuple"], str) and j["namedtuple"].isidentifier()
                and isinstance(f, list) and all(isinstance(x, str) and x.isidentifier()
                                                for x in f)
                and isinstance(items, list) and len(items) == len(f)):
            raise _bad(where, "malformed namedtuple spec")
        for i, k in enumerate(items):
            _spec_from_json(k, f"{where}.{f[i]}", n_leaves)
    elif "dict" in j:
        if not isinstance(j["dict"], list):
            raise _bad(where, "dict items must be a list")
        for i, kv in enumerate(j["dict"]):
            if not (isinstance(kv, list) and len(kv) == 2 and isinstance(kv[0], (str, int))):
                raise _bad(f"{where}.dict[{i}]", "expected [key, spec]")
            _spec_from_json(kv[1], f"{where}[{kv[0]!r}]", n_leaves)
    elif "const" in j:
        if not isinstance(j["const"], _SCALAR_CONSTS):
            raise _bad(f"{where}.const", f"not a plain constant: {j['const']!r:.60}")
    else:
        raise _bad(where, f"unknown spec kind {sorted(j)}")
    return j


def _unflatten(j: Any, leaves: list) -> Any:
    if "tensor" in j:
        return leaves[j["tensor"]]
    if "tuple" in j:
        return tuple(_unflatten(k, leaves) for k in j["tuple"])
    if "list" in j:
        return [_unflatten(k, leaves) for k in j["list"]]
    if "namedtuple" in j:
        cls = collections.namedtuple(j["namedtuple"], j["fields"])
        return cls(*[_unflatten(k, leaves) for k in j["items"]])
    if "dict" in j:
        return {k: _unflatten(v, leaves) for k, v in j["dict"]}
    return j["const"]


def _flatten_json(obj: Any, leaves: list, where: str) -> Any:
    from ..compiler.api import _flatten
    return _spec_to_json(_flatten(obj, leaves), where)


class ExportFormatError(RuntimeError):
    """An export file (or one of its fields) is malformed; the message names the field."""


def _bad(field: str, why: str) -> ExportFormatError:
    return ExportFormatError(f"gcompile.load: exported program field {field!r}: {why}")


# ---- the program ------------------------------------------------------------------------
class ExportedProgram:
    """A traced, optimised graph with its weights and input/output specs; call it like
    the original function (tensors laid out as in the example inputs)."""

    def __init__(self, graph_json: dict, bindings: list[dict], weights: dict[str, Tensor],
                 in_spec: Any, inputs: list[dict], out_spec: Any, dims: dict[str, dict],
                 patches: list[list], kernels: list[dict] | None = None) -> None:
        self._graph_json = graph_json
        self.bindings = bindings      # per graph input: {"arg": i} | {"weight": name}
        self.weights = weights
        self.in_spec = in_spec
        self.inputs = inputs          # per tensor leaf: {"shape", "dtype", "dims"}
        self.out_spec = out_spec
        self.dims = dims              # Dim name -> {"min", "max", "example"}
        self.patches = patches        # [path, dim name, step]: a size that follows a Dim
        self.kernels = kernels or []
        self.kernel_report: dict[str, int] = {}
        self._executors: dict[tuple, Any] = {}
        self._graphs: dict[tuple, Any] = {}

    # ---- the graph -----------------------------------------------------------------
    def _sizes_key(self, sizes: dict[str, int]) -> tuple:
        return tuple(sizes[d] for d in sorted(self.dims))

    def graph_for(self, sizes: dict[str, int] | None = None):
        """The ``ir.Graph`` for the given dynamic sizes (the example sizes by default)."""
        sizes = sizes or {d: info["example"] for d, info in self.dims.items()}
        key = self._sizes_key(sizes)
        g = self._graphs.get(key)
        if g is None:
            d = self._graph_json
            if self.patches and any(sizes[n] != self.dims[n]["example"] for n in self.dims):
                d = copy.deepcopy(d)
                for path, name, step in self.patches:
                    if step != "fill":
                        _patch(d, path, step * (sizes[name] - self.dims[name]["example"]))
                for path, _, step in self.patches:
                    if step == "fill":  # a constant filled with one value, at its new shape
                        _refill(d["constants"][path[1]])
            try:
                g = serialize.from_dict(d)
            except serialize.GraphFormatError as e:
                raise RuntimeError(f"gcompile.export: the graph does not hold for sizes "
                                   f"{sizes} ({e})") from None
            if len(self._graphs) >= 8:
                self._graphs.pop(next(iter(self._graphs)))
            self._graphs[key] = g
        return g

    @property
    def graph(self):
        """The optimised IR graph (at the example sizes)."""
        return self.graph_for()

    def state_dict(self) -> dict[str, Tensor]:
        """The weights the graph reads (parameters, buffers, captured tensors)."""
        return dict(self.weights)

    def _executor(self, sizes: dict[str, int]):
        key = self._sizes_key(sizes)
        ex = self._executors.get(key)
        if ex is None:
            from ..compiler.backend import build_executable
            ex = build_executable(self.graph_for(sizes).copy())
            if len(self._executors) >= 8:
                self._executors.pop(next(iter(self._executors)))
            self._executors[key] = ex
        return ex

    # ---- calling -------------------------------------------------------------------
    def _check_inputs(self, args: tuple) -> tuple[list[Tensor], dict[str, int]]:
        leaves: list[Tensor] = []
        try:
            spec = _flatten_json(tuple(args), leaves, "inputs")
        except TypeError as e:
            raise TypeError(str(e).replace("gcompile.export:", "ExportedProgram:")) from None
        if spec != self.in_spec:
            raise TypeError(f"ExportedProgram: expected inputs structured as "
                            f"{_describe(self.in_spec)}, got {_describe(spec)}")
        sizes: dict[str, int] = {}
        for i, (t, info) in enumerate(zip(leaves, self.inputs)):
            if t.dtype.name != info["dtype"]:
                raise TypeError(f"ExportedProgram: input tensor {i}: expected dtype "
                                f"{info['dtype']}, got {t.dtype.name}")
            shape, want = tuple(t.shape), info["shape"]
            dims = {int(k): v for k, v in info["dims"].items()}
            if len(shape) != len(want) or any(
                    s != w for a, (s, w) in enumerate(zip(shape, want)) if a not in dims):
                shown = [dims.get(a, w) for a, w in enumerate(want)]
                raise RuntimeError(f"ExportedProgram: input tensor {i}: expected shape "
                                   f"{shown}, got {list(shape)}")
            for a, name in dims.items():
                s, d = shape[a], self.dims[name]
                if sizes.setdefault(name, s) != s:
                    raise RuntimeError(f"ExportedProgram: dimension {name!r} is "
                                       f"{sizes[name]} in one input and {s} in input "
                                       f"tensor {i} (dim {a})")
                if not d["min"] <= s <= d["max"]:
                    raise RuntimeError(f"ExportedProgram: input tensor {i} dim {a} "
                                       f"({name!r}) is {s}, outside [{d['min']}, {d['max']}]")
        return leaves, sizes

    def __call__(self, *args: Any) -> Any:
        """Run the program on ``args`` (laid out like the example inputs)."""
        leaves, sizes = self._check_inputs(args)
        for name, info in self.dims.items():
            sizes.setdefault(name, info["example"])
        arrays = []
        for b in self.bindings:
            if "arg" in b:
                arrays.append(leaves[b["arg"]]._data)
            else:
                arrays.append(self.weights[b["weight"]]._data)
        outs = self._executor(sizes)(arrays)
        return _unflatten(self.out_spec, [Tensor._make(a) for a in outs])

    def module(self) -> Callable[..., Any]:
        """A plain callable running this program (``torch.export``'s ``.module()``)."""
        return self.__call__

    def save(self, path: Any, *, kernels: bool = True) -> None:
        """Write this program to ``path`` (see :func:`save`)."""
        save(self, path, kernels=kernels)

    def __repr__(self) -> str:
        ins = ", ".join(i["dtype"] + str([i["dims"].get(str(a), s)
                                          for a, s in enumerate(i["shape"])])
                        for i in self.inputs)
        g = self._graph_json
        kern = f", {len(self.kernels)} stored kernels" if self.kernels else ""
        return (f"ExportedProgram({g.get('name', 'graph')}: inputs ({ins}), "
                f"{len(g['nodes'])} nodes, {len(self.weights)} weights{kern})")

    def __str__(self) -> str:
        return repr(self) + "\n" + str(self.graph)


def _describe(spec: Any) -> str:
    if "tensor" in spec:
        return "Tensor"
    if "tuple" in spec:
        inner = ", ".join(_describe(k) for k in spec["tuple"])
        return f"({inner}{',' if len(spec['tuple']) == 1 else ''})"
    if "list" in spec:
        return "[" + ", ".join(_describe(k) for k in spec["list"]) + "]"
    if "namedtuple" in spec:
        return spec["namedtuple"] + "(" + ", ".join(_describe(k) for k in spec["items"]) + ")"
    if "dict" in spec:
        return "{" + ", ".join(f"{k!r}: {_describe(v)}" for k, v in spec["dict"]) + "}"
    return repr(spec["const"])


def _uniform(cd: dict) -> bytes | None:
    """The one value (as bytes) every element of a serialised constant holds, else None."""
    import base64
    try:
        raw = base64.b64decode(cd["data"])
        size = np.dtype(dt.as_dtype(cd["dtype"]).np).itemsize
    except (KeyError, TypeError, ValueError):
        return None
    if not raw or len(raw) % size or raw != raw[:size] * (len(raw) // size):
        return None
    return raw[:size]


def _refill(cd: dict) -> None:
    """Rewrite a uniform constant's data for its (patched) shape."""
    import base64
    value = _uniform(cd)
    if value is None:
        raise ExportFormatError(f"gcompile.export: constant {cd.get('name')!r} is not uniform")
    n = int(np.prod(cd["shape"], dtype=np.int64))
    cd["data"] = base64.b64encode(value * n).decode("ascii")


def _patch(d: Any, path: list, delta: int) -> None:
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = d[path[-1]] + delta


# ---- export -----------------------------------------------------------------------------
def _trace(fn_or_module: Any, args: tuple):
    """Trace ``fn_or_module(*args)`` with the compiler (fullgraph, no grad): its entry,
    the module's parameters and the traced result."""
    from ..autograd import no_grad
    from ..compiler.api import _module_params
    cf = compiled_function(fn_or_module, "gcompile.export")
    with no_grad():
        result = cf.call_until_planned(*args)
    if not cf.entries:
        raise RuntimeError("gcompile.export: the function could not be captured as one graph "
                           "(it creates tensors that outlive the call, e.g. new state)")
    entry = cf.entries[-1]
    if getattr(entry, "writebacks", None):
        raise NotImplementedError(
            "gcompile.export: the function writes to its inputs or to module state (e.g. "
            "BatchNorm running statistics in training mode); call model.eval() or export a "
            "function without in-place writes to its inputs")
    return entry, _module_params(cf._module), result


def unwrap(obj: Any) -> Any:
    """The user's function or module behind ``compile()``'s wrappers."""
    from ..compiler.api import CompiledFunction
    for _ in range(8):
        if isinstance(obj, CompiledFunction):
            obj = obj._module if obj._module is not None else obj._fn
        elif "_orig_mod" in getattr(obj, "__dict__", {}):
            obj = obj.__dict__["_orig_mod"]
        else:
            return obj
    return obj


def compiled_function(fn_or_module: Any, who: str, backend: str = "plan"):
    """A fresh ``CompiledFunction`` (fullgraph) over ``fn_or_module``, whatever
    ``compile()`` returns for modules."""
    from ..compiler.api import CompiledFunction
    obj = unwrap(fn_or_module)
    is_module = hasattr(obj, "forward") and (hasattr(obj, "named_parameters")
                                             or hasattr(obj, "parameters"))
    if is_module:
        return CompiledFunction(obj if callable(obj) else obj.forward, obj, fullgraph=True,
                                backend=backend)
    if not callable(obj):
        raise TypeError(f"{who}: expected a function or a module, got {type(obj).__name__}")
    return CompiledFunction(obj, fullgraph=True, backend=backend)


def _graph_and_bindings(entry, params):
    bindings: list[dict] = []
    weights: dict[str, Tensor] = {}
    for kind, i in entry.input_map:
        if kind == "arg":
            bindings.append({"arg": i})
            continue
        if kind == "param":
            name, t = params[i]
        elif kind == "live":
            name, t = f"_constant{i}", entry.live[i][0]
        else:  # a Python number read at run time (an optimizer's lr): frozen now
            name = f"_scalar{i}"
            t = Tensor._make(np.asarray(float(entry.scalars[i]()), np.float64))
        weights[name] = Tensor._make(np.array(t._data, copy=True))
        bindings.append({"weight": name})
    return serialize.to_dict(portable(entry.graph)), bindings, weights


def portable(graph: Graph) -> Graph:
    """``graph`` as a process that never ran the user's code can load it: nodes of ops
    registered at run time (not built in) become their decompositions' primitives, in a
    copy. An op with no decomposition stays (loading then names it)."""
    from ir.ops import BUILTIN
    from ir.passes.decompose import decompose_while

    def wanted(n):
        return n.op not in BUILTIN and REGISTRY[n.op].decomposition is not None
    if not any(wanted(n) for n in graph.nodes):
        return graph
    graph = graph.copy()
    decompose_while(graph, wanted)
    return graph


def _normalise_dynamic(fn: Any, args: tuple, dynamic_shapes: Any) -> list[dict[int, Dim]]:
    """Per positional argument, {dim: Dim}; accepts torch's forms (a tuple/list aligned
    with the arguments, or a dict keyed by parameter name; each entry None or
    {dim: Dim | str | None})."""
    if dynamic_shapes is None:
        return [{} for _ in args]
    if isinstance(dynamic_shapes, dict):
        target = fn.forward if hasattr(fn, "forward") else fn
        names = [p.name for p in inspect.signature(target).parameters.values()
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)][:len(args)]
        unknown = set(dynamic_shapes) - set(names)
        if unknown:
            raise ValueError(f"gcompile.export: dynamic_shapes names {sorted(unknown)}, which "
                             f"are not parameters of the function {names}")
        per_arg = [dynamic_shapes.get(n) for n in names]
    elif isinstance(dynamic_shapes, (tuple, list)):
        if len(dynamic_shapes) != len(args):
            raise ValueError(f"gcompile.export: dynamic_shapes has {len(dynamic_shapes)} "
                             f"entries for {len(args)} example inputs")
        per_arg = list(dynamic_shapes)
    else:
        raise TypeError("gcompile.export: dynamic_shapes must be None, a tuple/list aligned "
                        f"with the inputs, or a dict by parameter name, got "
                        f"{type(dynamic_shapes).__name__}")
    out: list[dict[int, Dim]] = []
    for i, (a, spec) in enumerate(zip(args, per_arg)):
        if spec is None:
            out.append({})
            continue
        if not isinstance(a, Tensor) or not isinstance(spec, dict):
            raise NotImplementedError(
                f"gcompile.export: dynamic_shapes[{i}]: only a {{dim: Dim}} dict for a tensor "
                "argument is supported (not nested inputs)")
        dims: dict[int, Dim] = {}
        for k, v in spec.items():
            if v is None:
                continue
            if not isinstance(k, int) or not -a.dim() <= k < a.dim():
                raise ValueError(f"gcompile.export: dynamic_shapes[{i}]: dim {k!r} is out of "
                                 f"range for a {a.dim()}-d input")
            dims[k % a.dim()] = v if isinstance(v, Dim) else Dim(str(v))
        out.append(dims)
    return out


def _resized(args: tuple, dyn: list[dict[int, Dim]], name: str, extra: int) -> tuple:
    """The example inputs with every dimension tied to ``name`` grown by ``extra``
    (rows repeated, so the values stay ones the function accepts)."""
    out = []
    for a, dims in zip(args, dyn):
        if isinstance(a, Tensor):
            arr = a._data
            for ax, d in dims.items():
                if d.name == name:
                    n = arr.shape[ax]
                    arr = np.take(arr, np.arange(n + extra) % n, axis=ax)
            if arr is not a._data:
                a = Tensor._make(np.ascontiguousarray(arr))
        out.append(a)
    return tuple(out)


def _size_paths(a: Any, b: Any, c: Any, path: list, out: list, name: str) -> None:
    """Walk three graph dicts traced at sizes n, n+1, n+2 of Dim ``name``: every
    integer that changes must change by the same step (a size that follows the
    dimension); anything else that changes cannot be exported as dynamic."""
    if isinstance(a, dict):
        if not (isinstance(b, dict) and isinstance(c, dict) and a.keys() == b.keys() == c.keys()):
            raise _not_dynamic(name, path, "the graph's structure changes with the size")
        keys = list(a)
        if len(path) == 2 and path[0] == "constants" and "data" in a and not (
                a["data"] == b["data"] == c["data"]):
            # a constant made from the size (an LSTM's zero initial state): fine when it
            # holds one value throughout, regenerated at the new shape
            va = _uniform(a)
            if va is None or va != _uniform(b) or va != _uniform(c):
                raise _not_dynamic(name, path + ["data"], "a constant whose values change "
                                   "with the size")
            out.append([path + ["data"], name, "fill"])
            keys.remove("data")
        for k in keys:
            _size_paths(a[k], b[k], c[k], path + [k], out, name)
    elif isinstance(a, list):
        if not (isinstance(b, list) and isinstance(c, list) and len(a) == len(b) == len(c)):
            raise _not_dynamic(name, path, "the graph's structure changes with the size")
        for k in range(len(a)):
            _size_paths(a[k], b[k], c[k], path + [k], out, name)
    elif a == b == c and type(a) is type(b) is type(c):
        return
    elif all(type(x) is int for x in (a, b, c)) and b - a == c - b:
        out.append([path, name, b - a])
    else:
        raise _not_dynamic(name, path, f"it takes the values {a!r:.40}, {b!r:.40}, {c!r:.40} "
                           "at three sizes, not a size that follows the dimension")


def _not_dynamic(name: str, path: list, why: str) -> NotImplementedError:
    where = "graph" + "".join(f"[{k!r}]" for k in path)
    return NotImplementedError(f"gcompile.export: dimension {name!r} cannot be dynamic: {where}: "
                               f"{why} (e.g. a constant or a float computed from the size)")


def export(fn_or_module: Any, *example_inputs: Any, dynamic_shapes: Any = None
           ) -> ExportedProgram:
    """Trace ``fn_or_module(*example_inputs)`` into one optimised graph (no graph breaks,
    grad off) and return it with its weights, specs and kernels as an ``ExportedProgram``.

    ``dynamic_shapes`` marks dimensions whose size may change (``{0: Dim("batch")}`` per
    argument, or by parameter name). Graphs carry concrete shapes, so the function is
    traced at three sizes of the dimension and every size in the graph must follow it
    linearly (a batch dimension does); anything else raises NotImplementedError naming
    the graph field. One distinct dynamic dimension is supported.
    """
    args = tuple(example_inputs)
    if len(args) == 1 and isinstance(args[0], tuple) and not isinstance(args[0], Tensor) and \
            _wants_tuple(fn_or_module, args[0]):
        args = args[0]  # torch.export(model, (x,)) form
    dyn = _normalise_dynamic(fn_or_module, args, dynamic_shapes)
    names = sorted({d.name for dims in dyn for d in dims.values()})
    if len(names) > 1:
        raise NotImplementedError(f"gcompile.export: {len(names)} distinct dynamic dimensions "
                                  f"{names}; one is supported (sizes that follow the product of "
                                  "two dimensions cannot be re-derived from a concrete graph)")
    leaves: list[Tensor] = []
    in_spec = _flatten_json(args, leaves, "inputs")
    entry, params, result = _trace(fn_or_module, args)
    out_leaves: list[Tensor] = []
    out_spec = _flatten_json(result, out_leaves, "outputs")
    graph_json, bindings, weights = _graph_and_bindings(entry, params)
    dims: dict[str, dict] = {}
    patches: list[list] = []
    inputs = [{"shape": list(t.shape), "dtype": t.dtype.name, "dims": {}} for t in leaves]
    arg_leaf = _arg_leaf_index(args)
    for i, d_of in enumerate(dyn):
        for ax, d in d_of.items():
            size = args[i].shape[ax]
            if size < 2:
                raise ValueError(f"gcompile.export: dynamic dimension {d.name!r} has size {size} "
                                 "in the example; give an example of size 2 or more")
            if not d.min <= size <= d.max:
                raise ValueError(f"gcompile.export: dynamic dimension {d.name!r} has size {size} "
                                 f"in the example, outside [{d.min}, {d.max}]")
            known = dims.setdefault(d.name, {"min": d.min, "max": d.max, "example": size})
            if known["example"] != size:
                raise ValueError(f"gcompile.export: dynamic dimension {d.name!r} has sizes "
                                 f"{known['example']} and {size} in the example inputs")
            inputs[arg_leaf[i]]["dims"][str(ax)] = d.name
    if names:
        _check_symbolic(fn_or_module, args, dyn)
    for name in names:
        g1 = _trace(fn_or_module, _resized(args, dyn, name, 1))[0]
        g2 = _trace(fn_or_module, _resized(args, dyn, name, 2))[0]
        _size_paths(graph_json, serialize.to_dict(portable(g1.graph)),
                    serialize.to_dict(portable(g2.graph)), [], patches, name)
    for path, name, _ in patches:
        if path[0] == "inputs" and "weight" in bindings[path[1]]:
            raise NotImplementedError(f"gcompile.export: dimension {name!r} cannot be dynamic: "
                                      f"the captured tensor {bindings[path[1]]['weight']!r} "
                                      "changes shape with it (make it an input)")
    ep = ExportedProgram(graph_json, bindings, weights, in_spec, inputs, out_spec, dims, patches)
    ep._executors[ep._sizes_key({d: i["example"] for d, i in dims.items()})] = entry.executable
    ep._graphs[ep._sizes_key({d: i["example"] for d, i in dims.items()})] = entry.graph
    ep._example = (args, out_leaves)
    return ep


def _wants_tuple(fn: Any, arg: tuple) -> bool:
    """``export(model, (x,))`` / ``export(f, (x, y))``, torch.export's form: the tuple is
    the argument list, unless the function takes exactly one argument and the tuple
    holds several tensors (then it is that one tuple argument)."""
    target = fn.forward if hasattr(fn, "forward") else fn
    try:
        params = [p for p in inspect.signature(target).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return True
    return all(isinstance(a, Tensor) for a in arg) and (len(params) != 1 or len(arg) == 1)


def _check_symbolic(fn_or_module: Any, args: tuple, dyn: list[dict[int, Dim]]) -> None:
    """Trace once with the dynamic dimensions symbolic (``compiler/dynamic.py``): a
    branch taken on their size (``min(x.shape[0], 5)``, ``if n > 4``) or a size baked in
    would make the graph wrong at other sizes, though three traces at nearby sizes agree
    (they all take the same branch), so either is an error here, naming the guard."""
    from ..autograd import no_grad
    from ..compiler.dynamic import DynamicEntry
    cf = compiled_function(fn_or_module, "gcompile.export")
    _key, leaves, params = cf._signature(args, {})
    arg_leaf = _arg_leaf_index(args)
    dims = {arg_leaf[i]: tuple(sorted(d)) for i, d in enumerate(dyn) if d and i in arg_leaf}
    names = {(arg_leaf[i], ax): d.name for i, d_of in enumerate(dyn) for ax, d in d_of.items()
             if i in arg_leaf}
    with no_grad():
        _, entry, _ = cf._trace("export", leaves, params, args, {}, dims)
    if isinstance(entry, DynamicEntry):
        guards = entry.env.describe_guards()
        if not guards:
            return
        sym = {s: names.get(src, s) for s, src in entry.sources.items()}
        shown = "; ".join(guards)
        for s, n in sorted(sym.items(), key=lambda kv: -len(kv[0])):
            shown = shown.replace(s, n)
        raise NotImplementedError(f"gcompile.export: the program depends on the dynamic "
                                  f"sizes: it holds only where {shown} (a branch or a size "
                                  "taken from them); export with static sizes, or make the "
                                  "code size-independent")
    raise NotImplementedError("gcompile.export: the dynamic dimensions "
                              f"{sorted(set(names.values()))} cannot be dynamic: the traced "
                              "code turns their size into a fixed number (int(), a Python "
                              "float, a loop over it)")


def _arg_leaf_index(args: tuple) -> dict[int, int]:
    """Positional argument index -> its leaf index, for tensor arguments."""
    out, k = {}, 0
    for i, a in enumerate(args):
        leaves: list = []
        _flatten_json(a, leaves, f"inputs[{i}]")
        if isinstance(a, Tensor):
            out[i] = k
        k += len(leaves)
    return out


# ---- kernels in the file ----------------------------------------------------------------
def _collect_kernels(ep: ExportedProgram) -> list[dict]:
    """Every kernel variant the example-size plan has loaded, and the hand-written native
    kernels its library and matmul steps' ops have loaded (a matmul step's bound GEMM
    call, ``kernels.cpu.bound_gemm``): its source, and its machine code when the
    kernel cache holds a signed, intact entry for it."""
    from kernels import cache as kcache
    ex = ep._executor({d: i["example"] for d, i in ep.dims.items()})
    if not getattr(ep, "_ran", False):
        example = getattr(ep, "_example", None)
        if example is not None:
            ep(*example[0])  # loads the variants the plan uses
        ep._ran = True
    from kernels.cpu.handwritten import loaded_for
    sources = []
    for step in ex.plan.steps:
        k = step.kernel
        if step.kind in ("library", "matmul"):  # native kernels serving the step's op
            sources += [nk.source for n in step.nodes for nk in loaded_for(n.op)]
        if step.kind != "kernel" or not hasattr(k, "_fns"):
            continue
        sources += [k._sources[variant].source for variant in list(k._fns)]
    out, seen = [], set()
    for src in sources:
        if src in seen:
            continue
        seen.add(src)
        stored = kcache.load_object(src)
        if stored is None:
            continue
        obj, head = stored
        out.append({"source": src, "header": json.dumps(head, sort_keys=True),
                    "object": Tensor._make(np.frombuffer(obj, np.uint8).copy())})
    return out


def _install_kernels(records: list[dict], trusted: bool) -> dict[str, int]:
    """Put verified stored machine code into the kernel cache (module docstring)."""
    from kernels import cache as kcache
    report = {"stored": len(records), "installed": 0, "other_machine": 0, "unsigned": 0}
    if not records:
        return report
    key = kcache._key()
    for rec in records:
        src, head = rec["source"], json.loads(rec["header"])
        obj = rec["object"]._data.tobytes()
        if head.get("module") != kcache.module_name(src):
            report["other_machine"] += 1  # another CPU or library versions: recompile
            continue
        signed = key is not None and isinstance(head.get("hmac"), str) and hmac.compare_digest(
            head["hmac"], kcache._tag(key, src, head, obj))
        if not signed and not trusted:
            report["unsigned"] += 1
            continue
        if key is None:
            continue
        if kcache.load_object(src) is None:
            path = kcache.cache_dir() / f"{kcache.module_name(src)}.py"
            try:
                if not path.exists() or path.read_text(encoding="utf-8") != src:
                    kcache._atomic_write(path, src.encode("utf-8"))
            except OSError:
                continue
            meta = {k: head[k] for k in ("symbol", "nargs", "externals")}
            kcache.store_object(src, obj, meta)
        report["installed"] += 1
    return report


# ---- save / load ------------------------------------------------------------------------
def save(ep: ExportedProgram, path: Any, *, kernels: bool = True) -> None:
    """Write ``ep`` to ``path`` as one checksummed safetensors file (atomically);
    ``kernels=False`` leaves the kernels' source and machine code out."""
    from ..serialization import save as _save
    if not isinstance(ep, ExportedProgram):
        raise TypeError(f"gcompile.export.save: expected an ExportedProgram, got "
                        f"{type(ep).__name__}")
    recs = (ep.kernels or _collect_kernels(ep)) if kernels else []
    program = {"bindings": ep.bindings, "in_spec": ep.in_spec, "inputs": ep.inputs,
               "out_spec": ep.out_spec, "dims": ep.dims, "patches": ep.patches}
    _save({"format": FORMAT, "version": VERSION,
           "graph": json.dumps(ep._graph_json, separators=(",", ":")),
           "program": json.dumps(program, separators=(",", ":")),
           "weights": dict(ep.weights), "kernels": list(recs)}, path)


def is_exported(obj: Any) -> bool:
    """Whether a loaded checkpoint is an exported program."""
    return isinstance(obj, dict) and obj.get("format") == FORMAT


def load_program(tree: dict, *, trust_kernels: bool = False) -> ExportedProgram:
    """An ``ExportedProgram`` from a loaded checkpoint tree; every field is validated."""
    def field(d: dict, key: str, typ, where: str):
        if not isinstance(d, dict) or key not in d:
            raise _bad(f"{where}{key}", "missing")
        v = d[key]
        if not isinstance(v, typ) or (typ is int and isinstance(v, bool)):
            raise _bad(f"{where}{key}", f"expected {typ.__name__}, got {type(v).__name__}")
        return v

    if field(tree, "version", int, "") > VERSION:
        raise _bad("version", f"{tree['version']} is newer than this gcompile's {VERSION}")
    try:
        graph_json = json.loads(field(tree, "graph", str, ""))
        program = json.loads(field(tree, "program", str, ""))
    except json.JSONDecodeError as e:
        raise _bad("graph/program", f"not valid JSON ({e})") from None
    try:
        graph = serialize.from_dict(graph_json)
    except serialize.GraphFormatError as e:
        raise _bad("graph", str(e)) from None
    weights = field(tree, "weights", dict, "")
    for k, w in weights.items():
        if not isinstance(w, Tensor):
            raise _bad(f"weights.{k}", f"expected a tensor, got {type(w).__name__}")
    bindings = field(program, "bindings", list, "program.")
    inputs = field(program, "inputs", list, "program.")
    dims = field(program, "dims", dict, "program.")
    patches = field(program, "patches", list, "program.")
    if len(bindings) != len(graph.inputs):
        raise _bad("program.bindings", f"{len(bindings)} bindings for {len(graph.inputs)} graph "
                   "inputs")
    for i, t in enumerate(inputs):
        where = f"program.inputs[{i}]."
        shape = field(t, "shape", list, where)
        if not all(type(s) is int and s >= 0 for s in shape):
            raise _bad(f"{where}shape", f"not a shape: {shape!r:.60}")
        try:
            dt.as_dtype(field(t, "dtype", str, where))
        except TypeError as e:
            raise _bad(f"{where}dtype", str(e)) from None
        for ax, name in field(t, "dims", dict, where).items():
            if not (ax.isdigit() and int(ax) < len(shape) and name in dims):
                raise _bad(f"{where}dims", f"dimension {ax}: {name!r} is not a declared Dim")
    for name, d in dims.items():
        for k in ("min", "max", "example"):
            field(d, k, int, f"program.dims.{name}.")
    for i, p in enumerate(patches):
        if not (isinstance(p, list) and len(p) == 3 and isinstance(p[0], list)
                and p[1] in dims and (type(p[2]) is int or p[2] == "fill")):
            raise _bad(f"program.patches[{i}]", "expected [path, dim name, step or 'fill']")
        d = graph_json
        try:
            for k in p[0][:-1]:
                d = d[k]
            if p[2] == "fill":
                if not (len(p[0]) == 3 and p[0][0] == "constants" and p[0][2] == "data"
                        and _uniform(d) is not None):
                    raise TypeError
            elif type(d[p[0][-1]]) is not int:
                raise TypeError
        except (KeyError, IndexError, TypeError):
            raise _bad(f"program.patches[{i}]", "its path is not an integer (or a uniform "
                       "constant) of the graph") from None
    for i, (b, v) in enumerate(zip(bindings, graph.inputs)):
        where = f"program.bindings[{i}]"
        if isinstance(b, dict) and type(b.get("arg")) is int and 0 <= b["arg"] < len(inputs):
            want = inputs[b["arg"]]
            if want["dtype"] != v.dtype.name or len(want["shape"]) != len(v.shape):
                raise _bad(where, f"input {b['arg']} is {want['dtype']}{want['shape']} but the "
                           f"graph reads {v.type}")
        elif isinstance(b, dict) and isinstance(b.get("weight"), str) and b["weight"] in weights:
            w = weights[b["weight"]]
            if tuple(w.shape) != v.shape or w.dtype is not v.dtype:
                raise _bad(where, f"weight {b['weight']!r} is {w.dtype.name}{list(w.shape)} but "
                           f"the graph reads {v.type}")
        else:
            raise _bad(where, f"expected {{'arg': i}} or {{'weight': name}}, got {b!r:.60}")
    n_leaves = len(inputs)
    in_spec = _spec_from_json(field(program, "in_spec", dict, "program."), "program.in_spec",
                              n_leaves)
    out_spec = _spec_from_json(field(program, "out_spec", dict, "program."),
                               "program.out_spec", len(graph.outputs))
    kernels = field(tree, "kernels", list, "")
    for i, k in enumerate(kernels):
        where = f"kernels[{i}]."
        field(k, "source", str, where)
        try:
            head = json.loads(field(k, "header", str, where))
        except json.JSONDecodeError as e:
            raise _bad(f"{where}header", f"not valid JSON ({e})") from None
        if not isinstance(head, dict):
            raise _bad(f"{where}header", "not an object")
        obj = field(k, "object", Tensor, where)
        if obj.dtype is not dt.uint8 or obj.dim() != 1:
            raise _bad(f"{where}object", "expected a 1-d uint8 tensor")
    ep = ExportedProgram(graph_json, bindings, weights, in_spec, inputs, out_spec, dims, patches,
                         kernels)
    ep._graphs[ep._sizes_key({d: i["example"] for d, i in dims.items()})] = graph
    ep.kernel_report = _install_kernels(kernels, trust_kernels)
    return ep


def load(f: Any, map_location: Any = None, pickle_module: Any = None, *,
         trust_kernels: bool = False, **kwargs: Any) -> Any:
    """``gcompile.load``: a checkpoint's contents, or, for a file written by
    ``gcompile.export.save``, a callable ``ExportedProgram``."""
    from ..serialization import load as _load
    obj = _load(f, map_location, pickle_module, **kwargs)
    if is_exported(obj):
        return load_program(obj, trust_kernels=trust_kernels)
    return obj


__all__ = ["Dim", "ExportedProgram", "ExportFormatError", "export", "save", "load",
           "load_program", "is_exported"]
