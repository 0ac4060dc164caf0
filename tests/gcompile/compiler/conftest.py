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


@pytest.fixture
def linear_step():
    """``make(optimizer class)`` -> (model, optimizer, compiled step): a Linear(3, 2)
    trained on ``model(x).sum()`` with lr 0.1, the whole step compiled."""
    import gcompile as torch
    from gcompile import nn

    def make(optimizer):
        torch.manual_seed(0)
        model = nn.Linear(3, 2)
        opt = optimizer(model.parameters(), lr=0.1)

        @torch.compile
        def step(x):
            opt.zero_grad()
            loss = model(x).sum()
            loss.backward()
            opt.step()
            return loss
        return model, opt, step
    return make
