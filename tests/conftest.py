"""Suite-wide setup: without a GPU, CUDA tests run on numba's CUDA simulator.

``NUMBA_ENABLE_CUDASIM=1`` must be set before numba.cuda is first imported, and the whole
suite shares one process, so it is set here (the root conftest loads before any test
module) when no NVIDIA driver is present and the variable is unset. Under the simulator
``gcompile.cuda.is_available()`` is True for the whole suite; tests that need CUDA to be
absent patch it (see tests/gcompile/test_errors.py). Tests marked ``gpu`` need a real
device and are skipped under the simulator.
"""
from __future__ import annotations

import os
import shutil
import sys

import pytest


def _driver_present() -> bool:
    return (shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia/version")
            or os.path.exists("/dev/nvidiactl"))


if "NUMBA_ENABLE_CUDASIM" not in os.environ and not _driver_present():
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"
    if "numba" in sys.modules and "numba.cuda" not in sys.modules:
        from numba.core import config as _config
        _config.reload_config()  # numba read its environment before this file ran


def _simulator() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def pytest_collection_modifyitems(config, items):
    if _simulator():
        skip = pytest.mark.skip(reason="needs a real GPU (running on the CUDA simulator)")
    elif not _driver_present():
        skip = pytest.mark.skip(reason="needs a real GPU (no NVIDIA driver found)")
    else:
        return
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(params=[1, 2], ids=["1thread", "2threads"])
def threads(request):
    """The kernel thread count for one test (1 and 2), restored after it."""
    import gcompile
    old = gcompile.get_num_threads()
    gcompile.set_num_threads(request.param)
    yield request.param
    gcompile.set_num_threads(old)
