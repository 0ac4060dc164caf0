"""The ``gcompile`` command line: demo, benchmarks, environment report, kernel cache,
and a launcher for distributed scripts."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys

_EPILOGS = {
    "main": """examples:
  gcompile --version
  gcompile env                   # paste this into bug reports
  gcompile demo --steps 50
  gcompile bench gelu mlp_train --output bench.json --plot bench.png
  gcompile cache info
  gcompile run -n 2 train.py --epochs 1""",
    "demo": """examples:
  gcompile demo                  # train a small model eagerly and compiled
  gcompile demo --steps 50""",
    "bench": """examples:
  gcompile bench                             # every workload (a few minutes)
  gcompile bench gelu softmax --small        # a quick subset
  gcompile bench gpt_train --no-latency      # skip the fresh-process first-call runs
  gcompile bench --json                      # JSON on stdout
  gcompile bench mlp_train --output b.json --plot b.png   # JSON file and a PNG chart
  gcompile bench --device cuda -o gpu.json   # the GPU benchmark (needs a real GPU)

Progress (workload i/n, what runs, elapsed) is drawn on stderr when it is a terminal;
GCOMPILE_PROGRESS=0 turns it off.""",
    "env": """examples:
  gcompile env                   # versions, threads, BLAS, CPU, kernel cache, CUDA, MPI
  gcompile env --json            # the same as JSON""",
    "cache": """examples:
  gcompile cache info            # folder, number of kernels, size, signing key
  gcompile cache info --json
  gcompile cache clear           # delete compiled kernels (they are rebuilt on demand)

The folder is $GCOMPILE_CACHE_DIR (default ~/.cache/gcompile/kernels).""",
    "run": """examples:
  gcompile run -n 4 train.py --epochs 1      # 4 ranks under mpiexec
  gcompile run -n 2 --dry-run train.py       # print the launch command only""",
}


def _version() -> str:
    from . import __version__
    return str(__version__)


def _dist_version(name: str) -> str | None:
    """An installed distribution's version, without importing it."""
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version(name)
    except PackageNotFoundError:
        return None


# ---- gcompile demo --------------------------------------------------------------------------
def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(steps=args.steps)


# ---- gcompile env ---------------------------------------------------------------------------
def env_report() -> dict:
    """What gcompile runs on, as a dict: versions, threads and BLAS (threadpoolctl), the
    CPU LLVM compiles for, the kernel cache, CUDA and MPI availability."""
    import numpy as np

    rep: dict = {
        "gcompile": _version(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "numpy": np.__version__,
        "numba": _dist_version("numba"),
        "llvmlite": _dist_version("llvmlite"),
    }
    # threads and BLAS
    try:
        from threadpoolctl import threadpool_info
        pools = threadpool_info()
    except ImportError:
        pools = None
    if pools is None:
        rep["blas"] = "unknown (threadpoolctl is not installed)"
    else:
        rep["threadpools"] = [{k: p.get(k) for k in ("user_api", "internal_api", "version",
                                                      "num_threads", "threading_layer",
                                                      "architecture", "filepath")}
                              for p in pools]
        blas = [p for p in pools if p.get("user_api") == "blas"]
        rep["blas"] = ", ".join(f"{p['internal_api']} {p.get('version')} "
                                f"({p['num_threads']} threads)" for p in blas) or "none found"
    from kernels.cpu import _nthreads, compile_workers
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    rep["cpu_count"] = cores
    rep["kernel_threads"] = _nthreads()
    from kernels.cpu import native_pool
    rep["thread_pool"] = native_pool.describe()
    rep["compile_workers"] = compile_workers()
    # the CPU LLVM sees
    try:
        import llvmlite.binding as ll
        feats = ll.get_host_cpu_features()
        rep["llvm_cpu"] = ll.get_host_cpu_name()
        rep["llvm_cpu_features"] = sorted(k for k, on in feats.items() if on)
    except Exception as e:  # noqa: BLE001 - report, don't fail
        rep["llvm_cpu"] = f"unknown ({type(e).__name__}: {e})"
        rep["llvm_cpu_features"] = []
    from kernels.cache import WIDE_VECTORS, cache_info
    rep["kernel_vector_width"] = "512 bits" if WIDE_VECTORS else "LLVM's default"
    from runtime.allocator import HOST_HEAP
    rep["host_heap"] = HOST_HEAP["why"] if HOST_HEAP["tuned"] else \
        f"the C library's defaults ({HOST_HEAP['why']})"
    # kernel cache
    rep["kernel_cache"] = cache_info()
    # CUDA
    from . import cuda
    try:
        rep["cuda_available"] = bool(cuda.is_available())
    except Exception as e:  # noqa: BLE001 - report, don't fail
        rep["cuda_available"] = f"unknown ({type(e).__name__})"
    rep["numba_cuda"] = _dist_version("numba-cuda")
    # MPI (never initialised here: importing mpi4py.MPI would start MPI)
    rep["mpi4py"] = _dist_version("mpi4py")
    rep["mpiexec"] = shutil.which("mpiexec") or shutil.which("mpirun")
    rep["mpi_available"] = bool(rep["mpi4py"] and rep["mpiexec"])
    rep["optional"] = {name: _dist_version(dist) for name, dist in (
        ("rich", "rich"), ("matplotlib", "matplotlib"), ("onnx", "onnx"),
        ("onnxruntime", "onnxruntime"), ("torch", "torch"), ("jax", "jax"))}
    rep["environment"] = {k: v for k, v in sorted(os.environ.items())
                          if k.startswith(("GCOMPILE_", "NUMBA_", "OMP_", "OPENBLAS_",
                                           "MKL_", "MALLOC_", "GLIBC_TUNABLES"))}
    return rep


def _fmt_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # pragma: no cover


def format_env(rep: dict) -> str:
    """``key: value`` lines (each key once), one fact per line, for bug reports."""
    kc = rep["kernel_cache"]
    lines = [f"gcompile: {rep['gcompile']}", f"python: {rep['python']}",
             f"platform: {rep['platform']}", f"numpy: {rep['numpy']}",
             f"numba: {rep['numba']}", f"llvmlite: {rep['llvmlite']}",
             f"cpu count: {rep['cpu_count']}", f"kernel threads: {rep['kernel_threads']}",
             f"thread pool: {rep['thread_pool']}",
             f"compile workers: {rep['compile_workers']}", f"blas: {rep['blas']}"]
    for i, p in enumerate(rep.get("threadpools", [])):
        lines.append(f"threadpool {i}: {p['user_api']} {p['internal_api']} {p['version']} "
                     f"threads={p['num_threads']} {p.get('filepath')}")
    lines += [f"llvm cpu: {rep['llvm_cpu']}",
              f"llvm cpu features: {' '.join(rep['llvm_cpu_features'])}",
              f"kernel vector width: {rep['kernel_vector_width']}",
              f"host heap: {rep['host_heap']}",
              f"kernel cache: {kc['dir']}",
              f"kernel cache size: {kc['objects']} kernels, {_fmt_bytes(kc['bytes'])}",
              f"kernel cache key: {kc['key_file']}"
              + ("" if kc["key_exists"] else " (not created yet)"),
              f"cuda available: {rep['cuda_available']}",
              f"numba-cuda: {rep['numba_cuda']}",
              f"mpi available: {rep['mpi_available']} (mpi4py {rep['mpi4py']}, "
              f"mpiexec {rep['mpiexec']})"]
    lines.append("optional: " + ", ".join(f"{k} {v or '-'}" for k, v in rep["optional"].items()))
    for k, v in rep["environment"].items():
        lines.append(f"env {k}: {v}")
    return "\n".join(lines)


def _env(args) -> int:
    rep = env_report()
    print(json.dumps(rep, indent=2) if args.json else format_env(rep))
    return 0


# ---- gcompile cache -------------------------------------------------------------------------
def _cache(args) -> int:
    from kernels.cache import cache_info, clear_cache
    if args.action == "info":
        info = cache_info()
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            print(f"folder: {info['dir']}" + ("" if info["exists"] else " (does not exist)"))
            print(f"kernels: {info['objects']} compiled, {info['sources']} sources; "
                  f"CUDA: {info['cuda_files']} files (sources and signed PTX/cubin)")
            print(f"size: {_fmt_bytes(info['bytes'])} ({info['bytes']} bytes)")
            print(f"signing key: {info['key_file']}"
                  + ("" if info["key_exists"] else " (not created yet)"))
        return 0
    removed, freed = clear_cache()
    from kernels.cache import cache_dir
    print(f"removed {removed} files ({_fmt_bytes(freed)}) from {cache_dir()}")
    return 0


# ---- gcompile run ---------------------------------------------------------------------------
def _run(args) -> int:
    return _run_argv(list(args.rest))


def _run_argv(argv: list[str]) -> int:
    """Forward everything after ``run`` to ``gcompile.distributed.launch.main``."""
    try:
        from .distributed.launch import main as launch
    except ImportError as e:
        print(f"gcompile run: the distributed launcher is not available ({e}); install "
              "the extra with: pip install 'gcompile[distributed]'", file=sys.stderr)
        if any(a in ("-h", "--help") for a in argv):
            print(_EPILOGS["run"], file=sys.stderr)
        return 2
    return int(launch(argv))


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(prog="gcompile", description=__doc__, epilog=_EPILOGS["main"],
                                     formatter_class=fmt)
    parser.add_argument("--version", action="version", version=f"gcompile {_version()}")
    sub = parser.add_subparsers(dest="cmd", required=True, metavar="command")
    p = sub.add_parser("demo", help="train a small model and show what gcompile does",
                       epilog=_EPILOGS["demo"], formatter_class=fmt)
    p.add_argument("--steps", type=int, default=200)
    p.set_defaults(func=_demo)
    from . import bench
    b = sub.add_parser("bench", help="time eager vs compiled on the standard workloads",
                       description=bench.__doc__, epilog=_EPILOGS["bench"], formatter_class=fmt)
    bench.add_arguments(b)
    b.set_defaults(func=bench.run)
    e = sub.add_parser("env", help="versions, threads, BLAS, CPU, kernel cache, CUDA, MPI",
                       epilog=_EPILOGS["env"], formatter_class=fmt)
    e.add_argument("--json", action="store_true", help="print the report as JSON")
    e.set_defaults(func=_env)
    c = sub.add_parser("cache", help="inspect or clear the compiled-kernel cache",
                       epilog=_EPILOGS["cache"], formatter_class=fmt)
    c.add_argument("action", choices=["info", "clear"])
    c.add_argument("--json", action="store_true", help="info as JSON")
    c.set_defaults(func=_cache)
    r = sub.add_parser("run", help="run a script on N processes (gcompile.distributed)",
                       epilog=_EPILOGS["run"], formatter_class=fmt, add_help=False,
                       usage="gcompile run [-n N] [--dry-run] script.py [args ...]")
    r.add_argument("rest", nargs=argparse.REMAINDER,
                   help="passed to the launcher (gcompile run --help shows its options)")
    r.set_defaults(func=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gcompile`` command; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:  # its options belong to the launcher, not to this parser
        return _run_argv(argv[1:])
    args = _parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
