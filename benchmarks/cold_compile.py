"""Cold and warm first call of the benchmark training steps, each in a fresh process.

    python benchmarks/cold_compile.py [--rounds 1] [--workers N] [workloads ...]

For each workload of ``gcompile.bench_models`` (default: cnn_train, lstm_lm_train,
gpt_train) a child process builds the model and optimizer, compiles the training step
(``gcompile.compile``) and times its "first call": every call up to and including the
first one that runs the compiled plan (the first call of a training step runs eagerly,
creating the optimizer's state; the second traces and builds the plan; the third runs
it, compiling its kernels):

- **cold**: ``XDG_CACHE_HOME`` points to a new, empty folder, so every kernel compiles;
- **warm**: a second fresh process on the folder the cold one filled (kernel cache hit).

Printed per run: the wall time of those calls (and of each), the child's CPU time over
them, the whole child process's wall and CPU time (its own plus that of its compile
workers: ``RUSAGE_CHILDREN`` of this process), kernels compiled in process and in
workers, and time per phase (seconds, summed over the calls): ``trace`` (running the
step under the tracer, eager kernels compiling included), ``autodiff``, ``passes``,
``fusion``, ``lower`` (spec building, main-variant sources), ``memory plan``,
``executable``, then ``codegen`` (variant sources), ``numba`` (Numba compiles in this
process, wherever they happen) and ``load`` (machine code into the engine). Phases nest:
``codegen``/``numba``/``load`` also count inside ``trace`` or the plan's first run.

The machine this was written on has 2 cores shared with other jobs: compare CPU time
as well as wall time, and several rounds.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKLOADS = ("cnn_train", "lstm_lm_train", "gpt_train")


def _child(name: str) -> dict:
    """Run in the fresh process: time the first call of ``name``'s compiled step."""
    t_start = time.perf_counter()
    import io
    import logging

    import gcompile as tm
    import kernels.cpu as kc
    from gcompile.bench_models import build, train_step
    from kernels.cpu import codegen, native
    from runtime import logs

    phases: dict[str, float] = {}

    def timed(mod, attr: str, key: str) -> None:
        fn = getattr(mod, attr)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                phases[key] = phases.get(key, 0.0) + time.perf_counter() - t0
        setattr(mod, attr, wrapper)

    for attr in ("elementwise_source", "rows_source", "rows_blocked_source"):
        timed(codegen, attr, "codegen")
    timed(kc, "_compile_object", "numba")
    timed(native, "load", "load")
    # the compile pipeline's stages, read from the ``stages`` log channel
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    logs.LOGGER.getChild("stages").addHandler(handler)
    os.environ["GCOMPILE_LOG"] = "stages"
    logs.LOGGER.getChild("stages").propagate = False

    tm.set_num_threads(int(os.environ.get("GCOMPILE_BENCH_THREADS", "2")))
    model, opt, (x, y), loss_fn = build(tm, name)
    model.train()

    step = train_step(model, opt, loss_fn)

    fn = tm.compile(step)
    import_s = time.perf_counter() - t_start
    # the first call runs eagerly (it creates the optimizer's state), the second traces
    # and builds the plan, the third runs it (compiling its kernels): "first call" is
    # every call up to and including the first one that ran the compiled plan
    calls = []
    c0 = time.process_time()
    t0 = time.perf_counter()
    while True:
        ran_plan = bool(fn.entries)
        t1 = time.perf_counter()
        float(fn(x, y))
        calls.append(time.perf_counter() - t1)
        if ran_plan or len(calls) >= 6:
            break
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    os.environ["GCOMPILE_LOG"] = ""
    for line in buf.getvalue().splitlines():
        m = re.match(r"== (.+?) \(([\d.]+) ms\)", line)
        if m:
            key = m.group(1).split(" (")[0]
            phases[key] = phases.get(key, 0.0) + float(m.group(2)) / 1e3
    t1 = time.perf_counter()
    float(fn(x, y))
    second = time.perf_counter() - t1
    st = kc.cache_stats()
    kc._shutdown_workers()  # join the workers, so their CPU time is the parent's to see
    return {"workload": name, "wall_s": wall, "cpu_s": cpu, "next_call_s": second,
            "calls_s": calls, "compiled": bool(fn.entries),
            "import_build_s": import_s, "compiles": st["compiles"],
            "worker_compiles": st["worker_compiles"], "disk_hits": st["disk_hits"],
            "phases": phases}


def _run(name: str, cache_home: str, workers: str | None) -> dict:
    env = dict(os.environ, XDG_CACHE_HOME=cache_home, GCOMPILE_PROGRESS="0")
    env.pop("GCOMPILE_CACHE_DIR", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    if workers is not None:
        env["GCOMPILE_COMPILE_WORKERS"] = workers
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", name],
                          capture_output=True, text=True, env=env, cwd=ROOT)
    total = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: child failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_cpu_s"] = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    out["process_wall_s"] = total
    return out


def _fmt(r: dict, label: str) -> str:
    ph = r["phases"]
    order = ("trace", "autodiff", "passes", "fusion", "lower", "memory plan", "executable",
             "codegen", "numba", "load")
    parts = " ".join(f"{k}={ph[k]:.2f}" for k in order if k in ph)
    calls = "+".join(f"{c:.2f}" for c in r["calls_s"])
    return (f"{r['workload']:<14} {label:<5} first call {r['wall_s']:6.2f} s wall "
            f"({calls}{'' if r['compiled'] else ', NO PLAN'}) "
            f"{r['cpu_s']:6.2f} s cpu (process {r['process_wall_s']:5.1f} s wall, "
            f"{r['process_cpu_s']:5.1f} s cpu incl. workers)  compiled {r['compiles']}"
            f"+{r['worker_compiles']}w, disk hits {r['disk_hits']}\n"
            f"{'':<21}phases (s): {parts}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--workers", default=None,
                   help="GCOMPILE_COMPILE_WORKERS for the children (default: unset)")
    p.add_argument("--json", metavar="FILE", help="also write the runs as JSON")
    p.add_argument("workloads", nargs="*", default=list(WORKLOADS))
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child)))
        return 0
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"# {os.cpu_count()} cores, load average {load:.2f} (a loaded machine inflates "
          "wall time; CPU time is the steadier figure)", flush=True)
    runs: list[dict] = []
    for _ in range(args.rounds):
        for name in args.workloads:
            with tempfile.TemporaryDirectory(prefix="gcompile-cold-") as home:
                cold = _run(name, home, args.workers)
                print(_fmt(cold, "cold"), flush=True)
                warm = _run(name, home, args.workers)
                print(_fmt(warm, "warm"), flush=True)
                runs.append({"cold": cold, "warm": warm})
    if args.rounds > 1:
        for name in args.workloads:
            got = [r for r in runs if r["cold"]["workload"] == name]
            med = {k: statistics.median(r[c][f] for r in got)
                   for k, (c, f) in {"cold wall": ("cold", "wall_s"),
                                     "cold cpu": ("cold", "process_cpu_s"),
                                     "warm wall": ("warm", "wall_s")}.items()}
            print(f"{name:<14} median: " + ", ".join(f"{k} {v:.2f} s" for k, v in med.items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(runs, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
