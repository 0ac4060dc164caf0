"""Mode flags read on every op dispatch, per thread (as in torch: ``no_grad`` in
one thread leaves autograd on in the others, and an op run by another thread is
never recorded into this thread's trace). Defaults are class attributes, so a
new thread starts with grad enabled and no tracer."""
from __future__ import annotations

import threading


class State(threading.local):
    grad_enabled: bool = True
    inference_mode: bool = False
    # set by gcompile's tracer while a function is being traced; None otherwise
    tracer = None
    # set by ``explain`` while it traces: undoes every write the traced calls make
    journal = None
    # inside ``_methods.traced_in_chunks``: the trace's symbolic number -> 0-d tensor
    concrete = None


state = State()
