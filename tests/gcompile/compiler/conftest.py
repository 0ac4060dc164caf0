"""A private kernel cache folder for the compiler tests (cold at session start)."""
import os
import shutil
import tempfile

import pytest

_CACHE = tempfile.mkdtemp(prefix="gcompile-test-kernels-")
os.environ["GCOMPILE_CACHE_DIR"] = _CACHE


@pytest.fixture(scope="session")
def kernel_cache_dir():
    yield _CACHE
    shutil.rmtree(_CACHE, ignore_errors=True)


@pytest.fixture
def reference_kernels():
    """Lower to KernelSpecs but evaluate them with NumPy (no Numba compiles): for
    broad op coverage of the lowering without paying a compile per op."""
    from runtime import lower
    from runtime.reference import ReferenceKernel
    old = lower._KERNEL_FACTORY
    lower.set_kernel_factory(ReferenceKernel)
    yield
    lower.set_kernel_factory(old)
