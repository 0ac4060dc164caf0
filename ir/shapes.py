"""Shape arithmetic shared by eager execution, shape inference and codegen."""
from __future__ import annotations

from collections.abc import Sequence

Shape = tuple[int, ...]


def broadcast_shapes(*shapes: Sequence[int], op: str = "broadcast") -> Shape:
    """NumPy/torch broadcasting; the error names the op and every shape."""
    ndim = max((len(s) for s in shapes), default=0)
    out = [1] * ndim
    for s in shapes:
        off = ndim - len(s)
        for i, d in enumerate(s):
            j = off + i
            if d == 1:
                continue
            if out[j] == 1:
                out[j] = d
            elif out[j] != d:
                desc = " and ".join(str(tuple(x)) for x in shapes)
                raise RuntimeError(
                    f"{op}: shapes {desc} are not broadcastable: the size of dimension {j - ndim} "
                    f"is {out[j]} in one and {d} in another")
    return tuple(out)


def normalize_dim(dim: int, ndim: int, op: str = "") -> int:
    n = max(ndim, 1)
    if not isinstance(dim, int) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    if dim < -n or dim >= n:
        raise IndexError(f"{op}Dimension out of range (expected to be in range of [{-n}, "
                         f"{n - 1}], but got {dim})")
    return dim % n


def normalize_dims(dims, ndim: int, op: str = "") -> tuple[int, ...]:
    """None means all dims; ints or sequences are wrapped and de-duplicated."""
    if dims is None:
        return tuple(range(ndim))
    if isinstance(dims, int):
        dims = (dims,)
    out = []
    for d in dims:
        nd = normalize_dim(d, ndim, op)
        if nd in out:
            raise RuntimeError(f"{op}: dim {nd} appears multiple times in the list of dims")
        out.append(nd)
    return tuple(sorted(out))


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def contiguous_strides(shape: Sequence[int]) -> tuple[int, ...]:
    strides = []
    acc = 1
    for d in reversed(shape):
        strides.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(strides))


def infer_size(shape: Sequence[int], n: int, op: str = "view") -> Shape:
    """Resolve a single -1 in a requested shape against ``n`` elements."""
    # symbolic sizes (gcompile's SymInt, duck-typed: ir does not import it) stay as
    # they are, so a traced reshape keeps the expression
    shape = tuple(s if hasattr(s, "expr") else int(s) for s in shape)
    neg = [i for i, s in enumerate(shape) if s == -1]
    if len(neg) > 1:
        raise RuntimeError("only one dimension can be inferred")
    for s in shape:
        if s < -1:
            raise RuntimeError(f"invalid shape dimension {s}")
    if neg:
        known = numel(s for s in shape if s != -1)
        if known == 0 or n % known != 0:
            raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {n}")
        shape = shape[:neg[0]] + (n // known,) + shape[neg[0] + 1:]
    if numel(shape) != n:
        raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {n}")
    return shape


def view_strides(old_shape: Sequence[int], old_strides: Sequence[int],
                 new_shape: Sequence[int]) -> tuple[int, ...] | None:
    """Strides for viewing memory with ``new_shape`` without a copy, or None.

    The algorithm of torch's ``computeStride``: each run of new dims must map
    onto a run of old dims that is contiguous in memory.
    """
    if numel(old_shape) == 0 or len(old_shape) == 0:
        return contiguous_strides(new_shape)
    new_strides = [0] * len(new_shape)
    view_d = len(new_shape) - 1
    chunk_base = old_strides[-1] if old_strides else 1
    tensor_numel = 1
    view_numel = 1
    for tensor_d in range(len(old_shape) - 1, -1, -1):
        tensor_numel *= old_shape[tensor_d]
        if tensor_d == 0 or (old_shape[tensor_d - 1] != 1 and
                             old_strides[tensor_d - 1] != tensor_numel * chunk_base):
            while view_d >= 0 and (view_numel < tensor_numel or new_shape[view_d] == 1):
                new_strides[view_d] = view_numel * chunk_base
                view_numel *= new_shape[view_d]
                view_d -= 1
            if view_numel != tensor_numel:
                return None
            if tensor_d > 0:
                chunk_base = old_strides[tensor_d - 1]
                tensor_numel = 1
                view_numel = 1
    if view_d != -1:
        return None
    return tuple(new_strides)


def is_contiguous(shape: Sequence[int], strides: Sequence[int]) -> bool:
    expected = 1
    for d, s in zip(reversed(shape), reversed(strides)):
        if d == 1:
            continue
        if s != expected:
            return False
        expected *= d
    return True
