"""Named log channels shared by the runtime and the compiler: ``GCOMPILE_LOG``.

``GCOMPILE_LOG=recompiles,graph_breaks,kernels,memory,stages,cuda_fallback`` (comma or semicolon
separated; ``all`` or ``1`` for every channel). ``stages`` prints each stage of the
compile pipeline (trace -> verify -> autodiff -> passes -> fusion -> lower -> memory
plan -> executable) with its time and what it produced. One parser for every layer (the
runtime must not import ``gcompile``), so a misspelt channel is an error that
lists the valid ones instead of a silently empty log. Messages go through the
standard ``logging`` module (logger ``gcompile.<channel>``), printed to stderr as
``[gcompile:<channel>] ...`` (and to any handler you add to that logger).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

CHANNELS = ("recompiles", "graph_breaks", "kernels", "memory", "guards", "stages",
            "cuda_fallback")
ALL = ("all", "1")
_cache: dict[str, frozenset] = {}


def parse(raw: str) -> frozenset:
    """The channels ``raw`` (a GCOMPILE_LOG value) switches on; ValueError naming any
    unknown channel and listing the valid ones."""
    got = _cache.get(raw)
    if got is not None:
        return got
    parts = {p.strip() for p in raw.replace(";", ",").split(",") if p.strip()}
    unknown = sorted(parts - set(CHANNELS) - set(ALL))
    if unknown:
        raise ValueError(f"GCOMPILE_LOG: unknown log channel{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(repr(u) for u in unknown)}; valid channels: "
                         f"{', '.join(CHANNELS)} (or 'all')")
    if parts & set(ALL):
        parts = set(CHANNELS)
    got = _cache[raw] = frozenset(parts)
    return got


def enabled(channel: str) -> bool:
    """Whether ``channel`` is switched on by the GCOMPILE_LOG environment variable."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown log channel {channel!r}; valid channels: "
                         f"{', '.join(CHANNELS)}")
    return channel in parse(os.environ.get("GCOMPILE_LOG", ""))


class _StderrHandler(logging.Handler):
    """Writes ``[gcompile:<channel>] <line>`` to whatever ``sys.stderr`` is at the time
    (so pytest's capture and redirected streams see it)."""

    def emit(self, record: logging.LogRecord) -> None:
        channel = record.name.partition(".")[2] or record.name
        try:
            sys.stderr.write(f"[gcompile:{channel}] {record.getMessage()}\n")
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


LOGGER = logging.getLogger("gcompile")
if not any(isinstance(h, _StderrHandler) for h in LOGGER.handlers):
    LOGGER.addHandler(_StderrHandler())
LOGGER.setLevel(logging.INFO)
LOGGER.propagate = False  # one line per message, whatever the root logger does


def log(channel: str, msg: str) -> None:
    """Log ``msg`` on logger ``gcompile.<channel>`` (one record per line; stderr by
    default, add your own handlers to ``logging.getLogger("gcompile")``) when
    ``channel`` is on."""
    if enabled(channel):
        logger = LOGGER.getChild(channel)
        for line in str(msg).splitlines() or [""]:
            logger.info(line)


@contextmanager
def stage(name: str, show: Callable[[], str] | None = None) -> Iterator[None]:
    """One named stage of the compile pipeline: on the ``stages`` channel, its time and
    (``show()``, called only when the channel is on) what it produced."""
    if not enabled("stages"):
        yield
        return
    t0 = time.perf_counter()
    yield
    ms = 1e3 * (time.perf_counter() - t0)
    log("stages", f"== {name} ({ms:.1f} ms)")
    if show is not None:
        log("stages", "\n".join("   " + line for line in str(show()).splitlines()))
