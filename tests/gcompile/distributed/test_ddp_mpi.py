"""DistributedDataParallel on 2 ranks with batch B reproduces 1 process with batch 2B
(MLP and CNN; eager, compile(DDP), DDP(compile(model)) and whole-step compiled; SGD and
Adam; BatchNorm buffers, SyncBatchNorm), plus buckets/overlap, no_sync, unused parameters."""
from __future__ import annotations

import importlib.util
import pathlib
import sys

_spec = importlib.util.spec_from_file_location(
    "_dist_mpi_helpers", pathlib.Path(__file__).with_name("mpi_helpers.py"))
H = importlib.util.module_from_spec(_spec)
sys.modules["_dist_mpi_helpers"] = H
_spec.loader.exec_module(H)

CHECKS = ["state_dict", "model_mismatch", "buckets", "no_sync", "find_unused", "unused_raises",
          "bn_buffers", "sync_bn_eager", "sync_bn_step", "plan_overlap"] + [
    f"equivalence_{k}_{o}_{m}" for k, o, m in (
        ("mlp", "sgd", "eager"), ("mlp", "adam", "eager"), ("cnn", "sgd", "eager"),
        ("cnn", "adam", "eager"), ("mlp", "sgd", "module"), ("mlp", "adam", "module"),
        ("mlp", "adam", "wrapped"), ("cnn", "sgd", "wrapped"), ("mlp", "sgd", "step"),
        ("mlp", "adam", "step"), ("cnn", "sgd", "step"),
        ("cnn", "adam", "step"))]


def test_ddp_two_ranks_reproduce_one_rank_with_double_batch():
    proc = H.run_workers("ddp_worker.py", timeout=420)
    assert proc.returncode == 0, H.report(proc)
    got = H.passed(proc)
    missing = [c for c in CHECKS if got.get(c) != 2]
    assert not missing, f"checks not passed on both ranks: {missing}\n{H.report(proc)}"
