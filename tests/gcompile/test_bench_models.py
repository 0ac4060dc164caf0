"""gcompile.bench_models: the models build under both namespaces, a compiled child
runs a plan and splits its time, and the sweep table/plot come out of its rows."""
import json

import numpy as np

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
    assert set(split) >= {"gemm_ms", "conv_ms", "layer_ms", "fused_ms", "python_ms"}
    assert split["gemm_ms"] > 0 and split["python_ms"] >= 0
    assert (split["conv_ms"] > 0) == (name == "cnn_train")  # conv steps hold their GEMMs
    assert (split["gflop"]["conv"] > 0) == (name == "cnn_train")
    assert split["gflop"]["gemm"] > 0 and split["blas_gflops"] > 0
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
    assert "2000.00" in table and "failed" in table and "planned MB" not in table
    rows[1]["gc_compiled"] = {"ms": 1.0, "us_per_sample": 1e3, "mem_mb": 12.5,
                              "param_mb": 2.6, "planned_mb": 3.25}
    table = bm.format_sweep(rows, ["gc_eager", "gc_compiled"])
    head, _, last = table.splitlines()
    assert "planned MB" in head and last.split()[-3:] == ["1000.00", "12.5", "3.2"]
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


def test_gcompile_bench_runs_the_real_models_in_fresh_processes(monkeypatch, capsys):
    """``gcompile bench cnn_train`` goes to bench_models (each system in its own process),
    ``--sweep`` to the sweep; both print their tables."""
    from gcompile import bench

    seen = {}

    def fake_run(names, systems, rounds=3, steps=10, dropout=0.0, small=False, say=None):
        seen.update(names=names, systems=systems, rounds=rounds, dropout=dropout)
        return [{"workload": n, "dropout": dropout, "gc_eager": {"ms": 4.0},
                 "gc_compiled": {"ms": 2.0, "plan": True}} for n in names]

    monkeypatch.setattr(bm, "run", fake_run)
    assert bench.main(["cnn_train", "--no-torch", "--no-latency", "--rounds", "2",
                       "--dropout", "0.1"]) == 0
    out = capsys.readouterr().out
    assert seen == {"names": ["cnn_train"], "systems": ["gc_eager", "gc_compiled"],
                    "rounds": 2, "dropout": 0.1}
    assert "cnn_train" in out and "2.00x" in out

    monkeypatch.setattr(bm, "sweep", lambda systems, rounds=1, steps=5, say=None: [
        {"axis": "batch", "width": 512, "batch": 32,
         "gc_eager": {"ms": 1.0, "us_per_sample": 31.25, "mem_mb": 3.0, "param_mb": 2.6}}])
    assert bench.main(["--sweep", "--no-torch"]) == 0
    assert "31.25" in capsys.readouterr().out


def test_jax_system_is_left_out_without_jax(monkeypatch):
    monkeypatch.setattr(bm, "_jax_available", lambda: False)
    rows = bm.run(["mlp:16:8"], ["gc_eager", "jax_jit"], rounds=1, steps=1, small=True,
                  turns=1, pause_s=0.0)
    assert "jax_jit" not in rows[0] and rows[0]["gc_eager"]["ms"] > 0


def test_jax_child_trains_the_mlp():
    if not bm._jax_available():
        pytest.skip("JAX is not installed (the benchmark's optional yardstick)")
    # in a child process, as the benchmark runs it: JAX's threads must not live in the
    # test process (later tests fork)
    r = bm._run_child("jax_jit", "mlp:32:8", 0.0, 3, False)
    assert r["ms"] > 0 and 0 < r["loss"] < 10
    assert "mlp" in bm._run_child("jax_jit", "cnn_train", 0.0, 1, False)["error"]
    table = bm.format_table([{"workload": "mlp:32:8", "gc_compiled": {"ms": 2.0},
                              "jax_jit": {"ms": 1.0}}])
    assert "compiled/jax 2.00x" in table


def test_compiled_child_counts_the_steps_gemm_flops_against_the_blas_rate(threads):
    # MLP 784-W-W-10 at batch B: three forward GEMMs, three weight gradients, and the
    # input gradients of the second and third layers (the batch needs none)
    w, b = 16, 8
    r = bm.child("gc_compiled", f"mlp:{w}:{b}", 0.0, 2, True)
    fwd = 2 * b * (784 * w + w * w + w * 10)
    want = 2 * fwd + 2 * b * (w * w + w * 10)
    split = r["split"]
    assert split["gflop"]["gemm"] * 1e9 == pytest.approx(want)
    assert split["gflop"]["conv"] == 0 and split["blas_gflops"] > 0
    line = bm._rate_lines("mlp", dict(split, gemm_ms=1.0, conv_ms=0.0,
                                      gflop={"gemm": 0.2, "conv": 0.0}, blas_gflops=100.0))
    assert line == ["    mlp: GEMM 1.0 ms for 0.20 GFLOP (200 GFLOP/s) = 0.50x the time at "
                    "the BLAS rate (100 GFLOP/s, a 1024^3 float32 GEMM)"]
    # with convolutions too: each kind, then all of the step's products together
    line = bm._rate_lines("cnn", dict(split, gemm_ms=2.0, conv_ms=6.0,
                                      gflop={"gemm": 0.1, "conv": 0.5}, blas_gflops=100.0))
    assert line == ["    cnn: GEMM 2.0 ms for 0.10 GFLOP (50 GFLOP/s) = 2.00x; conv 6.0 ms "
                    "for 0.50 GFLOP (83 GFLOP/s) = 1.20x; all products 8.0 ms for 0.60 GFLOP "
                    "(75 GFLOP/s) = 1.33x the time at the BLAS rate (100 GFLOP/s, a 1024^3 "
                    "float32 GEMM)"]


def test_split_takes_the_median_call_so_one_stall_does_not_move_it():
    def call(gemm_s):
        return [{"step": "matmul a", "kind": "matmul", "seconds": gemm_s},
                {"step": "lstm_scan %1", "kind": "library", "seconds": 0.002},
                {"step": "reshape %2", "kind": "view", "seconds": 0.0001}]
    gemms = [0.001, 0.001, 0.0011, 0.001, 0.007]   # the last call stalled 6 ms
    records = [r for g in gemms for r in call(g)]
    walls = [g + 0.0035 for g in gemms]
    sp = bm._split(records, walls)
    assert sp["gemm_ms"] == pytest.approx(1.0) and sp["layer_ms"] == pytest.approx(2.0)
    assert sp["python_ms"] == pytest.approx(1.5)   # wall - steps, views counted as Python
    assert sp["top_layer_steps"] == [("lstm_scan %1", pytest.approx(2.0))]
    # records that are not one per step and call: the mean per call
    sp = bm._split(records[:-1], walls)
    assert sp["gemm_ms"] == pytest.approx(1e3 * sum(gemms) / 5)


def test_serve_answers_ready_then_each_turn_then_its_report(threads):
    import io
    out = io.StringIO()
    bm.serve("gc_compiled", "mlp:16:8", 0.0, True,
             stdin=io.StringIO("2\n3\nprofile 2\nrate\ndone\n"), stdout=out)
    ready, first, second, split, rate, report = [json.loads(line)
                                                 for line in out.getvalue().splitlines()]
    assert ready == "ready" and len(first) == 2 and len(second) == 3
    assert all(t > 0 for t in first + second)
    assert split["gemm_ms"] > 0 and "blas_gflops" not in split and rate["blas_gflops"] > 0
    # the report is of the timed steps only (the profiled ones are not in its median)
    assert report["ms"] == pytest.approx(1e3 * sorted(first + second)[2])  # median of 5
    assert report["plan"] and "split" not in report
    out = io.StringIO()
    bm.serve("gc_eager", "resnet", 0.0, True, stdin=io.StringIO("1\n"), stdout=out)
    assert "unknown model workload" in json.loads(out.getvalue())["error"]


def test_rows_take_medians_over_turns_and_pair_ratios_within_a_turn():
    # turn 3 ran on a slow machine for both systems: the paired ratio ignores it
    per_turn = {"gc_compiled": [9.0, 9.0, 18.0, None], "torch_eager": [10.0, 10.0, 20.0, 10.0]}
    reports = {"gc_compiled": [{"plan": True}], "torch_eager": [{"error": "late"}]}
    row = bm._row("w", 0.0, ["gc_compiled", "torch_eager"], per_turn, reports)
    assert row["gc_compiled"]["ms"] == 9.0 and row["gc_compiled"]["turns"] == [9.0, 9.0, 18.0]
    assert row["gc_compiled"]["paired"] == pytest.approx(0.9)
    assert row["gc_compiled"]["plan"] and row["torch_eager"]["ms"] == 10.0
    assert "paired" not in row["torch_eager"]
    row = bm._row("w", 0.0, ["gc_eager"], {"gc_eager": [None]}, {"gc_eager": [{"error": "x"}]})
    assert row["gc_eager"] == {"error": "x"}
    assert "per turn" in bm.format_table([bm._row("w", 0.0, ["gc_compiled", "torch_eager"],
                                                  per_turn, reports)])


def test_rows_give_the_turns_with_the_cores_near_apart():
    # turn 2's probes saw the cores far apart (4.9 against a baseline of 1.7): the near
    # figures leave that turn out, the all-turn ones keep it
    per_turn = {"gc_compiled": [9.0, 30.0, 9.2], "torch_eager": [10.0, 30.0, 10.0]}
    probes = [[1.7, 1.8, 1.7], [1.8, 4.9, 5.0], [1.9, 1.7, None]]
    fast = {"gemm_ms": 5.0, "conv_ms": 0.0, "layer_ms": 1.0, "fused_ms": 2.0,
            "python_ms": 0.1, "top_layer_steps": []}
    slow = dict(fast, gemm_ms=4.0)  # a smaller total, but profiled with the cores far
    splits = [(slow, [4.8, 4.9]), (fast, [1.8, 1.7])]
    row = bm._row("w", 0.0, ["gc_compiled", "torch_eager"], per_turn,
                  {"gc_compiled": [{"plan": True}], "torch_eager": [{}]}, probes, splits)
    assert row["probe"] == {"baseline": 1.7, "best": 1.7, "median": 1.8, "near_turns": 2,
                            "turns": 3,
                            "near": [True, False, True], "worst_per_turn": [1.8, 5.0, 1.9]}
    c, t = row["gc_compiled"], row["torch_eager"]
    assert c["ms"] == 9.2 and c["near_ms"] == pytest.approx(9.1)
    assert t["near_ms"] == 10.0
    assert c["paired"] == pytest.approx(0.92) and c["paired_near"] == pytest.approx(0.91)
    assert c["split"] is fast and c["split_near"]
    text = bm.format_table([row])
    assert "w with the cores near: 2 of 3 turns" in text
    assert "compiled 9.1 ms, torch 10.0 ms, compiled/torch 0.91x" in text
    # no near turn: said, with no near figures
    far = bm._row("w", 0.0, ["gc_compiled"], {"gc_compiled": [9.0]},
                  {"gc_compiled": [{"plan": True}]}, [[5.0, 1.0]], [])
    assert far["probe"]["near_turns"] == 0 and "near_ms" not in far["gc_compiled"]
    # a workload whose every probe saw the cores far, in a run whose other workloads
    # set the baseline: no near turn
    far = bm._row("w", 0.0, ["gc_compiled"], {"gc_compiled": [9.0, 9.1]},
                  {"gc_compiled": [{"plan": True}]}, [[2.1, 2.2], [2.0, 2.1]], [], base=1.4)
    assert far["probe"]["near_turns"] == 0 and far["probe"]["baseline"] == 1.4
    far = bm._row("w", 0.0, ["gc_compiled"], {"gc_compiled": [9.0]},
                  {"gc_compiled": [{"plan": True}]}, [[2.1, 2.2]], [(slow, [2.1, 2.0])],
                  base=1.4)
    assert far["gc_compiled"]["split"] is slow and not far["gc_compiled"]["split_near"]
    assert "no profile ran with the cores near" in bm.format_table([far])
    # no probe answered (one CPU): every turn counts, no near line
    none = bm._row("w", 0.0, ["gc_compiled"], {"gc_compiled": [9.0]},
                   {"gc_compiled": [{"plan": True}]}, [[None, None]], [])
    assert "probe" not in none and "near_ms" not in none["gc_compiled"]


def test_run_takes_turns_in_live_processes():
    probes = []

    def probe():
        probes.append(1.5)
        return 1.5
    rows = bm.run(["mlp:16:8"], ["gc_eager", "gc_compiled"], rounds=1, steps=2, small=True,
                  turns=2, pause_s=0.0, probe=probe)
    for s in ("gc_eager", "gc_compiled"):
        assert len(rows[0][s]["turns"]) == 2 and rows[0][s]["near_ms"] > 0
    assert rows[0]["gc_compiled"]["plan"]
    # a probe before each system's turn and after the last; then two profiles, each with
    # the BLAS rate after it, between probes
    assert rows[0]["probe"]["near_turns"] == 2 and len(probes) == 2 * 3 + 2 * 3
    sp = rows[0]["gc_compiled"]["split"]
    assert sp["gemm_ms"] > 0 and sp["blas_gflops"] > 0
    bad = bm.run(["resnet"], ["gc_eager"], rounds=1, steps=1, turns=1, pause_s=0.0)
    assert "unknown model workload" in bad[0]["gc_eager"]["error"]


@pytest.mark.parametrize("name", ["cnn_train", "lstm_lm_train", "gpt_train"])
def test_compiled_training_equals_eager_step_by_step(name, threads):
    """The benchmark's three models (small shapes), whole step compiled against eager from
    the same initial weights: the same loss at every step and the same weights after."""
    def run(compiled: bool):
        gcompile.manual_seed(0)
        model, opt, (x, y), loss_fn = bm.build(gcompile, name, 0.0, small=True)
        step = bm.train_step(model, opt, loss_fn)
        fn = gcompile.compile(step) if compiled else step
        losses = [float(fn(x, y)) for _ in range(4)]
        if compiled:
            assert fn.entries and not fn.graph_breaks, "the compiled step ran a plan"
        return losses, {k: p.detach().numpy().copy() for k, p in model.named_parameters()}
    le, pe = run(False)
    lc, pc = run(True)
    np.testing.assert_allclose(lc, le, rtol=1e-5, atol=1e-6)
    for k in pe:
        # Adam(W) divides by sqrt(v): summation-order rounding in near-zero gradients
        # moves a weight by up to lr per step
        np.testing.assert_allclose(pc[k], pe[k], rtol=1e-3, atol=1e-4, err_msg=k)
