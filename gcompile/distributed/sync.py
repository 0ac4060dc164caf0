"""Module-state synchronisation DDP needs: broadcast from a source rank, and a
check that every rank holds the same model (shapes and dtypes)."""
from __future__ import annotations

from .._functions import cat
from .._tensor import Tensor, apply_op
from ..autograd.grad_mode import no_grad


def broadcast_coalesced(tensors: list[Tensor], src: int = 0) -> None:
    """Overwrite ``tensors`` with rank ``src``'s values: one broadcast per dtype."""
    by_dtype: dict[object, list[Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    with no_grad():
        for group in by_dtype.values():
            # no .detach(): under no_grad it is not needed, and a traced step loses in-place
            # writes made after a copy_ from a detached alias (a tracer issue)
            flats = [t.reshape(-1) for t in group]
            flat = flats[0] if len(flats) == 1 else cat(flats)
            res = apply_op("broadcast", (flat,), {"src": src})
            off = 0
            for t in group:
                n = t.numel()
                t.copy_(res.narrow(0, off, n).view(tuple(t.shape)))
                off += n


def verify_same_model(pg, named: list[tuple[str, Tensor]], what: str = "params") -> None:
    """Raise, as torch's DDP does, when ranks hold different parameter shapes/dtypes
    (a bucket built on mismatched shapes would corrupt memory in the allreduce)."""
    if pg is None or pg.size == 1:
        return
    mine = [[name, list(t.shape), t.dtype.name] for name, t in named]
    allmeta = pg.allgather_object(mine, "DDP_VERIFY_PARAMS")
    for r, theirs in enumerate(allmeta):
        if r == pg.rank:
            continue
        if len(theirs) != len(mine):
            raise RuntimeError(
                f"DDP expects same model across all ranks, but Rank {pg.rank} has {len(mine)} "
                f"{what}, while rank {r} has inconsistent {len(theirs)} {what}.")
        for k, (a, b) in enumerate(zip(mine, theirs)):
            if a[1] != b[1]:
                raise RuntimeError(
                    f"[{pg.rank}]: {what}[{k}] ({a[0]}) in this process with sizes {a[1]} "
                    f"appears not to match sizes of the same param in process {r} ({b[1]}).")
            if a[2] != b[2]:
                raise RuntimeError(
                    f"[{pg.rank}]: {what}[{k}] ({a[0]}) in this process has dtype {a[2]} but "
                    f"the same param in process {r} has dtype {b[2]}.")
