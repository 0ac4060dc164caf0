"""Guards: what a later call must find for a traced plan to describe it.

A guard is ``(check, expected, description)``: ``check()`` is evaluated before
a plan runs and must return ``expected``. They cover what the signature key
cannot see: branches taken on symbolic numbers, the state of every module the
trace ran (training flag, hooks, plain attributes, which parameters and
submodules it holds), the globals and closure variables the compiled function
reads, ``requires_grad`` of captured tensors and ``.grad`` presence.
"""
from __future__ import annotations

import math
import operator
import types
import weakref
from typing import Any

_SIMPLE = (bool, int, float, complex, str, bytes, type(None))
_MAX_ITEMS = 10_000  # containers compared by content up to this size


def check_guards(guards) -> str | None:
    """The description of the first guard that no longer holds (None: all hold). A
    guard over many sources gives its description as a function that names the one
    that changed."""
    for check, expected, what in guards:
        try:
            ok = check() == expected
        except Exception:  # noqa: BLE001 - a source that is gone is a failed guard
            ok = False
        if not ok:
            return what() if callable(what) else what
    return None


def unique_guards(guards: list) -> list:
    """Each guard once (a step asks ``weight_decay != 0`` once per parameter)."""
    seen: dict = {}
    for g in guards:
        seen.setdefault((g[2], repr(g[1])), g)
    return list(seen.values())


def grad_presence_guards(pairs) -> list:
    """Guards that each ``leaf.grad`` is None or not as when traced; ``pairs`` are
    (leaf weakref, was None)."""
    def present(ref):
        return lambda: ref()._grad is None
    return [(present(ref), was_none, ".grad presence changed since the step was traced")
            for ref, was_none in pairs]


def requires_grad_guard(items: list) -> tuple:
    """One guard on ``requires_grad`` of the captured tensors, ``items`` being (tensor
    weakref, traced value, name): a GPT step captures 120, and a guard for each cost
    ~0.6 us on every call."""
    refs = tuple(r for r, _, _ in items)

    def check() -> tuple:
        return tuple([bool(r().requires_grad) for r in refs])

    def what() -> str:
        for r, was, name in items:
            try:
                same = bool(r().requires_grad) == was
            except Exception:  # noqa: BLE001 - the tensor is gone
                same = False
            if not same:
                return f"requires_grad of captured tensor %{name}"
        return "requires_grad of a captured tensor changed"
    return (check, tuple(w for _, w, _ in items), what)


def snapshot(v: Any, budget: list | None = None) -> Any:
    """A comparable snapshot of a plain Python value (numbers by bits, so 0.0 and
    -0.0 differ and NaN equals NaN; containers by content; anything else by
    identity). ``NotImplemented`` when the value is not worth guarding."""
    if budget is None:
        budget = [_MAX_ITEMS]
    if isinstance(v, float):
        return (float, v.hex() if math.isfinite(v) or math.isnan(v) else repr(v))
    if isinstance(v, _SIMPLE):
        return (type(v), v)
    if isinstance(v, (list, tuple, dict)):
        budget[0] -= len(v)
        if budget[0] < 0:
            return (type(v), "id", id(v), len(v))
        items = v.items() if isinstance(v, dict) else enumerate(v)
        return (type(v), tuple((k, snapshot(x, budget)) for k, x in items))
    return (type(v), "id", id(v))


def _function_reads(fn) -> list[tuple[str, Any, Any]]:
    """(description, reader, value) for each global and closure variable the code
    of ``fn`` (and of the functions defined inside it) names."""
    fn = getattr(fn, "__func__", fn)
    code = getattr(fn, "__code__", None)
    if code is None:
        return []
    out = []
    glb = getattr(fn, "__globals__", {})
    names: set[str] = set()
    stack = [code]
    while stack:
        c = stack.pop()
        names.update(c.co_names)
        stack.extend(k for k in c.co_consts if isinstance(k, types.CodeType))
    for name in sorted(names):
        if name in glb:
            out.append((f"global {name!r}", lambda n=name: glb[n], glb[name]))
    for name, cell in zip(code.co_freevars, fn.__closure__ or ()):
        try:
            value = cell.cell_contents
        except ValueError:  # not yet bound
            continue
        out.append((f"closure variable {name!r}", lambda c=cell: c.cell_contents, value))
    return out


def function_guards(fn) -> list:
    """Guards on the globals and closure variables ``fn`` reads: plain values (and
    containers of them) by content, tensors by identity (a rebound name is a new
    tensor the plan does not read). Modules, functions and classes are left to the
    module guards and to tracing itself."""
    from .._tensor import Tensor
    guards = []
    for what, read, value in _function_reads(fn):
        if isinstance(value, Tensor):
            guards.append(((lambda r=read: id(r())), id(value), f"{what} is another tensor"))
        elif isinstance(value, (*_SIMPLE, list, tuple, dict)):
            snap = snapshot(value)
            guards.append(((lambda r=read: snapshot(r())), snap, f"{what} changed"))
    return guards


def _immutable(v: Any) -> bool:
    """Is ``v`` a simple value or a tuple of them, all the way down (so that the same
    object always has the same snapshot)?"""
    if isinstance(v, tuple):
        return all(_immutable(x) for x in v)
    return isinstance(v, _SIMPLE)


_HELD = ("_parameters", "_buffers", "_modules")
_HOOKS = ("_forward_pre_hooks", "_forward_hooks")


def module_guard(module) -> tuple:
    """A guard on what a module's forward may branch on: its training flag, hooks,
    plain attributes, and which parameters, buffers and submodules it holds.

    The check first asks whether the module's ``__dict__`` holds the very objects it
    held when traced (same keys in the same order, same values by identity, the same
    entries in its parameter, buffer, submodule and hook dicts): then the state is the
    traced one without building it. That holds on nearly every call and costs a
    fraction of building the state (a GPT step checks 31 modules on each call: ~6 us
    each to build, ~2 us to compare). Anything else
    (an attribute rebound, even to an equal value) compares the state itself. Modules
    with a tuple attribute holding something mutable always do. The traced objects are
    held (so no new object can take an old one's identity) until a check finds the
    state changed: then the guard lets them go and compares the state from then on."""
    ref = weakref.ref(module)

    def state() -> tuple:
        d = ref().__dict__
        simple = tuple((k, snapshot(v)) for k, v in d.items()
                       if isinstance(v, (*_SIMPLE, tuple)) and not k.startswith("__"))
        held = tuple((k, tuple((n, id(x)) for n, x in d[k].items()))
                     for k in _HELD if d.get(k))
        hooks = tuple(tuple(d.get(k) or ()) for k in _HOOKS)
        return simple, held, hooks

    expected = state()
    d0 = module.__dict__
    if not all(_immutable(v) for v in d0.values() if isinstance(v, tuple)):
        return (state, expected, _module_guard_what(module))
    # the dicts whose entries the state reads (the module's own holds them)
    inner = tuple(c for c in (d0.get(k) for k in _HELD + _HOOKS) if isinstance(c, dict))
    traced = _held_objects(d0, inner)
    n, is_ = len(traced), operator.is_

    def check() -> tuple:
        nonlocal traced
        if traced is not None:
            now = _held_objects(ref().__dict__, inner)
            if len(now) == n and all(map(is_, now, traced)):
                return expected
        now_state = state()
        if now_state != expected:
            traced = None  # changed: stop holding what the module held (old parameters)
        return now_state
    return (check, expected, _module_guard_what(module))


def _held_objects(d: dict, inner: tuple) -> list:
    """The keys and values of a module's ``__dict__`` and of the dicts in ``inner``, in
    order: compared by identity with the traced ones."""
    out = [*d, *d.values()]
    for c in inner:
        out += [*c, *c.values()]
    return out


def _module_guard_what(module) -> str:
    return (f"{type(module).__name__} (id {id(module):#x}): training flag, attributes, "
            "hooks, parameters or submodules changed")
