"""Run under ``mpiexec -n 2``: DDP with batch B per rank must reproduce one process with
batch 2B. Prints ``PASS <name>`` per check; any failure raises (and aborts the job)."""
from __future__ import annotations

import os
import time
from datetime import timedelta

import numpy as np

import gcompile as torch
import gcompile.distributed as dist
from gcompile import nn
from gcompile.nn.parallel import DistributedDataParallel as DDP

STEPS = int(os.environ.get("DDP_TEST_STEPS", "20"))
ONLY = set(filter(None, os.environ.get("DDP_TEST_ONLY", "").split(",")))
B = 4

RANK = int(os.environ.get("PMI_RANK", os.environ.get("OMPI_COMM_WORLD_RANK", "0")))


def mlp():
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                         nn.Linear(16, 3))


def cnn(bn=None):
    layers = [nn.Conv2d(2, 4, 3, padding=1)]
    if bn is not None:
        layers.append(bn(4))
    layers += [nn.ReLU(), nn.Flatten(), nn.Linear(4 * 5 * 5, 3)]
    return nn.Sequential(*layers)


def data(kind, steps, seed=7):
    g = torch.Generator().manual_seed(seed)
    shape = (2 * B, 6) if kind == "mlp" else (2 * B, 2, 5, 5)
    return [(torch.randn(*shape, generator=g), torch.randint(0, 3, (2 * B,), generator=g))
            for _ in range(steps)]


def make_opt(kind, params):
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-2)
    return torch.optim.SGD(params, lr=0.1, momentum=0.9)


def build(kind, bn=None, seed=0):
    torch.manual_seed(seed)
    return mlp() if kind == "mlp" else cnn(bn)


def copy_into(dst, src):
    dst.load_state_dict(src.state_dict())


def reference(kind, opt_kind, batches, bn=None):
    model = build(kind, bn)
    opt = make_opt(opt_kind, model.parameters())
    crit = nn.CrossEntropyLoss()
    for x, y in batches:
        opt.zero_grad()
        crit(model(x), y).backward()
        opt.step()
    return model


def close(a_model, b_model, what, tol=1e-5):
    for (n, p), q in zip(a_model.named_parameters(), b_model.parameters()):
        np.testing.assert_allclose(p.detach().numpy(), q.detach().numpy(), rtol=tol, atol=tol,
                                   err_msg=f"{what}: parameter {n}")


def ok(name):
    print(f"PASS {name}", flush=True)


def want(name):
    return not ONLY or name in ONLY


def ddp_run(kind, opt_kind, mode, batches, bn=None, sync_bn=False, **ddp_kw):
    # different local initialisation: DDP must broadcast rank 0's parameters
    model = build(kind, bn, seed=RANK * 100)
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if mode == "wrapped":  # DDP(torch.compile(model)): compiled forward and backward plans
        model = torch.compile(model)
    ddp = DDP(model, **ddp_kw)
    opt = make_opt(opt_kind, ddp.parameters())
    crit = nn.CrossEntropyLoss()
    sl = slice(RANK * B, (RANK + 1) * B)
    if mode in ("eager", "wrapped"):
        def step(x, y):
            opt.zero_grad()
            loss = crit(ddp(x), y)
            loss.backward()
            opt.step()
            return loss
    elif mode == "module":
        cm = torch.compile(ddp)

        def step(x, y):
            opt.zero_grad()
            loss = crit(cm(x), y)
            loss.backward()
            opt.step()
            return loss
    else:
        @torch.compile
        def step(x, y):
            opt.zero_grad()
            loss = crit(ddp(x), y)
            loss.backward()
            opt.step()
            return loss
    for x, y in batches:
        step(x[sl], y[sl])
    return ddp, step


def check_equivalence():
    cases = [("mlp", "sgd", "eager"), ("mlp", "adam", "eager"), ("cnn", "sgd", "eager"),
             ("cnn", "adam", "eager"), ("mlp", "sgd", "module"), ("mlp", "adam", "module"),
             ("mlp", "adam", "wrapped"), ("cnn", "sgd", "wrapped"), ("mlp", "sgd", "step"),
             ("mlp", "adam", "step"), ("cnn", "sgd", "step"),
             ("cnn", "adam", "step")]
    for kind, opt_kind, mode in cases:
        name = f"equivalence_{kind}_{opt_kind}_{mode}"
        if not want(name):
            continue
        t0 = time.perf_counter()
        batches = data(kind, STEPS)
        ref = reference(kind, opt_kind, batches)
        ddp, step = ddp_run(kind, opt_kind, mode, batches)
        close(ref, ddp.module, name)
        if mode == "step":
            # the whole step ran as one compiled plan holding the allreduces
            entry = step.entries[-1]
            assert type(entry).__name__ == "StepEntry", type(entry)
            ops = [n.op for n in entry.graph.nodes]
            assert "allreduce_start" in ops and "allreduce_wait" in ops, set(ops)
            assert step.num_traces <= 3, step.num_traces
        ok(f"{name} ({time.perf_counter() - t0:.1f}s)")


def check_overlap_in_plan():
    """Whole-step plan: with small buckets, an allreduce starts before the backward
    work of earlier layers, and its wait comes after it (communication overlaps)."""
    if not want("plan_overlap"):
        return
    batches = data("mlp", 3)
    ddp, step = ddp_run("mlp", "sgd", "step", batches, bucket_cap_mb=0.0001)
    g = step.entries[-1].graph
    ops = [n.op for n in g.nodes]
    starts = [i for i, o in enumerate(ops) if o == "allreduce_start"]
    waits = [i for i, o in enumerate(ops) if o == "allreduce_wait"]
    assert len(starts) == len(ddp.reducer.buckets) > 1, (len(starts), ddp.reducer.buckets)
    mm_between = [o for o in ops[starts[0] + 1:waits[0]] if o in ("matmul", "mm", "linear")]
    assert mm_between, ops[starts[0]:waits[0]]
    ok("plan_overlap")


def check_eager_overlap_and_buckets():
    if not want("buckets"):
        return
    model = build("mlp")
    seen = {}
    ddp = DDP(model, bucket_cap_mb=0.0001)
    red = ddp.reducer
    # tiny cap: one bucket per parameter, in reverse registration order
    assert len(red.buckets) == len(list(model.parameters())), len(red.buckets)
    assert red.buckets[0].params == [len(red.params) - 1]

    def note(g):
        seen.setdefault("launched", red.next_launch)

    # the gradient of layer 0's output exists before layer 0's own gradients are computed:
    # by then the buckets of the later layers' parameters must already be in flight
    model[0].register_forward_hook(lambda m, i, out: out.register_hook(note) and None)
    x, y = data("mlp", 1)[0]
    nn.CrossEntropyLoss()(ddp(x[:B]), y[:B]).backward()
    assert seen["launched"] == len(red.buckets) - 2, seen
    assert red.bytes_per_step == sum(p.numel() * 4 for p in model.parameters())
    ok("buckets")


def check_module_attr_and_state_dict():
    if not want("state_dict"):
        return
    model = build("mlp", seed=RANK)
    ddp = DDP(model)
    assert ddp.module is model
    keys = list(ddp.module.state_dict())
    assert keys == list(build("mlp").state_dict()), keys
    assert all(k.startswith("module.") for k in ddp.state_dict())
    # parameters were broadcast from rank 0 at wrap
    ref = build("mlp", seed=0)
    close(ref, model, "broadcast at wrap", tol=0)
    ok("state_dict")


def check_no_sync():
    if not want("no_sync"):
        return
    batches = data("mlp", 6)
    crit = nn.CrossEntropyLoss()
    ref = build("mlp", seed=5)  # rank 0's initialisation, which DDP broadcasts
    opt_r = make_opt("sgd", ref.parameters())
    model = build("mlp", seed=RANK + 5)
    ddp = DDP(model)
    opt = make_opt("sgd", ddp.parameters())
    sl = slice(RANK * B, (RANK + 1) * B)
    for k in range(0, 6, 2):
        (x1, y1), (x2, y2) = batches[k], batches[k + 1]
        opt_r.zero_grad()
        crit(ref(x1), y1).backward()
        crit(ref(x2), y2).backward()
        opt_r.step()
        opt.zero_grad()
        with ddp.no_sync():
            crit(ddp(x1[sl]), y1[sl]).backward()
        # inside no_sync the gradient is this rank's own
        crit(ddp(x2[sl]), y2[sl]).backward()
        opt.step()
    close(ref, model, "no_sync")
    ok("no_sync")


class Branchy(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(6, 3)
        self.never = nn.Linear(6, 3)

    def forward(self, x, use_b):
        return self.a(x) + self.b(x) if use_b else self.a(x)


def check_find_unused():
    if not want("find_unused"):
        return
    torch.manual_seed(0)
    model = Branchy()
    ddp = DDP(model, find_unused_parameters=True)
    x, y = data("mlp", 1)[0]
    crit = nn.CrossEntropyLoss()
    # rank 0 uses b, rank 1 does not; nobody uses `never`
    crit(ddp(x[RANK * B:(RANK + 1) * B], RANK == 0), y[RANK * B:(RANK + 1) * B]).backward()
    torch.manual_seed(0)
    ref = Branchy()
    ga = []
    for r in range(2):
        ref.zero_grad()
        crit(ref(x[r * B:(r + 1) * B], r == 0), y[r * B:(r + 1) * B]).backward()
        ga.append((ref.a.weight.grad.numpy().copy(), ref.b.weight.grad.numpy().copy()
                   if r == 0 else 0))
    np.testing.assert_allclose(model.a.weight.grad.numpy(), (ga[0][0] + ga[1][0]) / 2,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.b.weight.grad.numpy(), ga[0][1] / 2, rtol=1e-5, atol=1e-6)
    assert model.never.weight.grad is None  # unused everywhere: left alone, as torch
    ok("find_unused")
    # without find_unused_parameters, the next forward says what went wrong
    torch.manual_seed(0)
    ddp2 = DDP(Branchy())
    crit(ddp2(x[:B], False), y[:B]).backward()
    try:
        ddp2(x[:B], False)
    except RuntimeError as e:
        assert "Expected to have finished reduction in the prior iteration" in str(e), e
    else:
        raise AssertionError("unused parameters without find_unused_parameters did not raise")
    ok("unused_raises")


def check_batchnorm_buffers():
    """broadcast_buffers=True: rank 0's buffers are broadcast at every forward, then
    each rank updates them from its own batch (torch's behaviour)."""
    if not want("bn_buffers"):
        return
    batches = data("cnn", 6)
    crit = nn.CrossEntropyLoss()
    ref = build("cnn", nn.BatchNorm2d)
    opt_r = make_opt("sgd", ref.parameters())
    for x, y in batches:
        opt_r.zero_grad()
        bufs = dict(ref.named_buffers())
        saved = {k: v.clone() for k, v in bufs.items()}
        loss1 = crit(ref(x[B:]), y[B:])         # rank 1's forward from rank 0's buffers
        with torch.no_grad():
            for k, v in saved.items():
                bufs[k].copy_(v)
        loss0 = crit(ref(x[:B]), y[:B])         # rank 0's forward (its buffers remain)
        ((loss0 + loss1) / 2).backward()
        opt_r.step()
    ddp, _ = ddp_run("cnn", "sgd", "eager", batches, bn=nn.BatchNorm2d)
    close(ref, ddp.module, "batchnorm")
    bn = ddp.module[1]
    if RANK == 0:
        np.testing.assert_allclose(bn.running_mean.numpy(), ref[1].running_mean.numpy(),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(bn.running_var.numpy(), ref[1].running_var.numpy(),
                                   rtol=1e-5, atol=1e-6)
    assert int(bn.num_batches_tracked.item()) == 6
    ok("bn_buffers")


def check_sync_batchnorm():
    for mode in ("eager", "step"):
        name = f"sync_bn_{mode}"
        if not want(name):
            continue
        batches = data("cnn", STEPS if mode == "eager" else 6)
        ref = reference("cnn", "sgd", batches, bn=nn.BatchNorm2d)
        ddp, _ = ddp_run("cnn", "sgd", mode, batches, bn=nn.BatchNorm2d, sync_bn=True)
        assert isinstance(ddp.module[1], nn.SyncBatchNorm)
        close(ref, ddp.module, name)
        np.testing.assert_allclose(ddp.module[1].running_mean.numpy(),
                                   ref[1].running_mean.numpy(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ddp.module[1].running_var.numpy(),
                                   ref[1].running_var.numpy(), rtol=1e-5, atol=1e-5)
        ok(name)


def check_model_mismatch():
    if not want("model_mismatch"):
        return
    torch.manual_seed(0)
    model = nn.Linear(6, 3 + RANK)
    try:
        DDP(model)
    except RuntimeError as e:
        assert "appears not to match sizes of the same param in process" in str(e), e
    else:
        raise AssertionError("DDP accepted models of different shapes")
    ok("model_mismatch")


def main():
    dist.init_process_group("mpi", timeout=timedelta(seconds=60))
    assert dist.get_world_size() == 2 and dist.get_rank() == RANK
    t_start = time.perf_counter()
    check_module_attr_and_state_dict()
    check_model_mismatch()
    check_eager_overlap_and_buckets()
    check_no_sync()
    check_find_unused()
    check_batchnorm_buffers()
    check_sync_batchnorm()
    check_equivalence()
    check_overlap_in_plan()
    dist.barrier()
    dist.destroy_process_group()
    print(f"DONE rank {RANK} in {time.perf_counter() - t_start:.1f}s", flush=True)


if __name__ == "__main__":
    main()
