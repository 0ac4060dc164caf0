"""Kernel tests run against a fresh per-session kernel cache (never a warm one)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest


@pytest.fixture(scope="session", autouse=True)
def _kernel_cache_dir(tmp_path_factory):
    old = os.environ.get("GCOMPILE_CACHE_DIR")
    d = tmp_path_factory.mktemp("gcompile_kernel_cache")
    os.environ["GCOMPILE_CACHE_DIR"] = str(d)
    yield d
    if old is None:
        os.environ.pop("GCOMPILE_CACHE_DIR", None)
    else:
        os.environ["GCOMPILE_CACHE_DIR"] = old


@pytest.fixture
def two_processes(tmp_path):
    """``run(code)``: ``code`` in two fresh Python processes (at the repository root) that
    share an empty kernel cache, one after the other; both must succeed; returns what
    each printed, stripped. A kernel the first compiles, the second loads from disk."""
    root = pathlib.Path(__file__).resolve().parents[2]

    def run(code: str) -> list[str]:
        env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path))
        runs = [subprocess.run([sys.executable, "-c", code], env=env, cwd=root,
                               capture_output=True, text=True, timeout=300) for _ in range(2)]
        assert all(r.returncode == 0 for r in runs), runs[-1].stderr
        return [r.stdout.strip() for r in runs]
    return run
