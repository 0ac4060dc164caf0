"""Data-parallel training on N processes with gcompile.distributed (MPI).

    mpiexec -n 2 python examples/distributed_train.py      # or: gcompile run -n 2 ...
    python examples/distributed_train.py                    # also runs as one process

Each rank reads its own shard of the data (DistributedSampler), DDP averages the
gradients, only rank 0 prints and writes checkpoints, and every rank resumes from
the checkpoint (load everywhere).
"""
from __future__ import annotations

import argparse
import os
from datetime import timedelta

import gcompile as torch
import gcompile.distributed as dist
from gcompile import nn
from gcompile.nn.parallel import DistributedDataParallel as DDP
from gcompile.utils.data import DataLoader, DistributedSampler, TensorDataset


def log(*args) -> None:
    """Rank-aware printing: only rank 0 talks."""
    if not dist.is_initialized() or dist.get_rank() == 0:
        print(*args, flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=32, help="per rank")
    ap.add_argument("--checkpoint", default="distributed_ckpt.pt")
    ap.add_argument("--compile", action="store_true", help="compile the whole training step")
    args = ap.parse_args()

    under_mpi = any(k in os.environ for k in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"))
    if under_mpi:
        dist.init_process_group("mpi", timeout=timedelta(minutes=5))
    rank = dist.get_rank() if under_mpi else 0
    world = dist.get_world_size() if under_mpi else 1

    g = torch.Generator().manual_seed(0)  # the same data set on every rank
    x = torch.randn(1024, 20, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    ds = TensorDataset(x, y)
    sampler = DistributedSampler(ds, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(ds, batch_size=args.batch_size, sampler=sampler, drop_last=True)

    torch.manual_seed(rank)  # deliberately different: DDP broadcasts rank 0's weights
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 2))
    ddp = DDP(model) if under_mpi else model
    opt = torch.optim.Adam(ddp.parameters(), lr=1e-2)
    crit = nn.CrossEntropyLoss()

    start_epoch = 0
    if os.path.exists(args.checkpoint):
        ckpt = torch.load(args.checkpoint)   # load everywhere
        model.load_state_dict(ckpt["model"])  # clean keys: saved from ddp.module
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"] + 1
        log(f"resumed from {args.checkpoint} at epoch {start_epoch}")

    def train_step(xb, yb):
        opt.zero_grad()
        loss = crit(ddp(xb), yb)
        loss.backward()
        opt.step()
        return loss

    step = torch.compile(train_step) if args.compile else train_step
    for epoch in range(start_epoch, start_epoch + args.epochs):
        sampler.set_epoch(epoch)  # a different shuffle each epoch, the same on all ranks
        total = torch.zeros(())
        for xb, yb in loader:
            total += step(xb, yb).detach()
        if under_mpi:
            dist.all_reduce(total, op=dist.ReduceOp.AVG)  # the mean over ranks
        log(f"epoch {epoch}: mean loss {total.item() / len(loader):.4f} on {world} rank(s)")
        if rank == 0:  # save on rank 0 only
            torch.save({"epoch": epoch, "model": model.state_dict(),
                        "optimizer": opt.state_dict()}, args.checkpoint)
        if under_mpi:
            dist.barrier()  # nobody reads the checkpoint before it is written

    with torch.no_grad():
        acc = (model(x).argmax(1) == y).float().mean().item()
    log(f"accuracy on the full data set: {acc:.3f}")
    if under_mpi:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
