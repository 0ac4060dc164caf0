"""Every library, matmul and kernel step of the benchmark models' compiled training
steps runs bound, one native call each (``benchmarks/step_python.py`` measures their
Python)."""
import importlib.util
import pathlib

import pytest

from kernels.cpu import native_pool

pytestmark = pytest.mark.skipif(not native_pool.available(),
                                reason="bindings run through the native thread pool")


def _script():
    path = pathlib.Path(__file__).parents[2] / "benchmarks" / "step_python.py"
    spec = importlib.util.spec_from_file_location("step_python", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("workload", ["cnn_train", "lstm_lm_train", "gpt_train"])
def test_every_library_and_matmul_step_is_bound(workload):
    rows = _script().measure(workload)
    assert rows
    unbound = [name for name, _, bound, _, _ in rows if not bound]
    assert not unbound, f"steps without a binding: {unbound}"
    assert all(calls == 1 for _, _, _, _, calls in rows), "one native call per step"
