"""``gcompile bench``: eager vs compiled on the issue's workloads, in one process.

Prints, per workload: eager ms, compiled ms, speedup, generated kernels, bytes
moved by the compiled plan, achieved GB/s, first-call latency, and the
machine's copy bandwidth measured in the same run (ratios, not absolute
targets: these machines are noisy). When ``import torch`` works, PyTorch eager
and ``torch.compile`` are timed too; otherwise those columns say why not.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np


def _timeit(fn: Callable[[], object], repeat: int, min_time: float = 0.3) -> float:
    """Median seconds per call (after one warm-up call)."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeat or (time.perf_counter() - start < min_time and len(times) < 50):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _timeit_pair(f: Callable[[], object], g: Callable[[], object], repeat: int,
                 min_time: float = 0.6, rounds: int = 3) -> tuple[float, float]:
    """Median seconds per call of ``f`` and of ``g``, timed in alternating rounds (each
    round one untimed call, then several timed ones), so that a change in the machine's
    load while measuring falls on both alike, but neither call runs in the wake of the
    other (a big eager call unmaps memory and evicts caches)."""
    per = max(2, -(-repeat // rounds))
    tf: list[float] = []
    tg: list[float] = []
    start = time.perf_counter()
    r = 0
    while r < rounds or (time.perf_counter() - start < min_time and len(tf) < 50):
        for fn, out in ((f, tf), (g, tg)):
            fn()
            for _ in range(per):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
        r += 1
    return float(np.median(tf)), float(np.median(tg))


def copy_bandwidth(nbytes: int = 64 << 20) -> float:
    """GB/s of a large ``np.copyto`` (read + write counted), best of a few."""
    src = np.ones(nbytes // 4, np.float32)
    dst = np.empty_like(src)
    best = math.inf
    for _ in range(8):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * nbytes / best / 1e9


def _workloads(small: bool):
    import gcompile as gc
    import gcompile.nn as nn
    import gcompile.nn.functional as F

    gen = gc.Generator().manual_seed(0)
    s = 8 if small else 1

    def gelu():
        x = gc.randn(16 * 1024 * 1024 // s, generator=gen)
        return (lambda x: F.gelu(x, approximate="tanh")), (x,)

    def bias_relu():
        n = 4096 // (2 if small else 1)
        x = gc.randn(n, n, generator=gen)
        w = gc.randn(n, generator=gen)
        b = gc.randn(n, generator=gen)
        return (lambda x, w, b: gc.relu(x * w + b)), (x, w, b)

    def layernorm():
        x = gc.randn(8192 // s, 1024, generator=gen)
        w = gc.randn(1024, generator=gen)
        b = gc.randn(1024, generator=gen)
        return (lambda x, w, b: F.layer_norm(x, (1024,), w, b)), (x, w, b)

    def softmax():
        x = gc.randn(8192 // s, 1024, generator=gen)
        return (lambda x: F.softmax(x, -1)), (x,)

    def mlp_infer():
        gc.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
        model.eval()
        x = gc.randn(256, 784, generator=gen)
        return model, (x,)

    return {"gelu": gelu, "bias_relu": bias_relu, "layernorm": layernorm, "softmax": softmax,
            "mlp_infer": mlp_infer}


def in_new_processes(snippet: str, argv: list[str]) -> dict:
    """Run ``snippet`` (which prints one JSON line last) in a new Python process twice,
    sharing a fresh kernel cache: ``cold`` (empty cache), then ``warm``."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="gcompile-bench-cache-") as cache:
        env = dict(os.environ, GCOMPILE_CACHE_DIR=cache)
        for label in ("cold", "warm"):
            proc = subprocess.run([sys.executable, "-c", snippet, *argv], env=env,
                                  capture_output=True, text=True, timeout=600)
            if proc.returncode != 0:
                out[label] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            out[label] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


_FIRST_CALL_SNIPPET = """
import json, sys, time
t0 = time.perf_counter()
import gcompile as gc
from gcompile.bench import _workloads
t1 = time.perf_counter()
fn, args = _workloads(sys.argv[2] == "1")[sys.argv[1]]()
with gc.no_grad():
    cf = gc.compile(fn)
    t2 = time.perf_counter()
    cf(*args)  # traces (running fn eagerly) and builds the plan
    t3 = time.perf_counter()
    cf(*args)  # the plan's first run: its kernels load (or compile) here
    t4 = time.perf_counter()
from kernels.cpu import cache_stats
print(json.dumps({"import_s": t1 - t0, "trace_s": t3 - t2, "first_run_s": t4 - t3,
                  "first_call_s": t4 - t2, "numba_imported": "numba" in sys.modules,
                  "cache": cache_stats()}))
"""


def first_call_latency(name: str, small: bool = False) -> dict:
    """Seconds from the first call to the first compiled result, in new processes: cold
    (empty kernel cache) and warm (the cache the cold run filled)."""
    return in_new_processes(_FIRST_CALL_SNIPPET, [name, "1" if small else "0"])


TARGETS = {"gelu": "speedup >= 8x and >= 60% of copy GB/s", "bias_relu": "speedup >= 3x",
           "layernorm": "speedup >= 4x", "softmax": "speedup >= 4x",
           "mlp_infer": "speedup >= 1x; arena <= unplanned/2"}


def _torch_times(name: str, make, repeat: int) -> dict:
    try:
        import torch  # noqa: F401
    except ImportError:
        return {"torch_note": "torch not installed: torch columns skipped"}
    import torch
    import torch.nn.functional as TF
    fn, args = make()
    targs = [torch.from_numpy(np.ascontiguousarray(a.numpy())) for a in args]
    if name == "mlp_infer":
        tm = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                                 torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                 torch.nn.Linear(512, 10)).eval()
        tfn = tm
    else:
        tfn = {"gelu": lambda x: TF.gelu(x, approximate="tanh"),
               "bias_relu": lambda x, w, b: torch.relu(x * w + b),
               "layernorm": lambda x, w, b: TF.layer_norm(x, (1024,), w, b),
               "softmax": lambda x: TF.softmax(x, -1)}[name]
    out = {}
    with torch.no_grad():
        out["torch_eager_ms"] = _timeit(lambda: tfn(*targs), repeat) * 1e3
        try:
            cfn = torch.compile(tfn)
            cfn(*targs)
            out["torch_compile_ms"] = _timeit(lambda: cfn(*targs), repeat) * 1e3
        except Exception as e:  # noqa: BLE001 - report, don't fail the bench
            out["torch_note"] = f"torch.compile failed: {type(e).__name__}: {e}"[:120]
    return out


def run_bench(names: list[str] | None = None, repeat: int = 5, small: bool = False,
              with_torch: bool = True, latency: bool = True, progress=None) -> dict:
    """Run the workloads; returns a JSON-ready dict. ``progress``: a
    ``gcompile.progress.Task`` told which workload and system runs now."""
    import gcompile as gc
    from gcompile.compiler import compile as gcompile_compile

    work = _workloads(small)
    names = names or list(work)
    unknown = [n for n in names if n not in work]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from {list(work)}")
    say = _say(progress)
    bw = copy_bandwidth()
    results = []
    for name in names:
        say(name, "gcompile eager vs compiled")
        fn, args = work[name]()
        with gc.no_grad():
            cf = gcompile_compile(fn)
            t0 = time.perf_counter()
            cf(*args)  # trace + compile (first call)
            cf(*args)  # first call of the compiled plan (kernels load here)
            first_s = time.perf_counter() - t0
            eager_s, comp_s = _timeit_pair(lambda fn=fn, args=args: fn(*args),
                                           lambda cf=cf, args=args: cf(*args), repeat)
            ref = fn(*args)
            got = cf(*args)
            err = float(np.max(np.abs(got.numpy() - ref.numpy()))) if got.numel() else 0.0
        entry = cf.entries[0]
        plan = entry.executable.plan
        nbytes = sum(s.bytes_moved for s in plan.steps)
        row = {"workload": name, "eager_ms": eager_s * 1e3, "compiled_ms": comp_s * 1e3,
               "speedup": eager_s / comp_s, "kernels": plan.num_kernels,
               "steps": len(plan.steps),
               "matmuls": sum(1 for s in plan.steps if s.kind == "matmul"),
               "bytes_moved": nbytes, "GB/s": nbytes / comp_s / 1e9,
               "pct_copy_bw": 100.0 * nbytes / comp_s / 1e9 / bw,
               "first_call_s": first_s, "planned_bytes": plan.planned_bytes,
               "unplanned_bytes": plan.unplanned_bytes, "max_abs_err": err,
               "target": TARGETS[name]}
        if with_torch:
            say(name, "PyTorch")
            row.update(_torch_times(name, lambda n=name: work[n](), repeat))
        if latency:
            say(name, "first call in new processes (cold, warm)")
            row["latency"] = first_call_latency(name, small)
        results.append(row)
        say(name, None)
    return {"copy_GB/s": bw, "small": small, "results": results}


def _say(progress):
    """A callback naming the current workload and system on ``progress`` (and advancing
    it when a workload is done, ``system=None``); does nothing without one."""
    def say(name: str, system: str | None) -> None:
        if progress is None:
            return
        if system is None:
            progress.update(1)
            return
        progress.update(description=f"bench {progress.completed + 1}/{progress.total} "
                                    f"{name}: {system}")
    return say


def format_table(report: dict) -> str:
    cols = [("workload", "{:<10}"), ("eager_ms", "{:>9.2f}"), ("compiled_ms", "{:>11.2f}"),
            ("speedup", "{:>7.2f}x"), ("kernels", "{:>7}"), ("bytes_moved", "{:>11}"),
            ("GB/s", "{:>6.1f}"), ("pct_copy_bw", "{:>6.0f}%"), ("first_call_s", "{:>7.2f}s")]
    head = ("workload   eager_ms compiled_ms speedup kernels bytes_moved   GB/s  %copy "
            "first_call")
    lines = [f"copy bandwidth (np.copyto, read+write): {report['copy_GB/s']:.1f} GB/s"
             + ("  [--small sizes]" if report.get("small") else ""), head]
    for r in report["results"]:
        parts = []
        for k, fmt in cols:
            v = r[k]
            if k == "bytes_moved":
                v = f"{v / 1e6:.1f}MB"
            parts.append(fmt.format(v))
        lines.append(" ".join(parts))
    extra = []
    for r in report["results"]:
        if "torch_eager_ms" in r:
            tc = r.get("torch_compile_ms")
            extra.append(f"{r['workload']:<10} torch eager {r['torch_eager_ms']:.2f} ms, "
                         f"torch.compile " + (f"{tc:.2f} ms" if tc else r.get("torch_note", "-")))
        elif "torch_note" in r and not extra:
            extra.append(r["torch_note"])
    mlp = [r for r in report["results"] if r["workload"] == "mlp_infer"]
    for r in mlp:
        extra.append(f"mlp_infer memory: planned arena {r['planned_bytes']} bytes vs "
                     f"unplanned {r['unplanned_bytes']} bytes "
                     f"({r['planned_bytes'] / max(r['unplanned_bytes'], 1):.2f}x)")
    for r in report["results"]:
        extra.append(f"{r['workload']:<10} target: {r['target']}; max |compiled - eager| = "
                     f"{r['max_abs_err']:.2e}")
    for r in report["results"]:
        if "latency" in r:
            parts = []
            for label in ("cold", "warm"):
                v = r["latency"].get(label, {})
                parts.append(f"{label} {v['first_call_s']:.2f} s (trace {v['trace_s']:.2f}, "
                             f"first run {v['first_run_s']:.2f})" if "first_call_s" in v
                             else f"{label} failed: {v.get('error')}")
            extra.append(f"{r['workload']:<10} first call in a new process: " + ", ".join(parts)
                         + " (targets: cold < 5 s, warm < 1 s)")
    return "\n".join(lines + extra)


def main(argv: list[str] | None = None) -> int:
    import argparse
    p = argparse.ArgumentParser(prog="gcompile bench", description=__doc__)
    add_arguments(p)
    return run(p.parse_args(argv))


def add_arguments(p) -> None:
    p.add_argument("workloads", nargs="*", help="subset of: gelu bias_relu layernorm softmax "
                   "mlp_infer mlp_train transformer_block_train cnn_train lstm_lm_train "
                   "gpt_train (default: all)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--repeat", type=int, default=5, help="timed calls per measurement")
    p.add_argument("--small", action="store_true", help="smaller inputs (quick check)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument("--no-latency", action="store_true",
                   help="skip the first-call latency runs in new processes")
    p.add_argument("-o", "--output", metavar="FILE.json",
                   help="also write the results as JSON to this file")
    p.add_argument("--plot", metavar="FILE.png",
                   help="draw the speedups and first-call times as a PNG (needs matplotlib: "
                        "pip install 'gcompile[plot]')")
    p.add_argument("--rounds", type=int, default=2,
                   help="rounds of fresh processes for the real-model workloads (cnn_train, "
                        "lstm_lm_train, gpt_train), which take turns within a round")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout probability in the real-model workloads")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                   help="cuda: the GPU benchmark instead (gcompile.bench_cuda: kernels as %% of "
                        "the device's copy bandwidth, GEMM, MLP and CNN train steps, torch CUDA "
                        "side by side; JSON with -o, a PNG beside it; needs a real GPU)")
    p.add_argument("--quick", action="store_true",
                   help="with --device cuda: smaller sizes, fewer repeats")
    p.add_argument("--sweep", action="store_true",
                   help="instead: the MLP train step over batch 32-1024 and width 256-2048 "
                        "(time per sample and memory; with --plot, a PNG)")


INFER_WORKLOADS = ("gelu", "bias_relu", "layernorm", "softmax", "mlp_infer")


def run(args) -> int:
    """``gcompile bench``: run, print a table (or JSON), optionally save JSON and a plot."""
    from . import bench_models
    from .bench_train import TRAIN_WORKLOADS, format_train_table, run_train_bench
    from .progress import task
    if args.device == "cuda":
        from .bench_cuda import main as cuda_main
        return cuda_main((["--out", args.output] if args.output else [])
                         + (["--quick"] if args.quick or args.small else []))
    if args.sweep:
        return _run_sweep(args)
    names = list(args.workloads or [])
    unknown = [n for n in names if n not in TRAIN_WORKLOADS and n not in INFER_WORKLOADS]
    if unknown:
        print(f"gcompile bench: unknown workload(s) {unknown}; choose from "
              f"{list(INFER_WORKLOADS) + list(TRAIN_WORKLOADS)}", file=sys.stderr)
        return 2
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("gcompile bench: --plot needs matplotlib: pip install 'gcompile[plot]'",
                  file=sys.stderr)
            return 2
    train = [n for n in names if n in TRAIN_WORKLOADS] if names else list(TRAIN_WORKLOADS)
    infer = [n for n in names if n not in TRAIN_WORKLOADS] if names else list(INFER_WORKLOADS)
    # the real models run each system in fresh processes, against PyTorch when installed
    models = [n for n in train if n in bench_models.MODEL_WORKLOADS]
    train = [n for n in train if n not in models]
    report: dict = {}
    with task("bench", total=len(infer) + len(train) + len(models)) as progress:
        if infer:
            report = run_bench(infer, repeat=args.repeat, small=args.small,
                               with_torch=not args.no_torch, latency=not args.no_latency,
                               progress=progress)
        if train:
            report["training"] = run_train_bench(train, repeat=args.repeat, small=args.small,
                                                 latency=not args.no_latency,
                                                 progress=progress)
        if models:
            systems = [s for s in bench_models.SYSTEMS
                       if not (args.no_torch and s.startswith("torch"))]
            report["models"] = bench_models.run(
                models, systems, rounds=args.rounds, steps=args.repeat * 2,
                dropout=args.dropout, small=args.small,
                say=None if progress is None else
                lambda m: progress.update(description=f"bench {m}"))
            if not args.no_latency:
                from .bench_train import compile_latency
                for r in report["models"]:
                    r["latency"] = compile_latency(r["workload"], args.small, args.dropout,
                                                   models=True)
            if progress is not None:
                progress.update(len(models))
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=2)
    if args.plot:
        plot_report(report, args.plot)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    if "results" in report:
        print(format_table(report))
    if train:
        print(format_train_table(report["training"]))
    if models:
        print(bench_models.format_table(report["models"]))
        for r in report["models"]:
            lat = r.get("latency", {})
            if lat:
                print(f"{r['workload']}: first compiled step in a new process: " + ", ".join(
                    f"{k} {v['compile_s']:.2f} s" if "compile_s" in v else f"{k} failed"
                    for k, v in lat.items()))
    for label, path in (("results", args.output), ("plot", args.plot)):
        if path:
            print(f"{label} written to {path}")
    return 0


def _run_sweep(args) -> int:
    from . import bench_models
    systems = [s for s in bench_models.SYSTEMS if not (args.no_torch and s.startswith("torch"))]
    rows = bench_models.sweep(systems, rounds=1, steps=args.repeat,
                              say=lambda m: print(m, file=sys.stderr, flush=True))
    shown = [s for s in systems if any(s in r for r in rows)]
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    if args.plot:
        bench_models.plot_sweep(rows, shown, args.plot)
    print(json.dumps(rows, indent=2) if args.json else bench_models.format_sweep(rows, shown))
    return 0


def plot_report(report: dict, path: str) -> None:
    """Draw a report as a PNG: speedup over eager per workload (left), and the first
    call in a new process, cold and warm kernel cache (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, speed, kind = [], [], []
    for r in report.get("results", []):
        labels.append(r["workload"])
        speed.append(r["speedup"])
        kind.append("compiled")
    for r in report.get("training", []):
        for key, what in (("speedup_module", "module"), ("speedup_step", "whole step")):
            if key in r:
                labels.append(f"{r['workload']}\n{what}")
                speed.append(r[key])
                kind.append(what)
    for r in report.get("models", []):
        eager, comp = r.get("gc_eager", {}).get("ms"), r.get("gc_compiled", {}).get("ms")
        torch_ms = r.get("torch_eager", {}).get("ms")
        if eager and comp:
            labels.append(f"{r['workload']}\nwhole step")
            speed.append(eager / comp)
            kind.append("whole step")
        if torch_ms and comp:
            labels.append(f"{r['workload']}\nvs torch eager")
            speed.append(torch_ms / comp)
            kind.append("vs torch")
    lat_labels, cold, warm = [], [], []
    for r in list(report.get("results", [])) + list(report.get("training", [])):
        lat = r.get("latency")
        if not lat:
            continue
        key = "first_call_s" if "first_call_s" in lat.get("cold", {}) else "compile_s"
        lat_labels.append(r["workload"])
        cold.append(lat.get("cold", {}).get(key, float("nan")))
        warm.append(lat.get("warm", {}).get(key, float("nan")))
    ncols = 2 if lat_labels else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols + max(0, len(labels) - 6) * 0.4, 4.5),
                             squeeze=False)
    ax = axes[0][0]
    colors = {"compiled": "tab:blue", "module": "tab:orange", "whole step": "tab:green",
              "vs torch": "tab:red"}
    ax.bar(range(len(speed)), speed, color=[colors[k] for k in kind])
    ax.axhline(1.0, color="gray", lw=1, ls="--")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("speedup over eager (x); red: over torch eager")
    ax.set_title("gcompile: compiled vs eager")
    if lat_labels:
        ax2 = axes[0][1]
        xs = np.arange(len(lat_labels))
        ax2.bar(xs - 0.2, cold, 0.4, label="cold (empty kernel cache)")
        ax2.bar(xs + 0.2, warm, 0.4, label="warm (cache hit)")
        ax2.set_xticks(xs)
        ax2.set_xticklabels(lat_labels, rotation=45, ha="right", fontsize=8)
        ax2.set_ylabel("seconds")
        ax2.set_title("first call in a new process")
        ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
