"""torch-style repr: ``tensor([1.0000, 2.5000], grad_fn=<MulBackward0>)``."""
from __future__ import annotations

import numpy as np

from ir import dtypes as dt

PRINT_OPTS = {"precision": 4, "threshold": 1000, "edgeitems": 3, "linewidth": 80,
              "sci_mode": None}


def set_printoptions(precision=None, threshold=None, edgeitems=None, linewidth=None,
                     profile=None, sci_mode=None) -> None:
    if profile == "default":
        PRINT_OPTS.update(precision=4, threshold=1000, edgeitems=3, linewidth=80)
    elif profile == "short":
        PRINT_OPTS.update(precision=2, threshold=1000, edgeitems=2, linewidth=80)
    elif profile == "full":
        PRINT_OPTS.update(precision=4, threshold=2 ** 63 - 1, edgeitems=3, linewidth=80)
    for k, v in (("precision", precision), ("threshold", threshold), ("edgeitems", edgeitems),
                 ("linewidth", linewidth)):
        if v is not None:
            PRINT_OPTS[k] = v
    PRINT_OPTS["sci_mode"] = sci_mode


def _summarized(a: np.ndarray, edge: int) -> np.ndarray:
    """The elements that will be shown, to pick a common format."""
    if a.ndim == 0:
        return a.reshape(1)
    if a.shape[0] > 2 * edge:
        parts = [_summarized(a[i], edge) for i in list(range(edge)) + list(range(-edge, 0))]
    else:
        parts = [_summarized(a[i], edge) for i in range(a.shape[0])]
    return np.concatenate(parts) if parts else np.zeros(0, a.dtype)


class _Formatter:
    """torch's ``_Formatter``: one number format (int / fixed / scientific)
    and one width for every element shown."""

    def __init__(self, values: np.ndarray):
        self.floating = values.dtype.kind == "f"
        self.int_mode = True
        self.sci_mode = False
        self.max_width = 1
        prec = PRINT_OPTS["precision"]
        if not self.floating:
            for v in values.tolist():
                self.max_width = max(self.max_width, len(_scalar_str(v)))
            return
        vals = values.astype(np.float64)
        nz = vals[np.isfinite(vals) & (vals != 0)]
        if nz.size == 0:
            if PRINT_OPTS["sci_mode"] is not None:
                self.sci_mode = PRINT_OPTS["sci_mode"]
            return
        a = np.abs(nz)
        mn, mx = float(a.min()), float(a.max())
        self.int_mode = bool(np.all(nz == np.ceil(nz)))
        if self.int_mode:
            if mx / mn > 1000.0 or mx > 1.0e8:
                self.sci_mode = True
                strs = [f"{v:.{prec}e}" for v in nz.tolist()]
            else:
                strs = [f"{v:.0f}" + " " for v in nz.tolist()]
        elif mx / mn > 1000.0 or mx > 1.0e8 or mn < 1.0e-4:
            self.sci_mode = True
            strs = [f"{v:.{prec}e}" for v in nz.tolist()]
        else:
            strs = [f"{v:.{prec}f}" for v in nz.tolist()]
        self.max_width = max(len(x) for x in strs)
        if PRINT_OPTS["sci_mode"] is not None:
            self.sci_mode = PRINT_OPTS["sci_mode"]

    @property
    def width(self) -> int:
        return self.max_width

    def __call__(self, value) -> str:
        prec = PRINT_OPTS["precision"]
        if self.floating:
            value = float(value)
            if self.sci_mode:
                ret = f"{value:{self.max_width}.{prec}e}"
            elif self.int_mode:
                ret = f"{value:.0f}"
                if not (np.isinf(value) or np.isnan(value)):
                    ret += "."
            else:
                ret = f"{value:.{prec}f}"
        else:
            ret = _scalar_str(value)
        return (self.max_width - len(ret)) * " " + ret


def _scalar_str(v) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "True" if v else "False"
    return str(int(v)) if not isinstance(v, float) else str(v)


def _vector_str(a: np.ndarray, f: _Formatter, indent: int, summarize: bool) -> str:
    edge = PRINT_OPTS["edgeitems"]
    per_line = max(1, (PRINT_OPTS["linewidth"] - indent) // (f.width + 2))
    if summarize and not edge:
        data = ["..."]
    elif summarize and a.shape[0] > 2 * edge:
        data = [f(v) for v in a[:edge].tolist()] + [" ..."] + [f(v) for v in a[-edge:].tolist()]
    else:
        data = [f(v) for v in a.tolist()]
    lines = [", ".join(data[i:i + per_line]) for i in range(0, len(data), per_line)]
    return "[" + ("," + "\n" + " " * (indent + 1)).join(lines) + "]"


def _format(a: np.ndarray, f: _Formatter, indent: int, summarize: bool) -> str:
    edge = PRINT_OPTS["edgeitems"]
    if a.ndim == 0:
        return f(a.item())
    if a.ndim == 1:
        return _vector_str(a, f, indent, summarize)
    if summarize and a.shape[0] > 2 * edge:
        parts = ([_format(a[i], f, indent + 1, summarize) for i in range(edge)] + ["..."] +
                 [_format(a[i], f, indent + 1, summarize)
                  for i in range(a.shape[0] - edge, a.shape[0])])
    else:
        parts = [_format(a[i], f, indent + 1, summarize) for i in range(a.shape[0])]
    sep = "," + "\n" * (a.ndim - 1) + " " * (indent + 1)
    return "[" + sep.join(parts) + "]"


def _add_suffixes(body: str, suffixes: list, indent: int) -> str:
    out = [body]
    last_line_len = len(body) - body.rfind("\n") + 1
    for suffix in suffixes:
        if last_line_len + len(suffix) + 2 > PRINT_OPTS["linewidth"]:
            out.append(",\n" + " " * indent + suffix)
            last_line_len = indent + len(suffix)
        else:
            out.append(", " + suffix)
            last_line_len += len(suffix) + 2
    out.append(")")
    return "".join(out)


def tensor_repr(t) -> str:
    """torch's ``Tensor.__repr__``: body, then dtype/size/grad suffixes."""
    a = t._data
    suffixes = []
    if a.__class__ is not np.ndarray:  # a CUDA tensor: printed from a host copy
        suffixes.append(f"device='{t.device}'")
        a = a.host()
    if a.dtype == np.float16 or a.dtype == dt.bfloat16.np:  # formatted from float32
        a = a.astype(np.float32)
    prefix = "tensor("
    indent = len(prefix)
    if a.size == 0:
        body = "[]"
        if a.ndim != 1:
            suffixes.append(f"size={tuple(a.shape)}")
        if t.dtype is not dt.get_default_dtype():
            suffixes.append(f"dtype={t.dtype}")
    else:
        summarize = a.size > PRINT_OPTS["threshold"]
        shown = _summarized(a, PRINT_OPTS["edgeitems"]) if summarize else a.reshape(-1)
        f = _Formatter(shown)
        body = _format(a, f, indent, summarize)
        if t.dtype not in (dt.get_default_dtype(), dt.int64, dt.bool_):
            suffixes.append(f"dtype={t.dtype}")
    if t.grad_fn is not None:
        suffixes.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        suffixes.append("requires_grad=True")
    text = prefix + _add_suffixes(body, suffixes, indent)
    if type(t).__name__ == "Parameter":
        return "Parameter containing:\n" + text
    return text
