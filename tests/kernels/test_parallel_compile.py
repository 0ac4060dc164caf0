"""Cold compiles in parallel: a cold plan's kernels (the variants its first run uses)
compile in worker processes into the signed disk cache, and the parent loads them
through the checked path; results equal the serial path; workers off compiles lazily."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import json, sys
    import numpy as np
    import gcompile as torch
    import gcompile.nn.functional as F
    import os, time
    from kernels.cpu import cache_stats, compile_workers, _worker_pool
    if compile_workers():  # start the workers first, so that they (not only the parent,
        for w in _worker_pool(2):  # which compiles what they have not started) take jobs
            assert w.ready.wait(120), "a compile worker did not start"

    @torch.compile
    def f(x, w, b):
        h = torch.tanh(x) * 2.0 + torch.sigmoid(x)
        y = F.softmax(h @ w + b, -1)          # b broadcasts: a strided variant
        return y, F.layer_norm(h, (16,)), (h.t() * 3.0).sum(0)
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(8, 16, generator=g), torch.randn(16, 16, generator=g),
            torch.randn(16, generator=g))
    f(*args)                       # traces (eagerly) and builds the plan
    first = dict(cache_stats())
    outs = f(*args)                # the plan's first run
    outs2 = f(*args)
    print(json.dumps({"first": first, "after": cache_stats(),
                      "outs": [o.tolist() for o in outs],
                      "same": all(np.array_equal(a.numpy(), b.numpy())
                                  for a, b in zip(outs, outs2))}))
""")


def _run(tmp_path, cache: str, workers: str, key: str | None = None) -> dict:
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / cache),
               GCOMPILE_COMPILE_WORKERS=workers, GCOMPILE_PROGRESS="0")
    if key is not None:
        env["GCOMPILE_CACHE_KEY_FILE"] = key
    proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("parallel_compile")
    key = str(tmp / "key")
    return {"parallel": _run(tmp, "par", "2", key), "serial": _run(tmp, "ser", "0", key),
            "warm": _run(tmp, "par", "2", key),
            "other_key": _run(tmp, "par", "2", str(tmp / "other_key")), "tmp": tmp}


def test_workers_compile_every_variant_the_first_run_uses(runs):
    # building the plan compiles nothing: the variants are found right before its first
    # run, from that call's own inputs (their layouts and aliasing)
    first = runs["parallel"]["first"]
    assert first["worker_compiles"] == 0
    after = runs["parallel"]["after"]
    assert after["worker_compiles"] >= 2
    assert after["disk_hits"] == after["worker_compiles"]  # loaded through the checked path
    # every variant the runs used was found: nothing compiled twice, nothing extra
    serial = runs["serial"]
    assert after["compiles"] + after["worker_compiles"] == serial["after"]["compiles"]


def test_parallel_results_equal_serial(runs):
    assert runs["parallel"]["outs"] == runs["serial"]["outs"]
    assert runs["parallel"]["same"] and runs["serial"]["same"]


def test_no_workers_compiles_lazily(runs):
    assert runs["serial"]["after"]["worker_compiles"] == 0
    assert runs["serial"]["after"]["compiles"] >= 2


def test_warm_process_compiles_nothing(runs):
    warm = runs["warm"]["after"]
    assert warm["compiles"] == 0 and warm["worker_compiles"] == 0 and warm["disk_hits"] > 0, \
        (warm, runs["parallel"]["after"])
    assert runs["warm"]["outs"] == runs["parallel"]["outs"]


def test_objects_signed_by_workers_are_not_trusted_under_another_key(runs):
    other = runs["other_key"]["after"]
    assert other["disk_hits"] == 0 and other["rejected"] == 0
    assert other["compiles"] + other["worker_compiles"] > 0
    assert runs["other_key"]["outs"] == runs["parallel"]["outs"]


def test_workers_setting(monkeypatch):
    from kernels.cpu import compile_workers, prefetch
    monkeypatch.setenv("GCOMPILE_COMPILE_WORKERS", "0")
    assert compile_workers() == 0
    assert prefetch([object()]) == 0
    monkeypatch.setenv("GCOMPILE_COMPILE_WORKERS", "3")
    assert compile_workers() == 3
    monkeypatch.delenv("GCOMPILE_COMPILE_WORKERS")
    from kernels.cpu import _usable_cores
    assert compile_workers() == max(0, min(_usable_cores() - 1, 8))  # on by default


UNGUARDED = textwrap.dedent("""
    # a user script without an ``if __name__ == "__main__"`` guard: compile workers must
    # not run it again (multiprocessing's spawn and fork server would import it)
    import json, sys
    print("TOP-LEVEL RAN", flush=True)
    import gcompile as torch
    from kernels.cpu import cache_stats, _worker_pool
    for w in _worker_pool(1):
        assert w.ready.wait(120), "a compile worker did not start"

    @torch.compile
    def f(x):
        a = torch.tanh(x) * 3.0
        b = torch.softmax(a @ x.t() + 1.0, -1)
        return a.sum(1), b, torch.sigmoid(x).mean(0)
    x = torch.randn(8, 8)
    f(x)
    f(x)
    print(json.dumps(cache_stats()))
""")


def test_workers_never_run_the_main_script_again(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(UNGUARDED)
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / "c"), GCOMPILE_PROGRESS="0",
               GCOMPILE_CACHE_KEY_FILE=str(tmp_path / "key"), GCOMPILE_COMPILE_WORKERS="1")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("TOP-LEVEL RAN") == 1, proc.stdout
    stats = json.loads(proc.stdout.strip().splitlines()[-1])
    assert stats["worker_compiles"] >= 1  # the workers did compile


TWO_PLANS = textwrap.dedent("""
    import json
    import numpy as np
    import gcompile as torch
    from kernels.cpu import cache_stats

    def f(x):
        return torch.tanh(torch.sigmoid(x) * 1.75) - x * 0.375

    def g(y):  # another function, another plan, the same kernel
        return torch.tanh(torch.sigmoid(y) * 1.75) - y * 0.375

    x = torch.randn(16, 32)
    cf, cg = torch.compile(f), torch.compile(g)
    cf(x)
    a = cf(x)
    one = cache_stats()["compiles"]
    cg(x)
    b = cg(x)
    print(json.dumps({"one": one, "two": cache_stats()["compiles"],
                      "same": bool(np.array_equal(a.numpy(), b.numpy()))}))
""")


def test_identical_kernels_across_plans_compile_once(tmp_path):
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / "c"), GCOMPILE_PROGRESS="0",
               GCOMPILE_CACHE_KEY_FILE=str(tmp_path / "key"), GCOMPILE_COMPILE_WORKERS="0")
    proc = subprocess.run([sys.executable, "-c", TWO_PLANS], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["one"] >= 1 and out["two"] == out["one"] and out["same"]


FORK = textwrap.dedent("""
    import os
    from kernels.cpu import _POOL_STATE, _WORKERS, _shutdown_workers, _worker_pool
    ws = _worker_pool(1)
    assert ws and ws[0].ready.wait(120)
    pid = os.fork()
    if pid == 0:  # the child has no workers and may start its own
        os._exit(0 if not _WORKERS and not _POOL_STATE["started"] else 3)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0, "the forked child kept the parent's workers"
    assert all(w.alive for w in _WORKERS)  # the parent's are untouched
    _shutdown_workers()
    assert [w.proc.returncode for w in ws] == [0]  # it exits when its input closes
    print("ok")
""")


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_forgets_the_workers(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", FORK], capture_output=True, text=True,
                          env=env, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


EARLY = textwrap.dedent("""
    import json
    import numpy as np
    from kernels.cpu import _POOL_STATE, _WORKERS, _shutdown_workers, compile_kernel
    from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var
    started = []
    for c in (1.5, 2.5, 3.5):  # three kernels compiled cold, one after another
        spec = KernelSpec(("float32",), (("float32", "full"),), (Phase("map", (
            Stmt("y", "mul", (inp(0), const(c, "float32")), (), "float32"),),
            stores=((0, var("y")),)),), "elementwise")
        x = np.ones(4, np.float32)
        out = np.empty_like(x)
        compile_kernel(spec)([x], [out])
        assert out[0] == np.float32(c)
        started.append(bool(_POOL_STATE["started"]))
    workers = len(_WORKERS)
    _shutdown_workers()
    print(json.dumps({"started": started, "workers": workers}))
""")


@pytest.mark.parametrize("workers", ["1", "0"])
def test_workers_start_at_the_third_cold_compile(tmp_path, workers):
    """A process compiling kernels cold one by one (a model's eager first call) starts
    its compile workers at the third, so they are warm when a plan's batch comes."""
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / "c"), GCOMPILE_PROGRESS="0",
               GCOMPILE_CACHE_KEY_FILE=str(tmp_path / "key"), GCOMPILE_COMPILE_WORKERS=workers)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", EARLY], capture_output=True, text=True,
                          env=env, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if workers == "1":
        assert out == {"started": [False, False, True], "workers": 1}
    else:
        assert out == {"started": [False, False, False], "workers": 0}


NATIVES = textwrap.dedent("""
    import json
    import numpy as np
    import gcompile as torch
    from gcompile import nn
    from kernels.cpu import cache_stats, handwritten, _DEFERRED, _POOL_STATE
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(50, 16), nn.Dropout(0.25), nn.Linear(16, 50))
    opt = torch.optim.Adam(model.parameters(), lr=0.01)

    @torch.compile
    def step(idx, tgt):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(idx).reshape(-1, 50), tgt.reshape(-1))
        loss.backward()
        opt.step()
        return loss

    g = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 50, (4, 8), generator=g)
    tgt = torch.randint(0, 50, (4, 8), generator=g)
    losses = [step(idx, tgt).item()]  # eager first step, traced: nothing compiles here
    first = dict(cache_stats())
    deferred = sorted(k.name for k in _DEFERRED.values())
    losses += [step(idx, tgt).item() for _ in range(3)]
    print(json.dumps({"first": first, "deferred": deferred, "after": cache_stats(),
                      "plan": bool(step.entries),
                      "started": _POOL_STATE["started"], "losses": losses,
                      "loaded": sorted(k.name for op in ("rand_uniform", "embedding_backward")
                                       for k in handwritten.loaded_for(op))}))
""")


def _natives(tmp_path, cache: str, workers: str) -> dict:
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / cache), GCOMPILE_PROGRESS="0",
               GCOMPILE_CACHE_KEY_FILE=str(tmp_path / "key"), GCOMPILE_COMPILE_WORKERS=workers)
    proc = subprocess.run([sys.executable, "-c", NATIVES], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hand_written_kernels_a_trace_meets_compile_with_the_plans_batch(tmp_path):
    """Dropout's random stream and the embedding gradient's scatter kernels are not
    compiled one after another on a compiled step's first (traced) call: their ops take
    the NumPy reference there, the workers start and take them at once, and the plan's
    batch waits for them. Results equal those of a process without workers (which
    compiles them lazily) and of a warm process, bit for bit."""
    par = _natives(tmp_path, "par", "1")
    assert par["plan"] and par["first"]["compiles"] == 0 and par["started"]
    assert {"rand_uniform_float32", "bucket_int64", "segment_add"} <= set(par["deferred"])
    assert {"rand_uniform_float32", "segment_add"} <= set(par["loaded"])
    assert par["after"]["worker_compiles"] >= 3
    serial = _natives(tmp_path, "ser", "0")
    assert serial["first"]["compiles"] == 0 and not serial["started"]
    assert serial["losses"] == par["losses"]
    warm = _natives(tmp_path, "par", "1")
    assert warm["after"]["compiles"] == 0 and warm["after"]["worker_compiles"] == 0
    assert not warm["deferred"] and warm["losses"] == par["losses"]
