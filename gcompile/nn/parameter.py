"""``nn.Parameter``: a leaf tensor a Module registers as learnable."""
from __future__ import annotations

from .._tensor import Tensor, _retype


class Parameter(Tensor):
    """A Tensor that is a Module parameter. Shares ``data``'s memory and is a
    leaf with ``requires_grad=True`` (unless told otherwise)."""

    def __new__(cls, data: Tensor | None = None, requires_grad: bool = True):
        if data is None:
            from .._creation import empty
            data = empty(0)
        if not isinstance(data, Tensor):
            raise TypeError(f"Parameter expects a Tensor, got {type(data).__name__}")
        base = Tensor._make(data._data)
        base._vbox = data._vbox
        t = _retype(base, cls)
        t.requires_grad = requires_grad
        return t

    def __init__(self, data: Tensor | None = None, requires_grad: bool = True) -> None:
        pass

    def __reduce_ex__(self, proto):
        return (Parameter, (Tensor._make(self._data.copy()), self.requires_grad))


class Buffer(Tensor):
    """``nn.Buffer``: assigning one to a Module attribute registers a buffer."""

    def __new__(cls, data: Tensor | None = None, *, persistent: bool = True):
        if data is None:
            from .._creation import empty
            data = empty(0)
        t = _retype(Tensor._make(data._data), cls)
        t.persistent = persistent
        return t

    def __init__(self, data: Tensor | None = None, *, persistent: bool = True) -> None:
        pass


class UninitializedParameter(Parameter):
    """Lazy modules are not supported; this name exists for isinstance checks."""
