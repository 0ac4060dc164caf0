"""CUDA kernel tests: run under the CUDA simulator when no GPU driver is present
(``NUMBA_ENABLE_CUDASIM=1`` must be set before numba.cuda is first imported; the
tests-level conftest does that in CI), skipped cleanly without numba-cuda."""
from __future__ import annotations

import os

import pytest

try:
    import numba_cuda  # noqa: F401
    HAVE = True
except ImportError:  # pragma: no cover - depends on the install
    try:
        from numba import cuda  # noqa: F401
        HAVE = True
    except ImportError:
        HAVE = False


def pytest_collection_modifyitems(config, items):
    here = os.path.dirname(__file__)
    for item in items:
        if not str(item.fspath).startswith(here):
            continue
        if not HAVE:
            item.add_marker(pytest.mark.skip(reason="numba-cuda is not installed"))
            continue
        if "gpu" in item.keywords:
            from kernels.cuda.views import simulator
            if simulator():
                item.add_marker(pytest.mark.skip(reason="needs a real GPU (CUDA simulator)"))
