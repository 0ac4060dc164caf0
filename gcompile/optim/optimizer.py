"""The Optimizer base class: parameter groups, state and torch-format state dicts.

Subclasses keep their maths in one module-level function each (``sgd``,
``adam`` ...) taking lists of tensors, written as whole-tensor in-place ops
under ``no_grad`` so that a tracer sees one clean update per parameter.
"""
from __future__ import annotations

import copy
import functools
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ir.dtypes import float64

from .._state import state
from .._symbolic import leaf
from .._tensor import Tensor
from ..autograd import enable_grad, no_grad

__all__ = ["Optimizer", "required", "register_optimizer_step_pre_hook",
           "register_optimizer_step_post_hook"]

_GLOBAL_PRE_HOOKS: OrderedDict = OrderedDict()
_GLOBAL_POST_HOOKS: OrderedDict = OrderedDict()


class _RemovableHandle:
    """Returned by the ``register_*_hook`` methods; ``remove()`` unregisters."""

    _next_id = 0

    def __init__(self, hooks: OrderedDict) -> None:
        self.hooks = hooks
        self.id = _RemovableHandle._next_id
        _RemovableHandle._next_id += 1

    def remove(self) -> None:
        self.hooks.pop(self.id, None)

    def __enter__(self) -> _RemovableHandle:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def register_optimizer_step_pre_hook(hook: Callable) -> _RemovableHandle:
    """Run ``hook(optimizer, args, kwargs)`` before every optimizer's ``step``."""
    handle = _RemovableHandle(_GLOBAL_PRE_HOOKS)
    _GLOBAL_PRE_HOOKS[handle.id] = hook
    return handle


def register_optimizer_step_post_hook(hook: Callable) -> _RemovableHandle:
    """Run ``hook(optimizer, args, kwargs)`` after every optimizer's ``step``."""
    handle = _RemovableHandle(_GLOBAL_POST_HOOKS)
    _GLOBAL_POST_HOOKS[handle.id] = hook
    return handle


def _wrap_step(step: Callable) -> Callable:
    """Run the step hooks around a subclass's ``step`` and record that it ran
    (the lr schedulers warn when they are stepped before the optimiser)."""
    if getattr(step, "_hooked", False):
        return step

    @functools.wraps(step)
    def wrapper(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
        if state.tracer is not None:
            return _traced_step(self, step, args, kwargs)
        return _run_step(self, step, args, kwargs)

    wrapper._hooked = True  # type: ignore[attr-defined]
    return wrapper


def _traced_step(opt: Optimizer, step: Callable, args: tuple, kwargs: dict) -> Any:
    """``step`` while a compiled function is being traced: the step reads its param
    groups through ``_TracedGroup``s, so every number it reads is a run-time input
    of the plan and every flag a guard; then the groups are the user's again."""
    groups = opt.param_groups
    tracer = state.tracer
    if tracer.journal is not None:
        tracer.journal.optimizer(opt)
    opt.param_groups = [_TracedGroup(g, i, tracer.guards) for i, g in enumerate(groups)]
    tracer.steps_open += 1  # a closure's backward must not stop the trace mid-step
    try:
        return _run_step(opt, step, args, kwargs)
    finally:
        tracer.steps_open -= 1
        opt.param_groups = groups


def _run_step(opt: Optimizer, step: Callable, args: tuple, kwargs: dict) -> Any:
    """The step between its pre- and post-hooks."""
    pre = getattr(opt, "_step_pre_hooks", {})
    for hook in [*_GLOBAL_PRE_HOOKS.values(), *pre.values()]:
        result = hook(opt, args, kwargs)
        if result is not None:
            if isinstance(result, tuple) and len(result) == 2:
                args, kwargs = result
            else:
                raise RuntimeError(f"{hook} must return None or a tuple of (new_args, "
                                   f"new_kwargs), but got {result}.")
    out = step(opt, *args, **kwargs)
    opt._opt_called = True
    post = getattr(opt, "_step_post_hooks", {})
    for hook in [*post.values(), *_GLOBAL_POST_HOOKS.values()]:
        hook(opt, args, kwargs)
    return out


class _TracedGroup(dict):
    """A param group as a traced step sees it. Numbers (and tuples of numbers, such
    as ``betas``) come out as ``SymScalar``s read from the user's group at every
    call; any other value (``nesterov``, ``amsgrad``, ``maximize`` ...) shapes the
    graph and is guarded to stay what it was. Writes go to the user's group."""

    def __init__(self, group: dict, index: int, guards: list) -> None:
        super().__init__(group)
        self._group = group
        self._label = f"param_groups[{index}]"
        self._guards = guards
        self._seen: dict = {}

    def __getitem__(self, key: Any) -> Any:
        if key in self._seen:
            return self._seen[key]
        value = dict.__getitem__(self, key)
        if key != "params":
            value = self._read(key, value)
        self._seen[key] = value
        return value

    def _read(self, key: Any, value: Any) -> Any:
        g = self._group
        if _is_number(value):
            return leaf(g, key, None, self._guards, self._label)
        if isinstance(value, tuple) and value and all(_is_number(v) for v in value):
            return tuple(leaf(g, key, i, self._guards, self._label) for i in range(len(value)))
        if isinstance(value, Tensor):
            return value
        self._guards.append((lambda: _frozen(g.get(key)), _frozen(value),
                             f"{self._label}[{key!r}] == {value!r}"))
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def __setitem__(self, key: Any, value: Any) -> None:
        self._group[key] = value
        self._seen.pop(key, None)
        dict.__setitem__(self, key, value)

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return self[key]


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _frozen(v: Any) -> Any:
    """A comparable snapshot of a group value (lists compared by content, types too)."""
    if isinstance(v, (list, tuple)):
        return (type(v), tuple(_frozen(x) for x in v))
    if isinstance(v, Tensor):
        return (Tensor, id(v))
    return (type(v), v)


class _Required:
    """Marker for a hyper-parameter with no default (torch.optim.optimizer.required)."""

    def __repr__(self) -> str:
        return "<required parameter>"


required = _Required()


def _get_value(x: Any) -> Any:
    """A Python number from a float or a 0-d tensor (``.item()``: a graph break
    under tracing, never a silently baked-in constant)."""
    return x.item() if isinstance(x, Tensor) else x


def _check_lr(lr: Any) -> None:
    if isinstance(lr, Tensor):
        if lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        lr = lr.item()
    if not 0.0 <= lr:
        raise ValueError(f"Invalid learning rate: {lr}")


def _check_fused(defaults: dict) -> None:
    """torch refuses ``fused=True`` together with ``foreach=True``."""
    if defaults.get("fused") and defaults.get("foreach"):
        raise RuntimeError("`fused` and `foreach` cannot be `True` together.")


def _fused_wanted(group: dict) -> bool:
    """Whether ``group`` asks for the native per-parameter update: eagerly only (while a
    step is traced the op-by-op code runs, so the compiler records it), unless
    ``fused=False`` or ``foreach=True`` ask for the op-by-op code, and only with
    Python-number hyper-parameters (a tensor lr or beta keeps its tensor maths)."""
    if state.tracer is not None:
        return False
    fused = group.get("fused")
    if fused is False or (fused is None and group.get("foreach")):
        return False
    if group.get("capturable") or group.get("differentiable"):
        return False
    for k, v in group.items():
        if k != "params" and (isinstance(v, Tensor) or (
                isinstance(v, tuple) and any(isinstance(x, Tensor) for x in v))):
            return False
    return True


def _check_unsupported(defaults: dict) -> None:
    for flag in ("capturable", "differentiable"):
        if defaults.get(flag):
            raise NotImplementedError(f"{flag}=True is not supported by gcompile.optim (the "
                                      "compiler traces the plain update instead)")


class Optimizer:
    """Base class of all optimisers (torch.optim.Optimizer)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "step" in cls.__dict__:
            cls.step = _wrap_step(cls.__dict__["step"])  # type: ignore[method-assign]

    def __init__(self, params: Iterable, defaults: dict) -> None:
        self._step_pre_hooks: OrderedDict = OrderedDict()
        self._step_post_hooks: OrderedDict = OrderedDict()
        self._opt_called = False
        self.defaults = defaults
        self.state: defaultdict = defaultdict(dict)
        self.param_groups: list[dict] = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            f"Tensors or dicts, but got {type(params).__name__}")
        if isinstance(params, (set, frozenset)):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    # ---- groups -----------------------------------------------------------------------
    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyper-parameters (e.g. a
        different lr while fine-tuning); missing keys take the defaults."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        else:
            param_group["params"] = list(params)
        for p in param_group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                f"{type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError("parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            param_group.setdefault(name, default)
        ids = [id(p) for p in param_group["params"]]
        if len(set(ids)) != len(ids):
            import warnings
            warnings.warn("optimizer contains a parameter group with duplicate parameters; in "
                          "future, this will cause an error", stacklevel=3)
        seen = set()
        for group in self.param_groups:
            seen.update(id(p) for p in group["params"])
        if not seen.isdisjoint(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        if "lr" in param_group:
            _check_lr(param_group["lr"])
        self.param_groups.append(param_group)

    # ---- gradients --------------------------------------------------------------------
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset gradients: to None by default (torch >= 2.0), else to zeros."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    g = p.grad
                    if g.grad_fn is not None:
                        g.detach_()
                    else:
                        g.requires_grad_(False)
                    g.zero_()

    def _state_lists(self, params: list[Tensor], *buffers: str) -> list[list[Tensor]]:
        """Per-parameter state made on first use (a step counter and zero buffers
        named ``buffers``); returns ``[steps, buffer lists...]`` for the update."""
        from .._creation import zeros_like
        for p in params:
            st = self.state[p]
            if len(st) == 0:
                st["step"] = _zero_step()
                for name in buffers:
                    st[name] = zeros_like(p)
        return [[self.state[p][n] for p in params] for n in ("step",) + buffers]

    def step(self, closure: Callable | None = None):  # pragma: no cover - abstract
        raise NotImplementedError

    def register_step_pre_hook(self, hook: Callable) -> _RemovableHandle:
        """``hook(optimizer, args, kwargs)`` before each step; it may return new
        ``(args, kwargs)``."""
        handle = _RemovableHandle(self._step_pre_hooks)
        self._step_pre_hooks[handle.id] = hook
        return handle

    def register_step_post_hook(self, hook: Callable) -> _RemovableHandle:
        """``hook(optimizer, args, kwargs)`` after each step."""
        handle = _RemovableHandle(self._step_post_hooks)
        self._step_post_hooks[handle.id] = hook
        return handle

    def _closure_loss(self, closure: Callable | None):
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ---- state dicts ------------------------------------------------------------------
    def state_dict(self) -> dict:
        """``{'state': {index: {...}}, 'param_groups': [{..., 'params': [index...]}]}``,
        parameters numbered in group order, like torch. Tensors are shared
        with the optimiser (save or deep-copy to snapshot)."""
        mapping: dict[int, int] = {}
        groups = []
        start = 0
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for i, p in enumerate(group["params"], start):
                mapping.setdefault(id(p), i)
            packed["params"] = [mapping[id(p)] for p in group["params"]]
            start += len(packed["params"])
            groups.append(packed)
        state = {mapping[id(p)]: s for p, s in self.state.items() if id(p) in mapping}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore state saved by :meth:`state_dict` (tensors are copied onto their
        parameter's device, float state cast to its dtype, ``step`` kept as is)."""
        if not isinstance(state_dict, dict) or "param_groups" not in state_dict \
                or "state" not in state_dict:
            raise ValueError("optimizer state dict must be a dict with 'state' and "
                             "'param_groups' keys")
        groups = self.param_groups
        saved_groups = state_dict["param_groups"]
        if len(groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups "
                             f"({len(saved_groups)} vs {len(groups)} in the optimizer)")
        for g, sg in zip(groups, saved_groups):
            if len(g["params"]) != len(sg["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't "
                                 f"match the size of optimizer's group ({len(sg['params'])} vs "
                                 f"{len(g['params'])} parameters)")
        id_map = {}
        for g, sg in zip(groups, saved_groups):
            for old, p in zip(sg["params"], g["params"]):
                id_map[old] = p

        def cast(param, value, key):
            if isinstance(value, Tensor):
                if key == "step":
                    return value.detach().clone()
                # state follows its parameter's device (as torch's load_state_dict)
                if param.dtype.is_floating_point and value.dtype.is_floating_point:
                    return value.detach().to(param.device, param.dtype, copy=True)
                return value.detach().to(param.device, copy=True)
            if isinstance(value, dict):
                return {k: cast(param, v, k) for k, v in value.items()}
            if isinstance(value, (list, tuple)):
                return type(value)(cast(param, v, key) for v in value)
            return copy.deepcopy(value)

        state: defaultdict = defaultdict(dict)
        for k, v in state_dict["state"].items():
            key = int(k) if isinstance(k, str) and k.lstrip("-").isdigit() else k
            if key in id_map:
                p = id_map[key]
                state[p] = cast(p, v, None)
            else:
                state[key] = copy.deepcopy(v)
        new_groups = []
        for g, sg in zip(groups, saved_groups):
            ng = {k: copy.deepcopy(v) if not isinstance(v, Tensor) else v.detach().clone()
                  for k, v in sg.items() if k != "params"}
            ng["params"] = g["params"]
            for key, default in self.defaults.items():  # state dicts from older versions
                ng.setdefault(key, default)
            new_groups.append(ng)
        self.state = state
        self.param_groups = new_groups

    # ---- misc -------------------------------------------------------------------------
    def __getstate__(self) -> dict:
        return {"defaults": self.defaults, "state": self.state,
                "param_groups": self.param_groups}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._step_pre_hooks = OrderedDict()
        self._step_post_hooks = OrderedDict()
        self._opt_called = False

    def __repr__(self) -> str:
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key != "params":
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    def _params_with_grad(self, group: dict) -> tuple[list, list]:
        params, grads = [], []
        for p in group["params"]:
            if p.grad is not None:
                params.append(p)
                grads.append(p.grad)
        return params, grads


def _zero_step():
    """torch keeps ``state['step']`` as a float32 0-d tensor."""
    from .._creation import tensor
    return tensor(0.0)


def _scalar_value(t: Tensor) -> Any:
    """A 0-d state tensor as a number: a Python float eagerly, the tensor (as
    float64) while a compiled step is traced, so the value is read at run time."""
    if state.tracer is not None:
        return t.to(float64)
    return _get_value(t)


def _inc_step(step_t: Tensor) -> Any:
    """Advance a step counter in place and return its new value: a Python float
    eagerly, a float64 0-d tensor while a compiled step is traced (so the bias
    corrections computed from it are graph ops, never ``.item()``; float64 keeps
    them as exact as the Python-float path, and 0-d keeps float32 params float32)."""
    with no_grad():
        step_t.add_(1)
    return _scalar_value(step_t)
