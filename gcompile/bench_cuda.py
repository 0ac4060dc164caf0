"""GPU benchmark of the CUDA back end, one command, JSON (+ PNG with matplotlib):

    gcompile bench --device cuda [--out cuda_bench.json] [--quick]
    python benchmarks/cuda_bench.py ...          (the same, from a checkout)

- device copy bandwidth (the ceiling): a contiguous float32 copy through
  ``kernels.cuda.copy_into``, and numba's own device-to-device copy;
- fused elementwise: tanh-GELU of ``x * a + b`` (one generated kernel: 3 reads with a
  broadcast, 1 write) in GB/s and % of the copy bandwidth (goal: >= 80%);
- reductions: a row sum and a row softmax over 8192 x 1024 float32, in GB/s and % of copy;
- GEMM: 4096^3 float32 (cuBLAS via nvmath-python when usable, else the tiled kernel), TFLOP/s;
- an MLP train step (784-1024-1024-10, batch 512, SGD) and the MNIST-style CNN train
  step of ``gcompile bench cnn_train`` (``bench_models``) on the device, eager and as
  one compiled step, ms;
- the same with torch on CUDA (eager, and torch.compile) when torch with CUDA is installed.

Times are CUDA-event medians after warm-up. Refuses to run under the CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) or without a GPU: its numbers would mean nothing.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def _refuse_without_gpu() -> None:
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0"):
        sys.exit("cuda_bench: refusing to run under the CUDA simulator "
                 "(NUMBA_ENABLE_CUDASIM is set): simulated timings mean nothing")
    try:
        from numba import cuda
    except ImportError:
        sys.exit("cuda_bench: numba-cuda is not installed (pip install 'gcompile[cuda]')")
    if not cuda.is_available():
        sys.exit("cuda_bench: no CUDA GPU found")


def _time_ms(fn, reps: int) -> float:
    from numba import cuda
    fn()
    cuda.synchronize()
    ts = []
    for _ in range(reps):
        start, stop = cuda.event(), cuda.event()  # timing is the default
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        ts.append(start.elapsed_time(stop))
    return statistics.median(ts)


def _gbs(nbytes: int, ms: float) -> float:
    return nbytes / (ms * 1e-3) / 1e9


def bench_kernels(n: int, rows: int, cols: int, reps: int) -> dict:
    from numba import cuda

    from kernels.cuda import compile_kernel, copy_into, empty
    from kernels.cuda.ops import reduction_spec, softmax_spec
    from kernels.spec import KernelSpec, Phase, Stmt
    rng = np.random.default_rng(0)
    x = cuda.to_device(rng.standard_normal(n).astype(np.float32))
    y = empty((n,), np.float32)
    out: dict = {}
    ms = _time_ms(lambda: copy_into(y, x), reps)
    out["copy_kernel"] = {"ms": ms, "GB/s": _gbs(2 * 4 * n, ms)}
    ms = _time_ms(lambda: y.copy_to_device(x), reps)
    out["copy_driver"] = {"ms": ms, "GB/s": _gbs(2 * 4 * n, ms)}
    copy_bw = max(out["copy_kernel"]["GB/s"], out["copy_driver"]["GB/s"])
    out["copy_GB/s"] = copy_bw

    f = "float32"
    st = (Stmt("m", "mul", (("in", 0), ("in", 1)), (), f),
          Stmt("s", "add", (("v", "m"), ("in", 2)), (), f),
          Stmt("g", "gelu", (("v", "s"),), (("approximate", "tanh"),), f))
    spec = KernelSpec((f, f, f), ((f, "full"),), (Phase("map", st, stores=((0, ("v", "g")),)),),
                      "elementwise")
    k = compile_kernel(spec)
    a = cuda.to_device(rng.standard_normal(n).astype(np.float32))
    b = cuda.to_device(np.float32([0.5]))  # broadcast
    ms = _time_ms(lambda: k.elementwise([x, a, b], [y], (n,)), reps)
    bw = _gbs(3 * 4 * n, ms)
    out["fused_gelu"] = {"ms": ms, "GB/s": bw, "pct_of_copy": 100 * bw / copy_bw}

    m = cuda.to_device(rng.standard_normal((rows, cols)).astype(np.float32))
    r = empty((rows,), np.float32)
    ks = compile_kernel(reduction_spec("sum", f, f))
    ms = _time_ms(lambda: ks.rows([m], [r], (rows, cols), (1,)), reps)
    bw = _gbs(4 * rows * cols, ms)
    out["row_sum"] = {"ms": ms, "GB/s": bw, "pct_of_copy": 100 * bw / copy_bw}
    o = empty((rows, cols), np.float32)
    km = compile_kernel(softmax_spec(f, False))
    ms = _time_ms(lambda: km.rows([m], [o], (rows, cols), (1,)), reps)
    bw = _gbs(2 * 4 * rows * cols, ms)
    out["row_softmax"] = {"ms": ms, "GB/s": bw, "pct_of_copy": 100 * bw / copy_bw}
    return out


def bench_gemm(size: int, reps: int) -> dict:
    from numba import cuda

    from kernels.cuda import empty
    from kernels.cuda.gemm import cublas_available, matmul_into
    rng = np.random.default_rng(0)
    a = cuda.to_device(rng.standard_normal((size, size)).astype(np.float32))
    b = cuda.to_device(rng.standard_normal((size, size)).astype(np.float32))
    c = empty((size, size), np.float32)
    ms = _time_ms(lambda: matmul_into(a, b, c), reps)
    return {"n": size, "ms": ms, "TFLOP/s": 2 * size ** 3 / (ms * 1e-3) / 1e12,
            "engine": "cuBLAS (nvmath-python)" if cublas_available()
            else "tiled numba.cuda kernel"}


def bench_mlp(reps: int, batch: int = 512, width: int = 1024, features: int = 784) -> dict:
    import gcompile as gc
    from numba import cuda
    gc.manual_seed(0)
    m = gc.nn.Sequential(gc.nn.Linear(features, width), gc.nn.ReLU(),
                         gc.nn.Linear(width, width), gc.nn.ReLU(),
                         gc.nn.Linear(width, 10)).to("cuda")
    opt = gc.optim.SGD(m.parameters(), lr=0.01)
    x = gc.randn(batch, features).cuda()
    t = gc.randint(0, 10, (batch,)).cuda()
    lossf = gc.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad()
        lossf(m(x), t).backward()
        opt.step()
    step()
    cuda.synchronize()
    out = {"gcompile_eager_ms": _time_ms(step, reps)}
    compiled = gc.compile(step)
    for _ in range(3):  # eager first step, trace, then the plan
        compiled()
    cuda.synchronize()
    out["gcompile_compiled_ms"] = _time_ms(compiled, reps)
    if (batch, width, features) == (512, 1024, 784):
        out.update(_bench_torch_mlp(reps, batch))
    return out


def _bench_torch_mlp(reps: int, batch: int) -> dict:
    try:
        import torch
    except ImportError:
        return {"torch": "not installed"}
    if not torch.cuda.is_available():
        return {"torch": "installed without CUDA"}
    torch.manual_seed(0)
    res = {}
    for name in ("torch_eager_ms", "torch_compile_ms"):
        m = torch.nn.Sequential(torch.nn.Linear(784, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 1024), torch.nn.ReLU(),
                                torch.nn.Linear(1024, 10)).cuda()
        opt = torch.optim.SGD(m.parameters(), lr=0.01)
        x = torch.randn(batch, 784, device="cuda")
        t = torch.randint(0, 10, (batch,), device="cuda")
        lossf = torch.nn.CrossEntropyLoss()

        def step(m=m, opt=opt, x=x, t=t, lossf=lossf):
            opt.zero_grad()
            lossf(m(x), t).backward()
            opt.step()
        if name == "torch_compile_ms":
            try:
                step = torch.compile(step)
            except Exception as e:  # noqa: BLE001 - report, do not fail the run
                res[name] = f"torch.compile failed: {e}"
                continue
        for _ in range(3):
            step()
        torch.cuda.synchronize()
        ts = []
        for _ in range(reps):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            step()
            e.record()
            e.synchronize()
            ts.append(s.elapsed_time(e))
        res[name] = statistics.median(ts)
    return res


def _time_step(step, reps: int, sync) -> float:
    for _ in range(3):  # eager first step, trace, then the plan
        step()
    sync()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        sync()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def bench_model(name: str, reps: int, small: bool = False) -> dict:
    """A real-model train step of ``bench_models`` (the same code for gcompile and torch)
    on the device: wall-clock ms per step, synchronised, medians."""
    import gcompile as gc
    from numba import cuda

    from .bench_models import build, train_step

    def run(tm, sync, compile_fn=None):
        model, opt, (x, y), loss_fn = build(tm, name, small=small)
        model.to("cuda")  # parameters move in place: the optimizer keeps them
        x, y = x.to("cuda"), y.to("cuda")
        step = train_step(model, opt, loss_fn)
        fn = compile_fn(step) if compile_fn else step
        return _time_step(lambda: fn(x, y), reps, sync)

    out = {"gcompile_eager_ms": run(gc, cuda.synchronize),
           "gcompile_compiled_ms": run(gc, cuda.synchronize, gc.compile)}
    try:
        import torch
    except ImportError:
        out["torch"] = "not installed"
        return out
    if not torch.cuda.is_available():
        out["torch"] = "installed without CUDA"
        return out
    out["torch_eager_ms"] = run(torch, torch.cuda.synchronize)
    try:
        out["torch_compile_ms"] = run(torch, torch.cuda.synchronize, torch.compile)
    except Exception as e:  # noqa: BLE001 - report, do not fail the run
        out["torch_compile_ms"] = f"torch.compile failed: {e}"
    return out


def _png(results: dict, path: str) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = [k for k in ("fused_gelu", "row_sum", "row_softmax") if k in results["kernels"]]
    vals = [results["kernels"][k]["pct_of_copy"] for k in names]
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.bar(names, vals)
    ax.axhline(80, color="k", ls="--", lw=1)
    ax.set_ylabel("% of device copy bandwidth")
    ax.set_title(results["device"])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gcompile bench --device cuda",
                                description=__doc__.splitlines()[0])
    p.add_argument("--out", default="cuda_bench.json",
                   help="the JSON file (a PNG is written beside it with matplotlib)")
    p.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = p.parse_args(argv)
    _refuse_without_gpu()
    from numba import cuda
    reps = 5 if args.quick else 20
    n = (1 << 22) if args.quick else (1 << 26)
    results = {"device": cuda.get_current_device().name.decode()
               if isinstance(cuda.get_current_device().name, bytes)
               else str(cuda.get_current_device().name),
               "kernels": bench_kernels(n, 2048 if args.quick else 8192, 1024, reps),
               "gemm": bench_gemm(1024 if args.quick else 4096, reps),
               "mlp_train_step": bench_mlp(reps),
               "cnn_train_step": bench_model("cnn_train", reps, small=args.quick)}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    png = _png(results, os.path.splitext(args.out)[0] + ".png")
    print(json.dumps(results, indent=2))
    print(f"wrote {args.out}" + (f" and {png}" if png else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
