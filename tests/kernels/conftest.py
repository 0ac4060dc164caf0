"""Kernel tests run against a fresh per-session kernel cache (never a warm one)."""
from __future__ import annotations

import os

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
