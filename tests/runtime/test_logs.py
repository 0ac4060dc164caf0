"""GCOMPILE_LOG: one parser for runtime and compiler; unknown channels are errors."""
from __future__ import annotations

import pytest

from runtime import logs


def test_channels_parse_and_all():
    assert logs.parse("kernels, memory") == {"kernels", "memory"}
    assert logs.parse("recompiles;graph_breaks") == {"recompiles", "graph_breaks"}
    assert logs.parse("all") == set(logs.CHANNELS) == logs.parse("1")
    assert logs.parse("") == frozenset()


def test_unknown_channel_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"unknown log channel 'kernel'; valid channels: "
                                         r"recompiles, graph_breaks, kernels, memory, guards"):
        logs.parse("kernel,memory")
    with pytest.raises(ValueError, match="unknown log channels 'a', 'b'"):
        logs.parse("a,b")


def test_runtime_and_compiler_share_the_parser(monkeypatch, capsys):
    from gcompile.compiler import logs as clogs
    from runtime.lower import _log
    monkeypatch.setenv("GCOMPILE_LOG", "memory")
    _log("memory", "one\ntwo")
    clogs.log("memory", "three")
    _log("kernels", "hidden")
    err = capsys.readouterr().err
    assert err.splitlines() == ["[gcompile:memory] one", "[gcompile:memory] two",
                                "[gcompile:memory] three"]
    monkeypatch.setenv("GCOMPILE_LOG", "kernls")
    with pytest.raises(ValueError, match="kernls"):
        _log("kernels", "x")
    with pytest.raises(ValueError, match="kernls"):
        clogs.enabled("recompiles")


def test_messages_go_through_the_logging_module(monkeypatch, capsys):
    import logging
    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append((record.name, record.getMessage()))

    h = Keep()
    logging.getLogger("gcompile").addHandler(h)
    try:
        monkeypatch.setenv("GCOMPILE_LOG", "recompiles")
        logs.log("recompiles", "two\nlines")
        logs.log("memory", "off")  # a channel not switched on: nothing
    finally:
        logging.getLogger("gcompile").removeHandler(h)
    assert records == [("gcompile.recompiles", "two"), ("gcompile.recompiles", "lines")]
    assert capsys.readouterr().err == "[gcompile:recompiles] two\n[gcompile:recompiles] lines\n"
