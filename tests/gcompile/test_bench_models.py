"""gcompile.bench_models: the models build under both namespaces, a compiled child
runs a plan and splits its time, and the sweep table/plot come out of its rows."""
import json

import pytest

import gcompile
from gcompile import bench_models as bm


@pytest.fixture
def threads():
    n = gcompile.get_num_threads()
    yield
    gcompile.set_num_threads(n)


@pytest.mark.parametrize("name", ["cnn_train", "lstm_lm_train", "gpt_train", "mlp:16:8"])
def test_compiled_child_runs_a_plan_and_splits_the_step(name, threads):
    r = bm.child("gc_compiled", name, 0.1 if name == "gpt_train" else 0.0, 2, True)
    assert r["plan"] and r["kernels"] > 0 and r["ms"] > 0
    split = r["split"]
    assert set(split) >= {"gemm_ms", "layer_ms", "fused_ms", "python_ms"}
    assert split["gemm_ms"] > 0 and split["python_ms"] >= 0
    assert r["param_mb"] > 0 and r["planned_mb"] >= 0


def test_models_build_the_same_program_under_torch():
    torch = pytest.importorskip("torch")
    for name in bm.MODEL_WORKLOADS:
        model, opt, (x, y), loss_fn = bm.build(torch, name, 0.0, small=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        assert loss.item() > 0


def test_sweep_table_and_plot(tmp_path):
    rows = [{"axis": "batch", "width": 512, "batch": b,
             "gc_eager": {"ms": 2.0 * b, "us_per_sample": 2e3, "mem_mb": 10.0, "param_mb": 2.6},
             "gc_compiled": {"error": "boom"}} for b in (32, 64)]
    table = bm.format_sweep(rows, ["gc_eager", "gc_compiled"])
    assert "2000.00" in table and "failed" in table
    json.dumps(rows)
    pytest.importorskip("matplotlib")
    path = tmp_path / "sweep.png"
    bm.plot_sweep(rows, ["gc_eager"], str(path))
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_unknown_workload_is_rejected():
    with pytest.raises(ValueError, match="unknown model workload"):
        bm.build(gcompile, "resnet", 0.0)
    with pytest.raises(SystemExit):
        bm.main(["nope"])
