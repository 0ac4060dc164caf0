"""Data-parallel benchmark: step time and communication on 1 and 2 ranks.

    python benchmarks/distributed.py [--steps 20] [--width 512] [--batch 64] [--json]

Runs itself under ``mpiexec -n 1`` and ``mpiexec -n 2`` (weak scaling: the batch per
rank stays the same, so ideal scaling keeps the step time constant) and reports,
per run and per mode (eager DDP, whole-step compiled DDP):

- step time (median), and the scaling efficiency t(1 rank) / t(2 ranks);
- bytes allreduced per step (DDP's gradient buckets);
- communication time: the same buckets allreduced alone, with nothing to overlap;
- exposed communication: the time backward spent blocked waiting for buckets;
- overlap achieved: 1 - exposed / communication.

Each rank is pinned to one BLAS/Numba thread, so 2 ranks on a 2-core machine use
the same cores as 1 rank with 2 threads would; on such a machine (and one shared
with other work) the efficiency says more about core contention than about MPI.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS")


def worker(args) -> None:
    from datetime import timedelta

    import numpy as np

    import gcompile as torch
    import gcompile.distributed as dist
    from gcompile import nn
    from gcompile.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("mpi", timeout=timedelta(minutes=5))
    rank, world = dist.get_rank(), dist.get_world_size()
    pg = dist.distributed_c10d._group()
    results = {}
    for mode in ("eager", "compiled"):
        torch.manual_seed(0)
        w = args.width
        model = nn.Sequential(nn.Linear(w, w), nn.ReLU(), nn.Linear(w, w), nn.ReLU(),
                              nn.Linear(w, w), nn.ReLU(), nn.Linear(w, 10))
        ddp = DDP(model, bucket_cap_mb=args.bucket_cap_mb)
        opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
        crit = nn.CrossEntropyLoss()
        g = torch.Generator().manual_seed(rank)
        x = torch.randn(args.batch, w, generator=g)
        y = torch.randint(0, 10, (args.batch,), generator=g)

        def train_step(x, y, opt=opt, crit=crit, ddp=ddp):
            opt.zero_grad()
            loss = crit(ddp(x), y)
            loss.backward()
            opt.step()
            return loss

        step = torch.compile(train_step) if mode == "compiled" else train_step
        for _ in range(3):  # warm up (traces, kernels, optimizer state)
            step(x, y)
        times, waits = [], []
        for _ in range(args.steps):
            dist.barrier()
            w0 = pg.stats["wait_s"]
            t0 = time.perf_counter()
            step(x, y)
            times.append(time.perf_counter() - t0)
            waits.append(pg.stats["wait_s"] - w0)
        # the same buckets allreduced alone: pure communication time
        sizes = [b.numel for b in ddp.reducer.buckets]
        comm = []
        for _ in range(args.steps):
            bufs = [np.ones(n, np.float32) for n in sizes]
            dist.barrier()
            t0 = time.perf_counter()
            for b in bufs:
                pg.allreduce(b, "sum")
            comm.append(time.perf_counter() - t0)
        step_s = statistics.median(times)
        comm_s = statistics.median(comm) if world > 1 else 0.0
        exposed = statistics.median(waits) if world > 1 else 0.0
        results[mode] = {
            "step_ms": step_s * 1e3,
            "bytes_allreduced_per_step": ddp.reducer.bytes_per_step if world > 1 else 0,
            "buckets": len(sizes),
            "comm_ms": comm_s * 1e3,
            "exposed_comm_ms": exposed * 1e3,
            "overlap": (max(0.0, 1 - exposed / comm_s) if comm_s > 0 else None),
        }
    if rank == 0:
        print("RESULT " + json.dumps({"world": world, "results": results}), flush=True)
    dist.destroy_process_group()


def driver(args) -> int:
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gcompile.distributed.launch import find_launcher
    launcher = find_launcher()
    env = dict(os.environ, GCOMPILE_COMPILE_WORKERS="0")
    if args.async_progress:
        env["MPIR_CVAR_ASYNC_PROGRESS"] = "1"
    for v in THREAD_VARS:
        env[v] = "1"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
    runs = {}
    for n in (1, 2):
        cmd = [launcher, "-n", str(n), sys.executable, os.path.abspath(__file__), "--worker",
               "--steps", str(args.steps), "--width", str(args.width), "--batch",
               str(args.batch), "--bucket-cap-mb", str(args.bucket_cap_mb)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            return 1
        runs[n] = json.loads(line[0][len("RESULT "):])["results"]
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    print(f"MLP 4 x Linear({args.width}), batch {args.batch} per rank, {args.steps} steps, "
          f"bucket_cap_mb={args.bucket_cap_mb}, 1 thread per rank, {os.cpu_count()} cores")
    print(f"{'mode':9} {'ranks':>5} {'step ms':>9} {'eff.':>6} {'MB/step':>8} {'buckets':>7} "
          f"{'comm ms':>8} {'exposed':>8} {'overlap':>8}")
    for mode in ("eager", "compiled"):
        t1 = runs[1][mode]["step_ms"]
        for n in (1, 2):
            r = runs[n][mode]
            eff = t1 / r["step_ms"]
            ov = "-" if r["overlap"] is None else f"{100 * r['overlap']:.0f}%"
            print(f"{mode:9} {n:>5} {r['step_ms']:9.2f} {eff:6.2f} "
                  f"{r['bytes_allreduced_per_step'] / 2**20:8.2f} {r['buckets']:>7} "
                  f"{r['comm_ms']:8.2f} {r['exposed_comm_ms']:8.2f} {ov:>8}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--batch", type=int, default=64, help="per rank")
    ap.add_argument("--bucket-cap-mb", type=float, default=1.0)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--async-progress", action="store_true",
                    help="MPICH progress thread (MPIR_CVAR_ASYNC_PROGRESS=1)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    return driver(args)


if __name__ == "__main__":
    sys.exit(main())
