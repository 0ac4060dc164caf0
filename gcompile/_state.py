"""Process-wide mode flags read on every op dispatch (kept as plain class
attributes: the cheapest lookup on the hot path)."""
from __future__ import annotations


class State:
    grad_enabled: bool = True
    inference_mode: bool = False
    # set by gcompile's tracer while a function is being traced; None otherwise
    tracer = None
    # set by ``explain`` while it traces: undoes every write the traced calls make
    journal = None


state = State
