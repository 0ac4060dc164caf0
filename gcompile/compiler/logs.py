"""Named log channels: ``GCOMPILE_LOG=recompiles,graph_breaks,kernels,memory`` (or ``all``)."""
from __future__ import annotations

import os
import sys

CHANNELS = ("recompiles", "graph_breaks", "kernels", "memory", "guards")
_cache: dict[str, frozenset] = {}


def enabled(channel: str) -> bool:
    """Whether ``channel`` is switched on by the GCOMPILE_LOG environment variable."""
    raw = os.environ.get("GCOMPILE_LOG", "")
    chans = _cache.get(raw)
    if chans is None:
        parts = {p.strip() for p in raw.replace(";", ",").split(",") if p.strip()}
        if "all" in parts or "1" in parts:
            parts = set(CHANNELS)
        chans = _cache[raw] = frozenset(parts)
    return channel in chans


def log(channel: str, msg: str) -> None:
    """Write ``msg`` to stderr when ``channel`` is enabled."""
    if enabled(channel):
        for line in str(msg).splitlines() or [""]:
            print(f"[gcompile:{channel}] {line}", file=sys.stderr)
