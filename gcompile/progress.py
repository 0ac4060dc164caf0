"""Progress on long work, on stderr, drawn by ``rich`` (the ``progress`` extra).

Quiet unless stderr is a terminal, quiet when ``GCOMPILE_PROGRESS=0`` (``=1`` forces it
on), silently off without ``rich``. A bar appears only after ``GCOMPILE_PROGRESS_DELAY``
seconds (default 2) of work, so the fast path prints nothing. ``gcompile bench``, cold
kernel compiles ("compiling kernels 7/23") and long exports use it; so may user code::

    from gcompile.progress import track
    for batch in track(loader, "epoch 1"):
        ...

The implementation lives in ``kernels.progress`` so that kernel compiles (which must
not import ``gcompile``) can report through it.
"""
from __future__ import annotations

from kernels.progress import CompileBar, Task, delay, enabled, task, track

__all__ = ["enabled", "delay", "Task", "task", "track", "CompileBar"]
