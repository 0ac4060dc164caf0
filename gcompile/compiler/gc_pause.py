"""The cyclic garbage collector paused while a compiled function traces and builds.

A trace allocates thousands of graph objects (values, nodes, weak references), all
alive until the plan is built, so the collections their allocations trigger find
nothing to free and only walk them and the rest of the heap: about 25 ms of a GPT
training step's warm first call (81 collections). Reference counting still frees
everything that is not in a cycle meanwhile; the collector resumes when the last
concurrent compile ends (and not at all if it was off before).
"""
from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

from kernels.shared_setting import SharedSetting


def _pause() -> bool:
    was = gc.isenabled()
    gc.disable()
    return was


def _resume(was: bool) -> None:
    if was:
        gc.enable()


_PAUSED = SharedSetting(_pause, _resume)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable ``gc`` for the duration (nested and concurrent uses count)."""
    with _PAUSED.scope():
        yield
