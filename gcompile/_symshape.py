"""Symbolic sizes for dynamic-shape tracing: ``SymInt``, its expressions and guards.

A dimension traced as dynamic gets a symbol (``s0``). While the function is traced,
``x.shape`` gives a ``SymInt`` there: arithmetic on it builds an expression (a
polynomial with integer coefficients; ``//`` and ``%`` by other sizes are opaque
atoms), so a size the user computes (``x.view(b, t * 2, -1)``) is recorded in the
graph as an expression and re-evaluated for every new size. Whatever would bake the
traced value in instead (a comparison that takes a branch, ``int(t)``, ``range(t)``,
``float(t)``, NumPy) is decided on the traced value under a *guard* that a later
call must satisfy, as torch's symbolic shapes do. Symbols stand for sizes >= 2
(sizes 0 and 1 change broadcasting and are specialised), which decides
``t == 1`` or ``t > 0`` without a guard.

``SymInt`` is deliberately not an ``int`` subclass: C code (NumPy, ``range``) reads
an int subclass's value without asking it, which would bake a size in unguarded.
"""
from __future__ import annotations

import contextvars
import numbers
import operator
from collections.abc import Iterable
from typing import Any

MIN_SIZE = 2  # dynamic sizes are at least this (0 and 1 are specialised)
# the sizes of the call a dynamic entry is running (symbol -> size), for sizes the
# plan reads as numbers (``x / x.shape[0]``); unset: the traced sizes
CURRENT_SIZES: contextvars.ContextVar[dict | None] = contextvars.ContextVar(
    "gcompile_current_sizes", default=None)


class Expr:
    """sum(coef * product of atoms) + const; atoms are symbol names or opaque
    ``(op, Expr, Expr)`` tuples for ``//`` and ``%``. Immutable and hashable."""

    __slots__ = ("terms", "_key")

    def __init__(self, terms: dict[tuple, int]) -> None:
        self.terms = {m: c for m, c in terms.items() if c}
        self._key = tuple(sorted(self.terms.items(), key=repr))

    @staticmethod
    def symbol(name: str) -> Expr:
        return Expr({(name,): 1})

    @staticmethod
    def const(c: int) -> Expr:
        return Expr({(): int(c)})

    @staticmethod
    def of(v: Any) -> Expr:
        if isinstance(v, Expr):
            return v
        if isinstance(v, SymInt):
            return v.expr
        return Expr.const(v)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Expr) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    @property
    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    @property
    def value(self) -> int:
        return self.terms.get((), 0)

    def add(self, other: Expr) -> Expr:
        t = dict(self.terms)
        for m, c in other.terms.items():
            t[m] = t.get(m, 0) + c
        return Expr(t)

    def scale(self, k: int) -> Expr:
        return Expr({m: c * k for m, c in self.terms.items()})

    def mul(self, other: Expr) -> Expr:
        t: dict[tuple, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in other.terms.items():
                m = tuple(sorted(m1 + m2, key=repr))
                t[m] = t.get(m, 0) + c1 * c2
        return Expr(t)

    def atom(self, op: str, other: Expr) -> Expr:
        """``self // other`` or ``self % other``, simplified where exact."""
        if self.is_const and other.is_const:
            a, b = self.value, other.value
            return Expr.const(a // b if op == "//" else a % b)
        q = self.divide_exact(other)
        if q is not None:
            return q if op == "//" else Expr.const(0)
        return Expr({((op, self, other),): 1})

    def divide_exact(self, other: Expr) -> Expr | None:
        """``self / other`` when ``other`` is one term dividing every term of ``self``
        (``6*s0*s1 // 2*s0`` is ``3*s1``); None otherwise."""
        if len(other.terms) != 1:
            return None
        (dm, dk), = other.terms.items()
        if dk == 0:
            return None
        out: dict[tuple, int] = {}
        for m, c in self.terms.items():
            if c % dk:
                return None
            rest = list(m)
            for a in dm:
                if a not in rest:
                    return None
                rest.remove(a)
            out[tuple(rest)] = out.get(tuple(rest), 0) + c // dk
        return Expr(out)

    def symbols(self) -> set[str]:
        out: set[str] = set()
        for m in self.terms:
            for a in m:
                if isinstance(a, str):
                    out.add(a)
                else:
                    out |= a[1].symbols() | a[2].symbols()
        return out

    def evaluate(self, env: dict[str, int]) -> int:
        total = 0
        for m, c in self.terms.items():
            p = c
            for a in m:
                if isinstance(a, str):
                    p *= env[a]
                else:
                    x, y = a[1].evaluate(env), a[2].evaluate(env)
                    p *= x // y if a[0] == "//" else x % y
            total += p
        return total

    def lower_bound(self) -> int | None:
        """A lower bound with every symbol >= MIN_SIZE (None if unknown)."""
        lb = 0
        for m, c in self.terms.items():
            if m == ():
                lb += c
            elif c < 0 or any(not isinstance(a, str) for a in m):
                return None
            else:
                lb += c * MIN_SIZE ** len(m)
        return lb

    def __repr__(self) -> str:
        if not self.terms:
            return "0"
        parts = []
        for m, c in sorted(self.terms.items(), key=lambda mc: (-len(mc[0]), repr(mc[0]))):
            names = "*".join(a if isinstance(a, str) else f"({a[1]!r}{a[0]}{a[2]!r})"
                             for a in m)
            if not names:
                parts.append(str(c))
            elif c == 1:
                parts.append(names)
            else:
                parts.append(f"{c}*{names}")
        return " + ".join(parts).replace("+ -", "- ")


def size_now(e: Expr, hints: dict[str, int]) -> int:
    """``e`` at the sizes of the call being run (the traced sizes outside one)."""
    sizes = CURRENT_SIZES.get()
    return e.evaluate(sizes if sizes is not None else hints)


class ShapeEnv:
    """The symbols of one trace, their traced values, and the guards taken on them."""

    def __init__(self) -> None:
        self.hints: dict[str, int] = {}
        self.sources: dict[str, tuple[int, int]] = {}  # symbol -> (argument leaf, dim)
        # (expr, relation, expected): ``expr <relation> 0`` must evaluate to expected
        self.guards: list[tuple[Expr, str, bool]] = []
        self._seen: set = set()
        self.frozen = False

    def new_symbol(self, hint: int, source: tuple[int, int]) -> SymInt:
        name = f"s{len(self.hints)}"
        self.hints[name] = int(hint)
        self.sources[name] = source
        return SymInt(Expr.symbol(name), int(hint), self)

    def hint_of(self, e: Expr) -> int:
        return e.evaluate(self.hints)

    def freeze(self) -> None:
        """The trace is over: a SymInt that outlives it (in a saved shape, a user's
        variable) acts as its traced value and adds no guard to the finished graph."""
        self.frozen = True

    def guard(self, e: Expr, rel: str, result: bool) -> None:
        key = (e, rel)
        if not self.frozen and key not in self._seen:
            self._seen.add(key)
            self.guards.append((e, rel, result))

    def decide(self, d: Expr, rel: str) -> bool:
        """``d <rel> 0`` at the traced sizes; guarded unless it holds for every size."""
        if d.is_const:
            return _REL[rel](d.value, 0)
        lb = d.lower_bound()
        if lb is not None and lb > 0:
            return rel == "!="  # d > 0 for every size: ==, <, <= are False
        nb = d.scale(-1).lower_bound()
        if nb is not None and nb > 0:  # d < 0 for every size
            return rel in ("!=", "<", "<=")
        result = _REL[rel](self.hint_of(d), 0)
        self.guard(d, rel, result)
        return result

    def specialize(self, e: Expr) -> int:
        """The traced value of ``e``, guarded to stay that value."""
        v = self.hint_of(e)
        if not e.is_const:
            self.guard(e.add(Expr.const(-v)), "==", True)
        return v

    def failed_guard(self, env: dict[str, int]) -> str | None:
        """The first guard that ``env`` (symbol -> size) breaks, described; None if all hold."""
        for s, v in env.items():
            if v < MIN_SIZE:
                return f"size {s} = {v} is below {MIN_SIZE} (sizes 0 and 1 are specialised)"
        for e, rel, want in self.guards:
            if _REL[rel](e.evaluate(env), 0) != want:
                return f"{e!r} {rel} 0 is {not want} (traced with {want})"
        return None

    def describe_guards(self) -> list[str]:
        return [f"{e!r} {rel} 0" if want else f"not {e!r} {rel} 0"
                for e, rel, want in self.guards]


_REL = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le}


def _operand(x: Any):
    if isinstance(x, SymInt):
        return x.expr
    if isinstance(x, numbers.Integral) and not isinstance(x, bool):
        return Expr.const(int(x))
    return None


class SymInt:
    """A size that depends on dynamic dimensions (see the module docstring)."""

    __slots__ = ("expr", "hint", "env")

    def __init__(self, expr: Expr, hint: int, env: ShapeEnv) -> None:
        self.expr = expr
        self.hint = hint
        self.env = env

    @staticmethod
    def wrap(e: Expr, env: ShapeEnv) -> SymInt | int:
        return e.value if e.is_const else SymInt(e, env.hint_of(e), env)

    # ---- arithmetic that stays symbolic --------------------------------------
    def _bin(self, other, f, swap=False):
        o = _operand(other)
        if o is None:
            if not isinstance(other, numbers.Real):
                return NotImplemented  # e.g. a Tensor: its own operator takes the size
            # a float: compute on the traced value, guarded
            v = self.env.specialize(self.expr)
            return f(other, v) if swap else f(v, other)
        a, b = (o, self.expr) if swap else (self.expr, o)
        return a, b

    def __add__(self, other):
        r = self._bin(other, operator.add)
        return SymInt.wrap(r[0].add(r[1]), self.env) if isinstance(r, tuple) else r

    __radd__ = __add__

    def __sub__(self, other):
        r = self._bin(other, operator.sub)
        return SymInt.wrap(r[0].add(r[1].scale(-1)), self.env) if isinstance(r, tuple) else r

    def __rsub__(self, other):
        r = self._bin(other, operator.sub, swap=True)
        return SymInt.wrap(r[0].add(r[1].scale(-1)), self.env) if isinstance(r, tuple) else r

    def __mul__(self, other):
        r = self._bin(other, operator.mul)
        return SymInt.wrap(r[0].mul(r[1]), self.env) if isinstance(r, tuple) else r

    __rmul__ = __mul__

    def _divmod(self, other, op: str, swap: bool):
        r = self._bin(other, operator.floordiv if op == "//" else operator.mod, swap)
        if not isinstance(r, tuple):
            return r
        a, b = r
        # floor division/modulo by a size that is not a positive constant: only where
        # the divisor's sign is known (a size), else baked in under a guard
        if not (b.is_const and b.value > 0) and (b.lower_bound() or 0) <= 0:
            x, y = self.env.specialize(a), self.env.specialize(b)
            return x // y if op == "//" else x % y
        return SymInt.wrap(a.atom(op, b), self.env)

    def __floordiv__(self, other):
        return self._divmod(other, "//", False)

    def __rfloordiv__(self, other):
        return self._divmod(other, "//", True)

    def __mod__(self, other):
        return self._divmod(other, "%", False)

    def __rmod__(self, other):
        return self._divmod(other, "%", True)

    def __neg__(self):
        return SymInt.wrap(self.expr.scale(-1), self.env)

    def __pos__(self):
        return self

    # ---- comparisons: decided on the traced value, guarded -------------------------
    def _cmp(self, other, rel: str, flip: bool = False):
        o = _operand(other)
        if o is None:
            if isinstance(other, float):
                v = self.env.specialize(self.expr)
                return _REL[rel](other, v) if flip else _REL[rel](v, other)
            return NotImplemented
        d = o.add(self.expr.scale(-1)) if flip else self.expr.add(o.scale(-1))
        return self.env.decide(d, rel)

    def __eq__(self, other):
        return self._cmp(other, "==")

    def __ne__(self, other):
        return self._cmp(other, "!=")

    def __lt__(self, other):
        return self._cmp(other, "<")

    def __le__(self, other):
        return self._cmp(other, "<=")

    def __gt__(self, other):
        return self._cmp(other, "<", flip=True)

    def __ge__(self, other):
        return self._cmp(other, "<=", flip=True)

    def __bool__(self) -> bool:
        return self.env.decide(self.expr, "!=")

    # ---- everything that needs a plain number: the traced value, guarded -----------
    def __index__(self) -> int:
        return self.env.specialize(self.expr)

    __int__ = __index__

    def __float__(self) -> float:
        return float(self.env.specialize(self.expr))

    def __hash__(self) -> int:
        return hash(self.env.specialize(self.expr))

    def __abs__(self):
        return self if self.env.decide(self.expr, "<") is False else -self

    def __pow__(self, k):
        if isinstance(k, int) and not isinstance(k, bool) and 0 <= k <= 4:
            out: Any = 1
            for _ in range(k):
                out = out * self
            return out
        return self.env.specialize(self.expr) ** k

    def __truediv__(self, other):
        return self.env.specialize(self.expr) / (other.__index__() if isinstance(other, SymInt)
                                                  else other)

    def __rtruediv__(self, other):
        return other / self.env.specialize(self.expr)

    def __round__(self, ndigits=None):
        return self.env.specialize(self.expr)

    def __format__(self, spec: str) -> str:
        return format(self.env.specialize(self.expr), spec) if spec else repr(self.expr)

    def __repr__(self) -> str:
        return repr(self.expr)

    __str__ = __repr__


def is_symbolic(v: Any) -> bool:
    """Whether ``v`` (a number, or tuples/lists/dicts of them) holds a SymInt."""
    if isinstance(v, SymInt):
        return True
    if isinstance(v, (tuple, list)):
        return any(is_symbolic(x) for x in v)
    if isinstance(v, dict):
        return any(is_symbolic(x) for x in v.values())
    return False


def hints(v: Any) -> Any:
    """``v`` with every SymInt replaced by its traced value (no guard: the graph keeps
    the expression; eager code computes with the value)."""
    if isinstance(v, SymInt):
        return v.hint
    if isinstance(v, tuple):
        items = [hints(x) for x in v]
        if type(v) is tuple:
            return tuple(items)
        return type(v)(*items) if hasattr(v, "_fields") else type(v)(items)
    if isinstance(v, list):
        return [hints(x) for x in v]
    if isinstance(v, dict):
        return {k: hints(x) for k, x in v.items()}
    return v


def exprs(v: Any) -> Any:
    """``v`` with every SymInt replaced by its expression (what the graph keeps)."""
    if isinstance(v, SymInt):
        return v.expr
    if isinstance(v, (tuple, list)) and not hasattr(v, "_fields"):
        return type(v)(exprs(x) for x in v) if isinstance(v, tuple) else [exprs(x) for x in v]
    if isinstance(v, dict):
        return {k: exprs(x) for k, x in v.items()}
    return v


def evaluate(v: Any, env: dict[str, int]) -> Any:
    """``v`` (holding Exprs) at the sizes ``env``."""
    if isinstance(v, Expr):
        return v.evaluate(env)
    if isinstance(v, tuple) and not hasattr(v, "_fields"):
        return tuple(evaluate(x, env) for x in v)
    if isinstance(v, list):
        return [evaluate(x, env) for x in v]
    if isinstance(v, dict):
        return {k: evaluate(x, env) for k, x in v.items()}
    return v


def as_syms(shape: Iterable, env: ShapeEnv) -> tuple:
    """A shape of ints/Exprs as ints/SymInts (what traced code sees)."""
    return tuple(SymInt.wrap(d, env) if isinstance(d, Expr) else d for d in shape)


def canonical(v: Any) -> Any:
    """A comparable rendering of attrs holding Exprs (for comparing two traces)."""
    if isinstance(v, Expr):
        return ("expr", repr(v))
    if isinstance(v, (tuple, list)):
        return (type(v).__name__, tuple(canonical(x) for x in v))
    if isinstance(v, dict):
        return ("dict", tuple((k, canonical(x)) for k, x in sorted(v.items(), key=repr)))
    if isinstance(v, float):
        return ("float", v.hex() if v == v else "nan")
    return (type(v).__name__, repr(v))
