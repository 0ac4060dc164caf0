"""no_grad, enable_grad, set_grad_enabled, inference_mode: contexts and decorators."""
from __future__ import annotations

import functools

from .._state import state


class _GradMode:
    """Base: subclasses say which (grad_enabled, inference_mode) they set."""

    def _target(self) -> tuple[bool, bool]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __enter__(self):
        self._prev = (state.grad_enabled, state.inference_mode)
        state.grad_enabled, state.inference_mode = self._target()
        return self

    def __exit__(self, *exc) -> bool:
        state.grad_enabled, state.inference_mode = self._prev
        return False

    def __call__(self, fn):
        mode = self

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = (state.grad_enabled, state.inference_mode)
            state.grad_enabled, state.inference_mode = mode._target()
            try:
                return fn(*args, **kwargs)
            finally:
                state.grad_enabled, state.inference_mode = prev
        return wrapper


class _NoParam(_GradMode):
    """Allows both ``@no_grad()`` and bare ``@no_grad`` like torch."""

    def __new__(cls, orig_func=None):
        self = super().__new__(cls)
        if orig_func is not None:
            return self(orig_func)
        return self

    def __init__(self, orig_func=None) -> None:
        pass


class no_grad(_NoParam):
    """Disable gradient recording."""

    def _target(self):
        return False, state.inference_mode


class enable_grad(_NoParam):
    def _target(self):
        return True, state.inference_mode


class set_grad_enabled(_GradMode):
    """Sets the mode at construction, like torch, and restores it on exit."""

    def __init__(self, mode: bool) -> None:
        self._mode = bool(mode)
        self._prev = (state.grad_enabled, state.inference_mode)
        state.grad_enabled = self._mode

    def __enter__(self):
        return self

    def __call__(self, fn):
        # used as a decorator: undo the switch made at construction, like torch
        state.grad_enabled, state.inference_mode = self._prev
        return super().__call__(fn)

    def _target(self):
        return self._mode, state.inference_mode


class inference_mode(_GradMode):
    """Like no_grad, and tensors created inside are inference tensors."""

    def __new__(cls, mode=True):
        self = super().__new__(cls)
        if callable(mode):
            self._mode = True
            return self(mode)
        return self

    def __init__(self, mode: bool = True) -> None:
        if not callable(mode):
            self._mode = bool(mode)

    def _target(self):
        if self._mode:
            return False, True
        return state.grad_enabled, False


def is_grad_enabled() -> bool:
    return state.grad_enabled


def is_inference_mode_enabled() -> bool:
    return state.inference_mode
