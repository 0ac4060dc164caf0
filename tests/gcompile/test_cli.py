"""The command line: ``gcompile demo`` runs end to end."""
from __future__ import annotations

from gcompile.cli import main


def test_demo_runs(capsys):
    assert main(["demo", "--steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "eager:" in out and "compiled:" in out
    assert "one plan" in out  # the whole step compiled (no eager fallback)
