"""Micro-benchmarks of generated CPU kernels (kernels.cpu), all measured in one run.

    python benchmarks/kernels_micro.py [--quick]

- tanh-GELU on 16M float32 through one fused kernel (output preallocated) vs NumPy
  op by op and vs the copy ceiling (np.copyto and a 2-thread Numba copy), in GB/s
  and % of copy bandwidth (targets: >= 60% of copy, >= 8x NumPy);
- row softmax and LayerNorm on 8192x1024 vs NumPy (target >= 4x);
- column sums (reducing dim 0 through a transposed view) vs NumPy;
- the serial/parallel crossover that sets kernels.cpu.PARALLEL_THRESHOLD.

Prints medians and ratios (machines are noisy: compare ratios, not absolutes).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from kernels.cpu import compile_kernel, set_parallel_threshold  # noqa: E402
from kernels.spec import KernelSpec, Phase, Stmt, const, inp, red, rowlen, var  # noqa: E402

F = "float32"


def S(name, op, *args, dtype=F):
    return Stmt(name, op, tuple(args), (), dtype)


def median_ms(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return sorted(ts)[len(ts) // 2] * 1e3


def gelu_spec() -> KernelSpec:
    # 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))), as the pipeline emits it
    st = (S("x2", "mul", inp(0), inp(0)), S("x3", "mul", var("x2"), inp(0)),
          S("a", "mul", var("x3"), const(0.044715, F)), S("b", "add", inp(0), var("a")),
          S("c", "mul", var("b"), const(0.7978845608028654, F)), S("t", "tanh", var("c")),
          S("d", "add", var("t"), const(1.0, F)), S("e", "mul", inp(0), var("d")),
          S("g", "mul", var("e"), const(0.5, F)))
    return KernelSpec((F,), ((F, "full"),), (Phase("map", st, stores=((0, var("g")),)),),
                      "elementwise")


def softmax_spec() -> KernelSpec:
    return KernelSpec((F,), ((F, "full"),), (
        Phase("reduce", (), reduce_op="max", reduce_value=inp(0)),
        Phase("reduce", (S("d", "sub", inp(0), red(0)), S("e", "exp", var("d"))),
              reduce_op="sum", reduce_value=var("e")),
        Phase("map", (S("d2", "sub", inp(0), red(0)), S("e2", "exp", var("d2")),
                      S("y", "div", var("e2"), red(1))), stores=((0, var("y")),)),
    ), "rows")


def layernorm_spec() -> KernelSpec:
    return KernelSpec((F, F, F), ((F, "full"),), (
        Phase("reduce", (), reduce_op="sum", reduce_value=inp(0),
              post=(S("mean", "div", red(0), rowlen(F)),)),
        Phase("reduce", (S("d", "sub", inp(0), red(0)), S("sq", "mul", var("d"), var("d"))),
              reduce_op="sum", reduce_value=var("sq"),
              post=(S("var", "div", red(1), rowlen(F)),
                    S("ve", "add", var("var"), const(1e-5, F)),
                    S("rstd", "rsqrt", var("ve")))),
        Phase("map", (S("d3", "sub", inp(0), red(0)), S("y", "mul", var("d3"), red(1)),
                      S("z", "mul", var("y"), inp(1)), S("o", "add", var("z"), inp(2))),
              stores=((0, var("o")),)),
    ), "rows")


def sum_spec() -> KernelSpec:
    return KernelSpec((F,), ((F, "row"),), (
        Phase("reduce", (), reduce_op="sum", reduce_value=inp(0), store_result=0),), "rows")


def axpb_spec() -> KernelSpec:
    st = (S("m", "mul", inp(0), inp(1)), S("a", "add", var("m"), const(1.0, F)))
    return KernelSpec((F, F), ((F, "full"),), (Phase("map", st, stores=((0, var("a")),)),),
                      "elementwise")


def par_copy():
    from numba import njit, prange

    @njit(parallel=True, cache=False)
    def copy(a, o):
        for i in prange(a.shape[0]):
            o[i] = a[i]
    return copy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args()
    reps = 5 if args.quick else 11
    rng = np.random.default_rng(0)
    rows = []

    # ---- GELU --------------------------------------------------------------------------
    n = 1 << 24
    x = rng.standard_normal(n).astype(np.float32)
    out = np.empty_like(x)
    k = compile_kernel(gelu_spec())
    t_k = median_ms(lambda: k([x], [out]), reps)

    def np_gelu():
        return 0.5 * x * (1.0 + np.tanh(np.float32(0.7978845608028654) * (
            x + np.float32(0.044715) * x * x * x)))
    t_np = median_ms(np_gelu, max(3, reps // 2))
    ref = np_gelu()
    err = float(np.max(np.abs(out - ref)))
    t_copy = median_ms(lambda: np.copyto(out, x), reps)
    pc = par_copy()
    t_pcopy = median_ms(lambda: pc(x, out), reps)
    nbytes = 2 * x.nbytes
    gbs = lambda ms: nbytes / (ms * 1e-3) / 1e9  # noqa: E731
    ceiling = max(gbs(t_copy), gbs(t_pcopy))
    print(f"GELU (tanh) 16M float32: kernel {t_k:.2f} ms ({gbs(t_k):.1f} GB/s), "
          f"NumPy op-by-op {t_np:.1f} ms -> {t_np / t_k:.1f}x; max |err| {err:.2e}")
    print(f"  copy: np.copyto {t_copy:.2f} ms ({gbs(t_copy):.1f} GB/s), 2-thread copy "
          f"{t_pcopy:.2f} ms ({gbs(t_pcopy):.1f} GB/s) -> kernel at "
          f"{100 * gbs(t_k) / ceiling:.0f}% of the best copy bandwidth")
    rows.append(("gelu", t_np, t_k))

    # ---- softmax / layernorm -----------------------------------------------------------
    R, C = 8192, 1024
    x2 = rng.standard_normal((R, C)).astype(np.float32)
    o2 = np.empty_like(x2)
    ks = compile_kernel(softmax_spec())
    t_k = median_ms(lambda: ks([x2], [o2]), reps)

    def np_softmax():
        e = np.exp(x2 - x2.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)
    t_np = median_ms(np_softmax, max(3, reps // 2))
    err = float(np.max(np.abs(o2 - np_softmax())))
    print(f"softmax rows 8192x1024: kernel {t_k:.2f} ms, NumPy {t_np:.1f} ms -> "
          f"{t_np / t_k:.1f}x; max |err| {err:.1e}")
    rows.append(("softmax", t_np, t_k))

    w = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    kl = compile_kernel(layernorm_spec())
    ins = [x2, np.broadcast_to(w, x2.shape), np.broadcast_to(b, x2.shape)]
    t_k = median_ms(lambda: kl(ins, [o2]), reps)

    def np_ln():
        mu = x2.mean(-1, keepdims=True)
        var = ((x2 - mu) ** 2).mean(-1, keepdims=True)
        return (x2 - mu) / np.sqrt(var + np.float32(1e-5)) * w + b
    t_np = median_ms(np_ln, max(3, reps // 2))
    err = float(np.max(np.abs(o2 - np_ln())))
    print(f"layernorm rows 8192x1024: kernel {t_k:.2f} ms, NumPy {t_np:.1f} ms -> "
          f"{t_np / t_k:.1f}x; max |err| {err:.1e}")
    rows.append(("layernorm", t_np, t_k))

    # ---- column sums (reduce dim 0 through a transposed view) ---------------------------
    ksum = compile_kernel(sum_spec())
    cs = np.empty(C, np.float32)
    t_k = median_ms(lambda: ksum([x2.T], [cs]), reps)
    t_np = median_ms(lambda: x2.sum(0), reps)
    err = float(np.max(np.abs(cs - x2.sum(0))))
    print(f"column sum 8192x1024 (dim 0): kernel {t_k:.2f} ms, NumPy {t_np:.2f} ms -> "
          f"{t_np / t_k:.1f}x; max |err| {err:.1e}")
    rows.append(("colsum", t_np, t_k))

    # ---- serial / parallel crossover ----------------------------------------------------
    ka = compile_kernel(axpb_spec())
    print("serial vs parallel elementwise (x*y+1), microseconds per call:")
    old = set_parallel_threshold(1 << 62)
    try:
        for m in (1 << 10, 1 << 13, 1 << 15, 1 << 17, 1 << 19, 1 << 21):
            a, c = rng.standard_normal(m).astype(np.float32), rng.standard_normal(m).astype(
                np.float32)
            o = np.empty_like(a)

            def call(a=a, c=c, o=o):
                ka([a, c], [o])
            set_parallel_threshold(1 << 62)
            ts = median_ms(call, max(reps, 21)) * 1e3
            set_parallel_threshold(0)
            tp = median_ms(call, max(reps, 21)) * 1e3
            print(f"  n={m:>8}: serial {ts:9.1f}  parallel {tp:9.1f}  "
                  f"{'parallel wins' if tp < ts else 'serial wins'}")
    finally:
        set_parallel_threshold(old)

    print("\nworkload    numpy_ms  kernel_ms  speedup")
    for name, a, b2 in rows:
        print(f"{name:<10} {a:9.2f} {b2:10.2f} {a / b2:8.1f}x")


if __name__ == "__main__":
    main()
