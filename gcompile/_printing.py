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
    def __init__(self, values: np.ndarray):
        self.kind = values.dtype.kind
        prec = PRINT_OPTS["precision"]
        if self.kind == "b":
            self.fmt = lambda v: " True" if v else "False"
            self.width = 5
            return
        if self.kind in "iu":
            strs = [str(int(v)) for v in values]
            self.width = max((len(s) for s in strs), default=1)
            self.fmt = lambda v: str(int(v))
            return
        finite = values[np.isfinite(values)].astype(np.float64)
        self.int_mode = finite.size == 0 or bool(np.all(finite == np.ceil(finite)))
        self.sci = False
        if finite.size:
            nz = np.abs(finite[finite != 0])
            if nz.size:
                mx, mn = nz.max(), nz.min()
                if self.int_mode:
                    self.sci = mx > 1e8
                else:
                    self.sci = mx / mn > 1000.0 or mx > 1e8 or mn < 1e-4
        if PRINT_OPTS["sci_mode"] is not None:
            self.sci = PRINT_OPTS["sci_mode"]
        if self.sci:
            self.fmt = lambda v: _nonfinite(v) or f"{v:.{prec}e}"
        elif self.int_mode:
            self.fmt = lambda v: _nonfinite(v) or f"{v:.0f}."
        else:
            self.fmt = lambda v: _nonfinite(v) or f"{v:.{prec}f}"
        self.width = max((len(self.fmt(float(v))) for v in values), default=1)

    def __call__(self, v) -> str:
        return self.fmt(v.item() if hasattr(v, "item") else v).rjust(self.width)


def _nonfinite(v):
    if np.isnan(v):
        return "nan"
    if np.isinf(v):
        return "inf" if v > 0 else "-inf"
    return None


def _format(a: np.ndarray, f: _Formatter, indent: int, summarize: bool) -> str:
    edge = PRINT_OPTS["edgeitems"]
    if a.ndim == 0:
        return f(a)
    if a.ndim == 1:
        items = [f(v) for v in a]
        if summarize and a.shape[0] > 2 * edge:
            items = [f(v) for v in a[:edge]] + ["..."] + [f(v) for v in a[-edge:]]
        # wrap long rows like torch
        per_line = max(1, (PRINT_OPTS["linewidth"] - indent) // (f.width + 2))
        if len(items) > per_line:
            lines = [", ".join(items[i:i + per_line]) for i in range(0, len(items), per_line)]
            return "[" + (",\n" + " " * (indent + 1)).join(lines) + "]"
        return "[" + ", ".join(items) + "]"
    rows = range(a.shape[0])
    parts = []
    if summarize and a.shape[0] > 2 * edge:
        parts = [_format(a[i], f, indent + 1, summarize) for i in range(edge)] + ["..."] + \
                [_format(a[i], f, indent + 1, summarize) for i in range(a.shape[0] - edge,
                                                                        a.shape[0])]
    else:
        parts = [_format(a[i], f, indent + 1, summarize) for i in rows]
    sep = "," + "\n" * (a.ndim - 1) + " " * (indent + 1)
    return "[" + sep.join(parts) + "]"


def tensor_repr(t) -> str:
    a = t._data
    suffixes = []
    default = {dt.get_default_dtype(), dt.int64, dt.bool_}
    if a.size == 0:
        body = "[]"
        if a.ndim != 1:
            suffixes.append(f"size={tuple(a.shape)}")
    else:
        summarize = a.size > PRINT_OPTS["threshold"]
        shown = _summarized(a, PRINT_OPTS["edgeitems"]) if summarize else a.reshape(-1)
        f = _Formatter(shown)
        body = _format(a, f, len("tensor("), summarize)
    if t.dtype not in default or (t.dtype is dt.int64 and a.size == 0 and False):
        suffixes.append(f"dtype={t.dtype}")
    elif a.size == 0 and t.dtype is not dt.get_default_dtype():
        suffixes.append(f"dtype={t.dtype}")
    if t.grad_fn is not None:
        suffixes.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        suffixes.append("requires_grad=True")
    name = "Parameter containing:\ntensor" if type(t).__name__ == "Parameter" else "tensor"
    return f"{name}(" + ", ".join([body] + suffixes) + ")"
