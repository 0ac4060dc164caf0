"""Training workloads for ``gcompile bench``: eager step, compiled module with the
eager optimizer, and the whole step compiled into one plan.

Reports median step time, speedup over eager, kernels per step, the
optimizer update alone (eager loop vs compiled), and planned memory against
the bytes of every intermediate the step creates (what eager allocates).
Compile latency is measured in fresh processes: cold (empty kernel cache)
and warm (the same cache again).
"""
from __future__ import annotations

import time

import numpy as np

TRAIN_WORKLOADS = ("mlp_train", "transformer_block_train")
TRAIN_TARGETS = {
    "mlp_train": "whole step >= 1.5x eager; optimizer >= 4x eager loop; planned <= 60% of "
                 "eager intermediates; cold compile < 10 s, warm < 1.5 s",
    "transformer_block_train": "(no target; reported)",
}


def _median_ms(fn, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def _setup(name: str, small: bool, seed: int = 0):
    """(model, batch, loss function, optimizer factory) for a workload."""
    import gcompile as gc
    from gcompile import nn

    gc.manual_seed(seed)
    g = gc.Generator().manual_seed(seed)
    if name == "mlp_train":
        batch = 64 if small else 256
        model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                              nn.Linear(512, 10))
        x = gc.randn(batch, 784, generator=g)
        y = gc.randint(0, 10, (batch,), generator=g)
        crit = nn.CrossEntropyLoss()
        return model, (x, y), lambda out, y: crit(out, y)
    if name == "transformer_block_train":
        d, heads, seq, batch = 256, 4, (32 if small else 128), (2 if small else 8)

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1 = nn.LayerNorm(d)
                self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
                self.ln2 = nn.LayerNorm(d)
                self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

            def forward(self, x):
                h = self.ln1(x)
                x = x + self.attn(h, h, h, need_weights=False)[0]
                return x + self.mlp(self.ln2(x))

        model = Block()
        x = gc.randn(batch, seq, d, generator=g)
        y = gc.randn(batch, seq, d, generator=g)
        return model, (x, y), lambda out, y: ((out - y) ** 2).mean()
    raise ValueError(f"unknown training workload {name!r}; choose from {TRAIN_WORKLOADS}")


def _plans(entry) -> list:
    if hasattr(entry, "forward") and hasattr(entry, "backward"):
        return [entry.forward.plan, entry.backward.plan]
    return [entry.executable.plan]


def run_train_workload(name: str, repeat: int = 5, small: bool = False) -> dict:
    import gcompile as gc

    row: dict = {"workload": name, "target": TRAIN_TARGETS[name]}

    # 1. eager step
    model, (x, y), loss_fn = _setup(name, small)
    opt = gc.optim.Adam(model.parameters(), lr=1e-3)

    def eager_step():
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss

    row["eager_ms"] = _median_ms(eager_step, repeat)
    row["eager_optimizer_ms"] = _median_ms(opt.step, repeat)

    # 2. compiled module, eager optimizer
    model2, _, _ = _setup(name, small)
    opt2 = gc.optim.Adam(model2.parameters(), lr=1e-3)
    cm = gc.compile(model2)

    def module_step():
        opt2.zero_grad()
        loss = loss_fn(cm(x), y)
        loss.backward()
        opt2.step()
        return loss

    row["compiled_module_ms"] = _median_ms(module_step, repeat)
    row["compiled_module_kernels"] = sum(p.num_kernels for e in cm.entries for p in _plans(e))

    # 3. whole step
    model3, _, _ = _setup(name, small)
    opt3 = gc.optim.Adam(model3.parameters(), lr=1e-3)

    def train_step(x, y):
        opt3.zero_grad()
        loss = loss_fn(model3(x), y)
        loss.backward()
        opt3.step()
        return loss

    step = gc.compile(train_step)
    row["whole_step_ms"] = _median_ms(lambda: step(x, y), repeat, warmup=3)
    entries = step.entries
    if entries:
        plan = entries[0].executable.plan
        row["whole_step_kernels"] = plan.num_kernels
        row["planned_bytes"] = plan.planned_bytes
        row["unplanned_bytes"] = plan.unplanned_bytes
    else:
        row["whole_step_note"] = "fell back to eager (see GCOMPILE_LOG=graph_breaks)"
    copt = gc.compile(opt3.step)
    row["compiled_optimizer_ms"] = _median_ms(copt, repeat, warmup=3)
    ref = eager_step().item()
    got = step(x, y).item()
    row["loss_eager_vs_step"] = (ref, got)
    row["speedup_module"] = row["eager_ms"] / row["compiled_module_ms"]
    row["speedup_step"] = row["eager_ms"] / row["whole_step_ms"]
    row["speedup_optimizer"] = row["eager_optimizer_ms"] / row["compiled_optimizer_ms"]
    return row


_LATENCY_SNIPPET = """
import time, json, sys
t0 = time.perf_counter()
import gcompile as gc
from gcompile.bench_train import _setup
name, small = sys.argv[1], sys.argv[2] == "1"
model, (x, y), loss_fn = _setup(name, small)
opt = gc.optim.Adam(model.parameters(), lr=1e-3)
def train_step(x, y):
    opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step(); return loss
step = gc.compile(train_step)
t1 = time.perf_counter()
# the first step creates optimizer state, the second traces, the third runs the plan
step(x, y); step(x, y); step(x, y)
t2 = time.perf_counter()
from kernels.cpu import cache_stats
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1, "cache": cache_stats()}))
"""


def compile_latency(name: str, small: bool = False) -> dict:
    """First-step latency in a new process: cold (empty cache) then warm."""
    from .bench import in_new_processes
    return in_new_processes(_LATENCY_SNIPPET, [name, "1" if small else "0"])


def format_train_table(rows: list[dict]) -> str:
    head = ("workload                 eager_ms module_ms  step_ms  x_module  x_step  "
            "opt_eager opt_comp  x_opt  kernels/step")
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['workload']:<24} {r['eager_ms']:8.2f} {r['compiled_module_ms']:9.2f} "
            f"{r['whole_step_ms']:8.2f} {r['speedup_module']:8.2f}x {r['speedup_step']:6.2f}x "
            f"{r['eager_optimizer_ms']:9.2f} {r['compiled_optimizer_ms']:8.2f} "
            f"{r['speedup_optimizer']:5.2f}x {r.get('whole_step_kernels', '-'):>8}")
    for r in rows:
        if "planned_bytes" in r:
            lines.append(f"{r['workload']}: whole-step planned arena {r['planned_bytes']} bytes "
                         f"vs {r['unplanned_bytes']} bytes of intermediates "
                         f"({100 * r['planned_bytes'] / max(r['unplanned_bytes'], 1):.0f}%)")
        if "latency" in r:
            lat = r["latency"]
            parts = []
            for label in ("cold", "warm"):
                v = lat.get(label, {})
                parts.append(f"{label} {v['compile_s']:.2f} s" if "compile_s" in v else
                             f"{label} failed: {v.get('error')}")
            lines.append(f"{r['workload']}: first compiled step in a new process: "
                         + ", ".join(parts))
        lines.append(f"{r['workload']}: target: {r['target']}")
    return "\n".join(lines)


def run_train_bench(names: list[str], repeat: int = 5, small: bool = False,
                    latency: bool = True) -> list[dict]:
    rows = []
    for name in names:
        row = run_train_workload(name, repeat, small)
        if latency:
            row["latency"] = compile_latency(name, small)
        rows.append(row)
    return rows
