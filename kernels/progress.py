"""Progress on long work, on stderr, drawn by ``rich`` (the ``progress`` extra).

This lives in ``kernels`` (which must not import ``gcompile``) because kernel compiles
report through it; ``gcompile.progress`` is the public face.

Quiet unless stderr is a terminal, quiet when ``GCOMPILE_PROGRESS=0`` (``=1`` forces it
on, e.g. under a pseudo-terminal test), and silently off when ``rich`` is not installed.
Nothing is printed on the fast path: a bar appears only once the work has run longer
than ``GCOMPILE_PROGRESS_DELAY`` seconds (default 2), so a warm call never shows one.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

__all__ = ["enabled", "delay", "Task", "task", "track", "CompileBar"]


def enabled() -> bool:
    """Whether progress may be drawn: ``GCOMPILE_PROGRESS`` (0/1), else stderr is a tty."""
    flag = os.environ.get("GCOMPILE_PROGRESS", "").strip().lower()
    if flag in ("0", "false", "no", "off"):
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    if flag in ("1", "true", "yes", "on"):
        return True
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def delay() -> float:
    """Seconds of work before a bar appears (``GCOMPILE_PROGRESS_DELAY``, default 2)."""
    try:
        return max(0.0, float(os.environ.get("GCOMPILE_PROGRESS_DELAY", "2")))
    except ValueError:
        return 2.0


class Task:
    """One piece of long work with ``total`` steps. The bar is created lazily on the
    first update after ``delay()`` seconds, so short work prints nothing at all."""

    def __init__(self, description: str, total: int | None = None, *,
                 show_after: float | None = None) -> None:
        self.description = description
        self.total = total
        self.completed = 0
        self.start = time.perf_counter()
        self._after = delay() if show_after is None else show_after
        self._on = enabled()
        self._progress = None
        self._id = None
        self._lock = threading.Lock()

    def __enter__(self) -> Task:
        self._maybe_show()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _maybe_show(self) -> None:
        if self._progress is not None or not self._on:
            return
        if time.perf_counter() - self.start < self._after:
            return
        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                                   TimeElapsedColumn)
        force = os.environ.get("GCOMPILE_PROGRESS", "").strip() == "1"
        console = Console(file=sys.stderr, force_terminal=force or None)
        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(),
                                  console=console, transient=False)
        self._progress.start()
        self._id = self._progress.add_task(self.description, total=self.total,
                                           completed=self.completed)

    def update(self, advance: int = 0, *, completed: int | None = None,
               total: int | None = None, description: str | None = None) -> None:
        """Move the bar (shown once the work has lasted ``delay()`` seconds)."""
        with self._lock:
            if completed is not None:
                self.completed = completed
            self.completed += advance
            if total is not None:
                self.total = total
            if description is not None:
                self.description = description
            self._maybe_show()
            if self._progress is not None:
                self._progress.update(self._id, completed=self.completed, total=self.total,
                                      description=self.description)

    def close(self) -> None:
        """Stop drawing (the last state stays on the terminal)."""
        with self._lock:
            if self._progress is not None:
                self._progress.refresh()
                self._progress.stop()
                self._progress = None


def task(description: str, total: int | None = None, *,
         show_after: float | None = None) -> Task:
    """A ``Task`` to use as a context manager around long work."""
    return Task(description, total, show_after=show_after)


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield ``items``, drawing a bar when iterating takes longer than ``delay()``."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Task(description, total) as t:
        for item in items:
            yield item
            t.update(1)


class CompileBar:
    """Turns compile events into a "compiling kernels 7/23" bar for a batch of cold
    compiles that lasts longer than ``delay()`` seconds (nothing for a short batch)."""

    def __init__(self) -> None:
        self._task: Task | None = None

    def __call__(self, done: int, total: int) -> None:
        if total <= 0 or done >= total:
            if self._task is not None:
                self._task.update(completed=done, total=total)
                self._task.close()
            self._task = None
            return
        if self._task is None:
            self._task = Task("compiling kernels", total)
        self._task.update(completed=done, total=total)
