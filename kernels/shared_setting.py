"""A process-wide setting changed while anyone needs it changed.

Some settings belong to the process, not to a thread (the garbage collector's switch,
OpenBLAS's thread count): a user that saved, changed and restored one on its own
would undo a concurrent user's change, or leave its own in place (two threads saving
OpenBLAS's count and restoring it left it at 1). Here the first user in saves and sets
it, the last one out restores it, and nested and concurrent users in between count.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["SharedSetting"]


class SharedSetting:
    """``scope()`` holds the setting changed: ``change()`` (returning what to restore)
    runs when the first user enters, ``restore(saved)`` when the last one leaves."""

    def __init__(self, change: Callable[[], object],
                 restore: Callable[[object], None]) -> None:
        self._change, self._restore = change, restore
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: object = None

    @contextmanager
    def scope(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = self._change()
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0:
                    self._restore(self._saved)
