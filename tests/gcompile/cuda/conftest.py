"""CUDA tensor tests: on the CUDA simulator when no GPU driver is present (the root
tests/conftest.py sets ``NUMBA_ENABLE_CUDASIM=1`` before numba.cuda is imported), skipped
cleanly, saying why, without numba-cuda or without a device. The simulator runs kernels
as Python threads: sizes here are tiny (tens of elements)."""
from __future__ import annotations

import os

import pytest

try:
    import numba_cuda  # noqa: F401
    WHY = None
except ImportError:  # pragma: no cover - depends on the install
    WHY = "numba-cuda is not installed (pip install 'gcompile[cuda]')"


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    why = WHY
    if why is None:
        import gcompile
        if not gcompile.cuda.is_available():
            why = f"CUDA is not usable here: {gcompile.cuda.unavailable_reason()}"
    if why is None:
        return
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.skip(reason=why))
