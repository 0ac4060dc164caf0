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

TRAIN_WORKLOADS = ("mlp_train", "transformer_block_train", "cnn_train", "lstm_lm_train",
                   "gpt_train")
TRAIN_TARGETS = {
    "mlp_train": "whole step >= 1.5x eager; optimizer >= 4x eager loop; planned <= 60% of "
                 "eager intermediates; cold compile < 10 s, warm < 1.5 s",
    "transformer_block_train": "(no target; reported)",
    "cnn_train": "(no target; reported)",
    "lstm_lm_train": "(no target; reported)",
    "gpt_train": "cold first step <= 5 s, warm (cache hit, new process) <= 0.5 s",
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


def _setup(name: str, small: bool, seed: int = 0, dropout: float | None = None):
    """(model, batch, loss function) for a workload. ``dropout`` overrides gpt_train's
    0.1 (0 measures the compiled step while dropout is still a graph break)."""
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
    if name == "cnn_train":
        batch = 16 if small else 64
        model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Flatten(), nn.Linear(32 * 7 * 7, 10))
        x = gc.randn(batch, 1, 28, 28, generator=g)
        y = gc.randint(0, 10, (batch,), generator=g)
        crit = nn.CrossEntropyLoss()
        return model, (x, y), lambda out, y: crit(out, y)
    if name == "lstm_lm_train":
        vocab, d, seq, batch = 64, 128, (16 if small else 32), (4 if small else 16)
        model = model_class("LSTMLanguageModel")(vocab, d)
        x = gc.randint(0, vocab, (batch, seq), generator=g)
        y = gc.randint(0, vocab, (batch, seq), generator=g)
        return model, (x, y), lambda out, y: nn.functional.cross_entropy(
            out.reshape(-1, vocab), y.reshape(-1))
    if name == "gpt_train":
        vocab, seq, batch = 65, (32 if small else 64), (2 if small else 8)
        model = model_class("GPT")(vocab, seq, d=128, heads=4, layers=(2 if small else 4),
                                   dropout=0.1 if dropout is None else dropout)
        x = gc.randint(0, vocab, (batch, seq), generator=g)
        y = gc.randint(0, vocab, (batch, seq), generator=g)
        return model, (x, y), lambda out, y: nn.functional.cross_entropy(
            out.reshape(-1, vocab), y.reshape(-1))
    raise ValueError(f"unknown training workload {name!r}; choose from {TRAIN_WORKLOADS}")


def _model_classes() -> dict:
    """The model classes, built on first use: importing this module must not import
    gcompile's ``nn`` (so ``gcompile bench --help`` stays fast)."""
    import gcompile as gc
    import gcompile.nn.functional as F
    from gcompile import nn

    class LSTMLanguageModel(nn.Module):
        """Embedding, one LSTM layer, a linear read-out over the vocabulary."""

        def __init__(self, vocab: int, d: int) -> None:
            super().__init__()
            self.emb = nn.Embedding(vocab, d)
            self.lstm = nn.LSTM(d, d, batch_first=True)
            self.head = nn.Linear(d, vocab)

        def forward(self, idx):
            h, _ = self.lstm(self.emb(idx))
            return self.head(h)

    class CausalSelfAttention(nn.Module):
        def __init__(self, d: int, heads: int, dropout: float) -> None:
            super().__init__()
            self.heads = heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.drop = nn.Dropout(dropout)
            self.p = dropout

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(x).split(d, dim=2)
            q = q.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
            k = k.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
            v = v.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                               dropout_p=self.p if self.training else 0.0)
            y = y.transpose(1, 2).reshape(b, t, d)
            return self.drop(self.proj(y))

    class Block(nn.Module):
        def __init__(self, d: int, heads: int, dropout: float) -> None:
            super().__init__()
            self.ln1 = nn.LayerNorm(d)
            self.attn = CausalSelfAttention(d, heads, dropout)
            self.ln2 = nn.LayerNorm(d)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d),
                                     nn.Dropout(dropout))

        def forward(self, x):
            x = x + self.attn(self.ln1(x))
            return x + self.mlp(self.ln2(x))

    class GPT(nn.Module):
        """A character-level GPT: token and position embeddings, pre-norm blocks with
        causal attention, a final LayerNorm and a linear head."""

        def __init__(self, vocab: int, block_size: int, d: int = 128, heads: int = 4,
                     layers: int = 4, dropout: float = 0.1) -> None:
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Embedding(block_size, d)
            self.drop = nn.Dropout(dropout)
            self.blocks = nn.Sequential(*[Block(d, heads, dropout) for _ in range(layers)])
            self.ln = nn.LayerNorm(d)
            self.head = nn.Linear(d, vocab)

        def forward(self, idx):
            t = idx.shape[1]
            pos = gc.arange(t)
            x = self.drop(self.tok(idx) + self.pos(pos))
            return self.head(self.ln(self.blocks(x)))

    return {"LSTMLanguageModel": LSTMLanguageModel, "GPT": GPT}


_CLASSES: dict = {}


def model_class(name: str) -> type:
    """``"LSTMLanguageModel"`` or ``"GPT"`` (the examples build theirs from these)."""
    if not _CLASSES:
        _CLASSES.update(_model_classes())
    return _CLASSES[name]


def __getattr__(name: str):
    if name in ("LSTMLanguageModel", "GPT"):
        return model_class(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
from gcompile import bench_models
name, small = sys.argv[1], sys.argv[2] == "1"
dropout = None if sys.argv[3] == "none" else float(sys.argv[3])
if sys.argv[4] == "models":  # bench_models' shapes and optimizers
    model, opt, (x, y), loss_fn = bench_models.build(gc, name, dropout or 0.0, small)
else:
    model, (x, y), loss_fn = _setup(name, small, dropout=dropout)
    opt = gc.optim.Adam(model.parameters(), lr=1e-3)
def train_step(x, y):
    opt.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); opt.step(); return loss
step = gc.compile(train_step)
t1 = time.perf_counter()
c1 = time.process_time()
# the first step creates optimizer state, the second traces, the third runs the plan
step(x, y); step(x, y); step(x, y)
t2 = time.perf_counter()
from kernels.cpu import cache_stats
print(json.dumps({"import_s": t1 - t0, "compile_s": t2 - t1,
                  "cpu_s": time.process_time() - c1, "cache": cache_stats()}))
"""


def compile_latency(name: str, small: bool = False, dropout: float | None = None,
                    models: bool = False) -> dict:
    """First-step latency in a new process: cold (empty cache) then warm. ``models``:
    the workload as ``gcompile.bench_models`` builds it."""
    from .bench import in_new_processes
    argv = [name, "1" if small else "0", "none" if dropout is None else str(dropout),
            "models" if models else "setup"]
    return in_new_processes(_LATENCY_SNIPPET, argv)


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
                    latency: bool = True, progress=None) -> list[dict]:
    """Run the training workloads; ``progress`` as for ``bench.run_bench``."""
    from .bench import _say
    say = _say(progress)
    rows = []
    for name in names:
        say(name, "eager, compiled module, whole step")
        row = run_train_workload(name, repeat, small)
        if latency:
            say(name, "first step in new processes (cold, warm)")
            row["latency"] = compile_latency(name, small)
        rows.append(row)
        say(name, None)
    return rows
