"""Run under ``mpiexec -n 2``: every collective against a NumPy reference, sync and
async. Prints ``PASS <name>`` per check; a failure raises (and aborts the job)."""
from __future__ import annotations

import os
from datetime import timedelta

import numpy as np

import gcompile as torch
import gcompile.distributed as dist

RANK = int(os.environ.get("PMI_RANK", "0"))


def ok(name):
    print(f"PASS {name}", flush=True)


def local(r, shape=(3, 4), dtype=np.float32):
    """Rank r's input, known to every rank (so each can compute the reference)."""
    return (np.arange(np.prod(shape)).reshape(shape) * (r + 1) + r - 3).astype(dtype)


def eq(t, ref):
    np.testing.assert_allclose(t.numpy(), ref, rtol=1e-6, atol=1e-6)


def main():
    with_errors = True
    try:
        dist.get_rank()
    except ValueError as e:
        assert "Default process group has not been initialized" in str(e)
    else:
        with_errors = False
    assert with_errors, "get_rank before init_process_group must raise"
    assert dist.is_available() and not dist.is_initialized()
    dist.init_process_group("mpi", timeout=timedelta(seconds=30))
    assert dist.is_initialized() and dist.get_backend() == "mpi"
    r, n = dist.get_rank(), dist.get_world_size()
    assert (r, n) == (RANK, 2)
    try:
        dist.init_process_group("mpi")
    except ValueError as e:
        assert "twice" in str(e)
    else:
        raise AssertionError("second init_process_group did not raise")
    ok("init")

    xs = [local(k) for k in range(n)]
    refs = {dist.ReduceOp.SUM: sum(xs), dist.ReduceOp.AVG: sum(xs) / n,
            dist.ReduceOp.MAX: np.maximum(*xs), dist.ReduceOp.MIN: np.minimum(*xs),
            dist.ReduceOp.PRODUCT: xs[0] * xs[1]}
    for op, ref in refs.items():
        for async_op in (False, True):
            t = torch.tensor(local(r))
            v0 = t._version
            w = dist.all_reduce(t, op=op, async_op=async_op)
            if async_op:
                assert isinstance(w, dist.Work)
                assert w.wait() is True and w.is_completed() and w.is_success()
            else:
                assert w is None
            eq(t, ref)
            assert t._version > v0
    # integer and float64 tensors, a 0-d tensor
    ti = torch.tensor(local(r, (5,), np.int64))
    dist.all_reduce(ti)
    assert ti.tolist() == (local(0, (5,), np.int64) + local(1, (5,), np.int64)).tolist()
    td = torch.tensor(local(r, (), np.float64))
    dist.all_reduce(td, op=dist.ReduceOp.MAX)
    assert td.item() == max(local(0, (), np.float64), local(1, (), np.float64))
    ok("all_reduce")

    # several async ops in flight at once, waited in reverse order
    ts = [torch.tensor(local(r, (k + 2,))) for k in range(4)]
    works = [dist.all_reduce(t, async_op=True) for t in ts]
    for w in reversed(works):
        w.wait()
    for k, t in enumerate(ts):
        eq(t, local(0, (k + 2,)) + local(1, (k + 2,)))
    ok("async_many")

    for src in range(n):
        t = torch.tensor(local(r))
        dist.broadcast(t, src=src)
        eq(t, local(src))
        t = torch.tensor(local(r))
        w = dist.broadcast(t, src=src, async_op=True)
        w.wait()
        eq(t, local(src))
    ok("broadcast")

    outs = [torch.zeros(3, 4) for _ in range(n)]
    dist.all_gather(outs, torch.tensor(local(r)))
    for k in range(n):
        eq(outs[k], local(k))
    outs = [torch.zeros(3, 4) for _ in range(n)]
    dist.all_gather(outs, torch.tensor(local(r)), async_op=True).wait()
    for k in range(n):
        eq(outs[k], local(k))
    ok("all_gather")

    out = torch.zeros(3 * n, 4)
    dist.all_gather_into_tensor(out, torch.tensor(local(r)))
    eq(out, np.concatenate([local(k) for k in range(n)]))
    out = torch.zeros(n, 3, 4)
    dist.all_gather_into_tensor(out, torch.tensor(local(r)), async_op=True).wait()
    eq(out, np.stack([local(k) for k in range(n)]))
    ok("all_gather_into_tensor")

    big = [local(k, (2 * n, 3)) for k in range(n)]
    for op, red in ((dist.ReduceOp.SUM, big[0] + big[1]), (dist.ReduceOp.MAX,
                                                             np.maximum(*big)),
                    (dist.ReduceOp.AVG, (big[0] + big[1]) / 2)):
        out = torch.zeros(2, 3)
        dist.reduce_scatter_tensor(out, torch.tensor(big[r]), op=op)
        eq(out, red[2 * r:2 * r + 2])
    out = torch.zeros(2, 3)
    dist.reduce_scatter_tensor(out, torch.tensor(big[r]), async_op=True).wait()
    eq(out, (big[0] + big[1])[2 * r:2 * r + 2])
    ok("reduce_scatter_tensor")

    other = 1 - r
    if r == 0:
        dist.send(torch.tensor(local(0)), dst=1)
        t = torch.zeros(3, 4)
        assert dist.recv(t, src=1) == 1
        eq(t, local(1))
        t = torch.zeros(3, 4)
        assert dist.recv(t) == 1  # any source
        eq(t, local(1) * 2)
    else:
        t = torch.zeros(3, 4)
        assert dist.recv(t, src=0) == 0
        eq(t, local(0))
        dist.send(torch.tensor(local(1)), dst=0)
        dist.send(torch.tensor(local(1) * 2), dst=0)
    wa = dist.isend(torch.tensor(local(r, (6,))), dst=other, tag=7)
    t = torch.zeros(6)
    wb = dist.irecv(t, src=other, tag=7)
    wb.wait()
    wa.wait()
    eq(t, local(other, (6,)))
    ok("send_recv")

    dist.barrier()
    dist.barrier(async_op=True).wait()
    ok("barrier")

    # errors in torch's words
    for bad, exc in ((lambda: dist.broadcast(torch.zeros(2), src=5), ValueError),
                     (lambda: dist.send(torch.zeros(2), dst=r), ValueError),
                     (lambda: dist.all_reduce([1, 2]), TypeError),
                     (lambda: dist.all_gather([torch.zeros(2)], torch.zeros(2)), ValueError),
                     (lambda: dist.all_gather_into_tensor(torch.zeros(5), torch.zeros(2)),
                      ValueError),
                     (lambda: dist.all_reduce(torch.zeros(2, dtype=torch.int64),
                                              op=dist.ReduceOp.AVG), RuntimeError)):
        try:
            bad()
        except exc:
            pass
        else:
            raise AssertionError(f"expected {exc.__name__}")
    ok("errors")

    # collectives inside a compiled function are graph ops (all_reduce, broadcast)
    @torch.compile
    def f(x):
        y = x * 2
        dist.all_reduce(y)
        return y + 1
    for k in range(3):
        x = torch.tensor(local(r) + k)
        eq(f(x), (local(0) + local(1) + 2 * k) * 2 + 1)
    assert f.num_traces == 1
    ops = [nd.op for nd in f.graph.nodes]
    assert "allreduce_start" in ops and "allreduce_wait" in ops, ops
    ok("compiled_all_reduce")

    # a differentiable allreduce (as SyncBatchNorm uses): the gradient is allreduced too
    from gcompile._tensor import apply_op
    x = torch.tensor(local(r), requires_grad=True)
    y = apply_op("allreduce_wait", (apply_op("allreduce_start", (x,), {"op": "sum"}),),
                 {"op": "sum"})
    (y * float(r + 1)).sum().backward()
    eq(x.grad, np.full((3, 4), 3.0))  # d/dx_r sum_k (k+1) * sum_j x_j = 1 + 2
    ok("allreduce_grad")

    dist.destroy_process_group()
    assert not dist.is_initialized()
    ok("destroy")


if __name__ == "__main__":
    main()
