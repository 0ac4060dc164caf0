"""The layer contracts (pyproject.toml [tool.importlinter]): gcompile > runtime > kernels
> ir, and inside gcompile the eager core's order (docs/architecture.md, "The eager core"),
imports pointing down only, lazy ones inside functions included. Checked with
import-linter, a dev dependency."""
from __future__ import annotations

import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_imports_point_down_the_layers(monkeypatch):
    pytest.importorskip("importlinter", reason="import-linter is not installed (pip install "
                                               "'gcompile[dev]')")
    from importlinter.cli import lint_imports
    monkeypatch.chdir(ROOT)  # it reads pyproject.toml from the working directory
    assert lint_imports() == 0, "a layer contract is broken: run lint-imports for details"
