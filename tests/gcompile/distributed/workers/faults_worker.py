"""Run under ``mpiexec -n 2`` with a scenario argument; each scenario must end the job
(non-zero exit) quickly with a clear message instead of hanging."""
from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta

import gcompile as torch
import gcompile.distributed as dist


def main(scenario: str) -> None:
    dist.init_process_group("mpi", timeout=timedelta(seconds=3))
    r = dist.get_rank()
    t = torch.ones(4)
    dist.all_reduce(t)  # both ranks are up
    if scenario == "raise":
        if r == 1:
            raise ValueError("rank 1 failed on purpose")
        dist.all_reduce(t)  # never matched: the job must be aborted, not hang
    elif scenario == "kill":
        if r == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        dist.all_reduce(t)
    elif scenario == "timeout":
        if r == 1:
            time.sleep(30)  # alive but elsewhere: rank 0's collective times out
            return
        w = dist.all_reduce(t, async_op=True)
        try:
            w.wait(timeout=timedelta(seconds=1))  # a shorter timeout for this one wait
        except dist.DistBackendError as e:
            print(f"CAUGHT {e}", flush=True)
            assert "Timeout(ms)=1000" in str(e), e
            assert not w.is_success() and w.exception() is e
        try:
            dist.all_reduce(t)
        except dist.DistBackendError as e:
            print(f"CAUGHT {e}", flush=True)
            raise
    elif scenario == "mismatch":
        # DETAIL debug mode: shapes differ across ranks in one collective
        x = torch.ones(3 + r)
        try:
            dist.all_reduce(x)
        except RuntimeError as e:
            print(f"CAUGHT {e}", flush=True)
            dist.barrier()
            print("PASS mismatch", flush=True)
            return
        raise AssertionError("mismatched shapes were not detected")
    print("UNREACHABLE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
