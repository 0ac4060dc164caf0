"""Symbolic Python numbers: values a traced function reads that may change between calls.

While a whole training step is traced, an optimizer's hyper-parameters (``lr``,
``momentum``, ``betas`` ...) come out of its param groups as ``SymScalar``s
instead of plain floats. Arithmetic between them and Python numbers stays in
Python (each result remembers how to recompute itself from the current group
values); where one meets a tensor op it becomes a 0-d graph input whose value
is recomputed on every call of the plan, so a scheduler or a hand edit changes
the compiled numbers exactly as it changes eager ones. A comparison, ``bool``
or ``float()`` needs a concrete answer: it gets one, and a guard records the
answer so that a call on which it would differ retraces instead of replaying a
plan built for the other branch.
"""
from __future__ import annotations

import math
import operator
from collections.abc import Callable
from typing import Any

__all__ = ["SymScalar", "leaf"]


class SymScalar:
    """A Python number known by how to read it: ``value`` now, ``evaluate()`` later."""

    __slots__ = ("value", "key", "evaluate", "text", "_guards")

    def __init__(self, value: float, key: tuple, evaluate: Callable[[], float], text: str,
                 guards: list) -> None:
        self.value = value
        self.key = key            # structural identity: equal keys compute equal values
        self.evaluate = evaluate  # recomputes the value from its sources, at run time
        self.text = text
        self._guards = guards     # the tracer's list of (check, expected, description)

    # ---- arithmetic: new symbolic numbers ---------------------------------------------
    def _op(self, other: Any, fn: Callable, sym: str, reflected: bool = False):
        if isinstance(other, SymScalar):
            ok, ov, oev, otext = other.key, other.value, other.evaluate, other.text
        elif isinstance(other, (int, float)):
            ok, ov, otext = ("const", type(other).__name__, other), other, repr(other)

            def oev(c=other):
                return c
        else:
            return NotImplemented
        sk, sev = self.key, self.evaluate
        if reflected:
            value = fn(ov, self.value)
            key = (sym, ok, sk)
            text = f"({otext} {sym} {self.text})"

            def evaluate():
                return fn(oev(), sev())
        else:
            value = fn(self.value, ov)
            key = (sym, sk, ok)
            text = f"({self.text} {sym} {otext})"

            def evaluate():
                return fn(sev(), oev())
        return SymScalar(value, key, evaluate, text, self._guards)

    def _unary(self, fn: Callable, sym: str):
        sev = self.evaluate
        return SymScalar(fn(self.value), (sym, self.key), lambda: fn(sev()),
                         f"{sym}({self.text})", self._guards)

    def __add__(self, o):
        return self._op(o, operator.add, "+")

    def __radd__(self, o):
        return self._op(o, operator.add, "+", True)

    def __sub__(self, o):
        return self._op(o, operator.sub, "-")

    def __rsub__(self, o):
        return self._op(o, operator.sub, "-", True)

    def __mul__(self, o):
        return self._op(o, operator.mul, "*")

    def __rmul__(self, o):
        return self._op(o, operator.mul, "*", True)

    def __truediv__(self, o):
        return self._op(o, operator.truediv, "/")

    def __rtruediv__(self, o):
        return self._op(o, operator.truediv, "/", True)

    def __floordiv__(self, o):
        return self._op(o, operator.floordiv, "//")

    def __rfloordiv__(self, o):
        return self._op(o, operator.floordiv, "//", True)

    def __mod__(self, o):
        return self._op(o, operator.mod, "%")

    def __rmod__(self, o):
        return self._op(o, operator.mod, "%", True)

    def __pow__(self, o):
        return self._op(o, operator.pow, "**")

    def __rpow__(self, o):
        return self._op(o, operator.pow, "**", True)

    def __neg__(self):
        return self._unary(operator.neg, "-")

    def __pos__(self):
        return self

    def __abs__(self):
        return self._unary(abs, "abs")

    # ---- questions that need a concrete answer: answered, and guarded ------------------
    def _decide(self, other: Any, fn: Callable, sym: str) -> bool:
        if isinstance(other, SymScalar):
            oev, ov, otext = other.evaluate, other.value, other.text
        elif isinstance(other, (int, float)):
            ov, otext = other, repr(other)

            def oev(c=other):
                return c
        else:
            return NotImplemented
        result = bool(fn(self.value, ov))
        sev = self.evaluate
        self._guards.append((lambda: bool(fn(sev(), oev())), result,
                             f"{self.text} {sym} {otext}"))
        return result

    def __eq__(self, o):  # type: ignore[override]
        return self._decide(o, operator.eq, "==")

    def __ne__(self, o):  # type: ignore[override]
        return self._decide(o, operator.ne, "!=")

    def __lt__(self, o):
        return self._decide(o, operator.lt, "<")

    def __le__(self, o):
        return self._decide(o, operator.le, "<=")

    def __gt__(self, o):
        return self._decide(o, operator.gt, ">")

    def __ge__(self, o):
        return self._decide(o, operator.ge, ">=")

    def __bool__(self) -> bool:
        return self._decide(0, operator.ne, "!=")

    def specialize(self) -> float:
        """The value as a plain number, guarded to stay exactly this value (it is
        baked into the graph: a call with another value retraces)."""
        v = self.value
        sev = self.evaluate
        self._guards.append((lambda: _same(sev(), v), True, f"{self.text} == {v!r}"))
        return v

    def __float__(self) -> float:
        return float(self.specialize())

    def __int__(self) -> int:
        return int(self.specialize())

    def __index__(self) -> int:
        return operator.index(self.specialize())

    def __round__(self, ndigits=None):
        return round(self.specialize(), ndigits)

    def __trunc__(self):
        return math.trunc(self.specialize())

    def __hash__(self) -> int:
        return hash(self.specialize())

    # ---- display: the value as traced, no guard -----------------------------------------
    def __repr__(self) -> str:
        return f"SymScalar({self.text}={self.value!r})"

    def __format__(self, spec: str) -> str:
        return format(self.value, spec)


def _same(a: Any, b: Any) -> bool:
    # 0.0 and -0.0 differ in a graph (1/x), and NaN equals itself here
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b) or (a != a and b != b)
    return type(a) is type(b) and a == b


def leaf(owner: Any, key: Any, index: int | None, guards: list, label: str) -> SymScalar:
    """The number at ``owner[key]`` (``owner[key][index]`` for a tuple such as betas),
    read again at every call."""
    if index is None:
        value = owner[key]

        def evaluate():
            return owner[key]
        text = f"{label}[{key!r}]"
    else:
        value = owner[key][index]

        def evaluate():
            return owner[key][index]
        text = f"{label}[{key!r}][{index}]"
    return SymScalar(value, ("src", id(owner), key, index), evaluate, text, guards)
