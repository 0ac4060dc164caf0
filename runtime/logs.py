"""Named log channels shared by the runtime and the compiler: ``GCOMPILE_LOG``.

``GCOMPILE_LOG=recompiles,graph_breaks,kernels,memory`` (comma or semicolon
separated; ``all`` or ``1`` for every channel). One parser for every layer (the
runtime must not import ``gcompile``), so a misspelt channel is an error that
lists the valid ones instead of a silently empty log.
"""
from __future__ import annotations

import os
import sys

CHANNELS = ("recompiles", "graph_breaks", "kernels", "memory", "guards")
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


def log(channel: str, msg: str) -> None:
    """Write ``msg`` to stderr, one prefixed line per line, when ``channel`` is on."""
    if enabled(channel):
        for line in str(msg).splitlines() or [""]:
            print(f"[gcompile:{channel}] {line}", file=sys.stderr)
