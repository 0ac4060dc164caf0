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
        pool = _worker_pool(2)  # which compiles what they have not started) take jobs
        for fut in [pool.submit(time.sleep, 0.3) for _ in range(2)]:
            fut.result()

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
    first = runs["parallel"]["first"]  # after the call that built the plan
    assert first["worker_compiles"] >= 2
    # the plan's runs compiled nothing more: the dry run found every variant they use
    after = runs["parallel"]["after"]
    assert after["compiles"] == first["compiles"]
    assert after["worker_compiles"] == first["worker_compiles"]
    assert after["disk_hits"] == first["worker_compiles"]  # loaded through the checked path
    serial = runs["serial"]
    assert serial["first"]["compiles"] == 0  # serial: nothing before the first run
    assert after["compiles"] + after["worker_compiles"] == serial["after"]["compiles"]


def test_parallel_results_equal_serial(runs):
    assert runs["parallel"]["outs"] == runs["serial"]["outs"]
    assert runs["parallel"]["same"] and runs["serial"]["same"]


def test_no_workers_compiles_lazily(runs):
    assert runs["serial"]["after"]["worker_compiles"] == 0
    assert runs["serial"]["after"]["compiles"] >= 2


def test_warm_process_compiles_nothing(runs):
    warm = runs["warm"]["after"]
    assert warm["compiles"] == 0 and warm["worker_compiles"] == 0 and warm["disk_hits"] > 0
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
    assert compile_workers() == 0  # opt-in: see compile_workers' docstring


def test_warm_process_skips_the_dry_run(tmp_path):
    """Once a cold run prepared a plan's kernels, a new process does not dry-run it."""
    key = str(tmp_path / "key")
    _run(tmp_path, "c", "2", key)
    code = PROGRAM.replace("f(*args)                       # traces",
                           "import runtime.lower as rl\n"
                           "def _no(*a):\n"
                           "    raise AssertionError('dry run in a warm process')\n"
                           "rl._dry_run = _no\n"
                           "f(*args)                       # traces")
    assert code != PROGRAM
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / "c"),
               GCOMPILE_COMPILE_WORKERS="2", GCOMPILE_PROGRESS="0",
               GCOMPILE_CACHE_KEY_FILE=key)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    after = json.loads(proc.stdout.strip().splitlines()[-1])["after"]
    assert after["compiles"] == 0 and after["worker_compiles"] == 0
