"""Real-model training steps, gcompile against PyTorch, each system in a fresh process.

    python -m gcompile.bench_models [--rounds 2] [--turns 5] [--steps 10] [--dropout 0.0]
                                    [--systems gc_eager,gc_compiled,torch_eager]
                                    [workloads ...]

Workloads (the shapes of PyTorch's own examples):

- ``cnn_train``: the MNIST example net (conv 1->32->64 3x3, max-pool 2, fc 9216->128->10,
  log-softmax + NLL), batch 64, SGD with momentum;
- ``lstm_lm_train``: a character LSTM language model (embedding 65x64, LSTM 128, 64 steps,
  linear head), batch 32, Adam;
- ``gpt_train``: a character GPT (2 pre-norm blocks, d 128, 4 heads, 64 tokens), batch 16,
  AdamW;
- ``mlp:WIDTH:BATCH``: an MLP 784-WIDTH-WIDTH-10 with ReLU, cross-entropy and Adam.

Systems: ``gc_eager``, ``gc_compiled`` (``compile(step)``), ``torch_eager`` (when PyTorch
is installed) and, for the MLP only, ``jax_jit`` (``jax.jit`` of the same step with Adam
written out, as optax's; when JAX is installed: the issue's yardstick for compiled steps).

The model code is written once against a ``torch``-like module, so gcompile and PyTorch
run the same program. Each round starts a new Python process per system; built, compiled
and warmed up, they take turns (``--turns``, in rotating order, never two at once), each
turn one untimed step and ``--steps`` timed ones. The table gives the median over turns of
each turn's median step time, and ratios to PyTorch eager; the per-turn line gives the
median over turns of the ratio within a turn, which a machine whose speed drifts between
turns leaves alone. For the compiled step, the child also times every plan step and
splits a step into GEMM / layer kernels (library steps) / fused kernels / Python (what is
left of the wall time), each the median over the profiled steps.

Around each turn the parent probes how far apart two of the machine's cores are now
(``bench_probe``: a VM's host sometimes runs its two vCPUs on distant cores, and every
two-thread step slows), and gives the turns that ran with the cores near apart from all
turns; the split comes from a profile that ran with them near where one did.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

from ir.ops.linalg import matmul_flops

from . import bench_probe

MODEL_WORKLOADS = ("cnn_train", "lstm_lm_train", "gpt_train")
SYSTEMS = ("gc_eager", "gc_compiled", "torch_eager")


def build(tm, name: str, dropout: float = 0.0, small: bool = False):
    """(model, optimizer, (x, y), loss_fn) for a workload, written against ``tm``
    (``gcompile`` or ``torch``)."""
    nn, F = tm.nn, tm.nn.functional
    tm.manual_seed(0)

    def drop(p: float):
        return nn.Dropout(p) if p > 0 else nn.Identity()

    if name == "cnn_train":
        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.conv1 = nn.Conv2d(1, 32, 3, 1)
                self.conv2 = nn.Conv2d(32, 64, 3, 1)
                self.dropout1 = drop(dropout)
                self.dropout2 = drop(dropout)
                self.fc1 = nn.Linear(9216, 128)
                self.fc2 = nn.Linear(128, 10)

            def forward(self, x):
                x = F.relu(self.conv1(x))
                x = F.relu(self.conv2(x))
                x = F.max_pool2d(x, 2)
                x = tm.flatten(self.dropout1(x), 1)
                x = self.dropout2(F.relu(self.fc1(x)))
                return F.log_softmax(self.fc2(x), dim=1)

        batch = 8 if small else 64
        model = Net()
        opt = tm.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x = tm.randn(batch, 1, 28, 28)
        y = tm.randint(0, 10, (batch,))
        return model, opt, (x, y), lambda out, y: F.nll_loss(out, y)

    if name == "lstm_lm_train":
        vocab, emb, hidden = 65, 64, 128
        seq, batch = (16, 4) if small else (64, 32)

        class CharLSTM(nn.Module):
            def __init__(self):
                super().__init__()
                self.emb = nn.Embedding(vocab, emb)
                self.drop = drop(dropout)
                self.lstm = nn.LSTM(emb, hidden, batch_first=True)
                self.head = nn.Linear(hidden, vocab)

            def forward(self, idx):
                h, _ = self.lstm(self.drop(self.emb(idx)))
                return self.head(self.drop(h))

        model = CharLSTM()
        opt = tm.optim.Adam(model.parameters(), lr=2e-3)
        x = tm.randint(0, vocab, (batch, seq))
        y = tm.randint(0, vocab, (batch, seq))
        return model, opt, (x, y), lambda out, y: F.cross_entropy(out.reshape(-1, vocab),
                                                                  y.reshape(-1))

    if name == "gpt_train":
        vocab, d, heads, layers = 65, 128, 4, 2
        seq, batch = (16, 2) if small else (64, 16)

        class Attention(nn.Module):
            def __init__(self):
                super().__init__()
                self.qkv = nn.Linear(d, 3 * d)
                self.proj = nn.Linear(d, d)
                self.drop = drop(dropout)

            def forward(self, x):
                b, t, _ = x.shape
                q, k, v = self.qkv(x).split(d, dim=2)
                q = q.reshape(b, t, heads, d // heads).transpose(1, 2)
                k = k.reshape(b, t, heads, d // heads).transpose(1, 2)
                v = v.reshape(b, t, heads, d // heads).transpose(1, 2)
                y = F.scaled_dot_product_attention(
                    q, k, v, is_causal=True, dropout_p=dropout if self.training else 0.0)
                return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))

        class Block(nn.Module):
            def __init__(self):
                super().__init__()
                self.ln1 = nn.LayerNorm(d)
                self.attn = Attention()
                self.ln2 = nn.LayerNorm(d)
                self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d),
                                         drop(dropout))

            def forward(self, x):
                x = x + self.attn(self.ln1(x))
                return x + self.mlp(self.ln2(x))

        class GPT(nn.Module):
            def __init__(self):
                super().__init__()
                self.tok = nn.Embedding(vocab, d)
                self.pos = nn.Embedding(seq, d)
                self.drop = drop(dropout)
                self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
                self.ln = nn.LayerNorm(d)
                self.head = nn.Linear(d, vocab)

            def forward(self, idx):
                pos = tm.arange(idx.shape[1])
                x = self.drop(self.tok(idx) + self.pos(pos))
                return self.head(self.ln(self.blocks(x)))

        model = GPT()
        opt = tm.optim.AdamW(model.parameters(), lr=1e-3)
        x = tm.randint(0, vocab, (batch, seq))
        y = tm.randint(0, vocab, (batch, seq))
        return model, opt, (x, y), lambda out, y: F.cross_entropy(out.reshape(-1, vocab),
                                                                  y.reshape(-1))
    if name.startswith("mlp:"):
        _, width, batch = name.split(":")
        width, batch = int(width), int(batch)
        model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width),
                              nn.ReLU(), nn.Linear(width, 10))
        opt = tm.optim.Adam(model.parameters(), lr=1e-3)
        x = tm.randn(batch, 784)
        y = tm.randint(0, 10, (batch,))
        return model, opt, (x, y), lambda out, y: F.cross_entropy(out, y)
    raise ValueError(f"unknown model workload {name!r}; choose from {MODEL_WORKLOADS}")


def train_step(model, opt, loss_fn):
    """The training step every benchmark times (the same code under torch and
    gcompile): zero the gradients, loss, backward, optimizer step; returns the loss."""
    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


_CONV_OPS = ("conv ", "conv_input_grad ", "conv_weight_grad ")


def _split(records: list[dict], walls: list[float]) -> dict:
    """ms per step in GEMMs, convolutions (columns or Winograd tiles and their GEMMs, one
    library step each), other library (layer) steps, fused kernels, views, and the
    rest: each the median over the profiled calls (``walls``: their times) of the
    call's total, so that a call the machine stalled does not move it (one call in ten
    with a 6 ms stall in a GEMM put the LSTM's mean GEMM time 20% over its median)."""
    n = len(walls)
    if n and len(records) % n:   # not one record per step and call: the mean instead
        whole = _split(records, [sum(walls)])
        return {k: [(name, ms / n) for name, ms in v] if k == "top_layer_steps" else v / n
                for k, v in whole.items()}
    each = len(records) // n if n else 0
    calls: list[dict] = []
    tops: list[dict] = []
    for c in range(n):
        sums = {"matmul": 0.0, "library": 0.0, "kernel": 0.0, "view": 0.0, "conv": 0.0}
        top: dict[str, float] = {}
        for r in records[c * each:(c + 1) * each]:
            kind = "conv" if r["step"].startswith(_CONV_OPS) else r["kind"]
            sums[kind] = sums.get(kind, 0.0) + r["seconds"]
            if kind == "library":
                top[r["step"]] = top.get(r["step"], 0.0) + r["seconds"]
        sums["python"] = max(walls[c] - sum(sums.values()) + sums["view"], 0.0)
        calls.append(sums)
        tops.append(top)

    def med(key: str, rows: list[dict]) -> float:
        return 1e3 * statistics.median([r.get(key, 0.0) for r in rows]) if rows else 0.0
    out = {"gemm_ms": med("matmul", calls), "conv_ms": med("conv", calls),
           "layer_ms": med("library", calls), "fused_ms": med("kernel", calls),
           "python_ms": med("python", calls)}
    names = {k for t in tops for k in t}
    out["top_layer_steps"] = sorted(((k, med(k, tops)) for k in names),
                                    key=lambda kv: -kv[1])[:5]
    return out


_CONV_FLOP_OPS = ("conv", "conv_input_grad", "conv_weight_grad")


def _flops(plan) -> dict:
    """GFLOP per step in the plan's GEMMs (2*M*N*K per product) and convolutions (each of
    conv and its two gradients multiplies (Cout, R) by (R, N*L): 2*N*Cout*L*R)."""
    out = {"gemm": 0.0, "conv": 0.0}
    for st in plan.steps:
        for n in st.nodes:
            if n.op == "matmul" and st.kind == "matmul":
                out["gemm"] += matmul_flops(n)
            elif n.op in _CONV_FLOP_OPS:
                rows = n.out.shape[1] if n.op == "conv_weight_grad" else n.inputs[1].shape[1]
                big = n.inputs[1] if n.op == "conv_weight_grad" else \
                    (n.out if n.op == "conv" else n.inputs[0])
                out["conv"] += 2.0 * math.prod(big.shape) * rows
    return {k: v / 1e9 for k, v in out.items()}


def blas_rate(n: int = 1024, repeat: int = 7) -> float:
    """This machine's BLAS rate in GFLOP/s: the best of ``repeat`` float32 n x n x n GEMMs
    with the threads the benchmark runs with (the step's GEMMs are measured against it)."""
    import numpy as np
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n), np.float32), rng.standard_normal((n, n), np.float32)
    out = np.empty((n, n), np.float32)
    np.matmul(a, b, out=out)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best / 1e9


def _rss_mb() -> float:
    """Resident memory of this process (Linux /proc; 0 elsewhere)."""
    import gc
    gc.collect()
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


class _Timed:
    """One system's training step, built, compiled and warmed up in this process:
    ``steps(n)`` times n more steps, ``report()`` says what they measured."""

    def __init__(self, system: str, name: str, dropout: float, small: bool) -> None:
        self.system, self.name = system, name
        self.times: list[float] = []
        if system == "jax_jit":
            self.fn, self.extra = _jax_step(name), None
            self.fn()
            return
        if system.startswith("torch"):
            import torch as tm
        else:
            import gcompile as tm
        tm.set_num_threads(int(os.environ.get("GCOMPILE_BENCH_THREADS", "2")))
        model, opt, (x, y), loss_fn = build(tm, name, dropout, small)
        model.train()
        base_mb = _rss_mb()
        step = tm.compile(train_step(model, opt, loss_fn)) if system == "gc_compiled" else \
            train_step(model, opt, loss_fn)
        self.fn = lambda: float(step(x, y))
        for _ in range(3):
            self.fn()
        self.extra = (step, model, x, y, base_mb)

    def steps(self, n: int) -> list[float]:
        """Time n steps (each waits for its loss, as a training loop's logging does)."""
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            self.fn()
            out.append(time.perf_counter() - t0)
        self.times += out
        return out

    def report(self, steps: int, profile: bool = True) -> dict:
        result: dict = {"system": self.system, "workload": self.name,
                        "ms": 1e3 * statistics.median(self.times), "loss": self.fn()}
        if self.extra is None:
            return result
        fn, model, x, y, base_mb = self.extra
        result["mem_mb"] = _rss_mb() - base_mb
        result["param_mb"] = sum(p.numel() * p.element_size()
                                 for p in model.parameters()) / 2**20
        if self.system == "gc_compiled":
            entries = fn.entries
            result["plan"] = bool(entries)
            if entries:
                ex = entries[-1].executable
                result["kernels"] = ex.plan.num_kernels
                result["planned_mb"] = ex.plan.planned_bytes / 2**20
                if profile:
                    result["split"] = self.profile(steps)
        return result

    def profile(self, steps: int, rate: bool = True) -> dict | None:
        """The compiled step's split over ``steps`` profiled steps, with its GEMM FLOPs and
        (``rate``) the BLAS rate measured right after (None where no plan ran)."""
        if self.system != "gc_compiled" or self.extra is None or not self.extra[0].entries:
            return None
        fn, _, x, y, _ = self.extra
        ex = fn.entries[-1].executable
        fn(x, y)
        ex.records.clear()
        ex.profile = True
        walls = []
        for _ in range(steps):
            t0 = time.perf_counter()
            fn(x, y)
            walls.append(time.perf_counter() - t0)
        ex.profile = False
        split = _split(ex.records, walls)
        split["gflop"] = _flops(ex.plan)
        if rate:
            split["blas_gflops"] = blas_rate()
        return split


def child(system: str, name: str, dropout: float, steps: int, small: bool) -> dict:
    """Time one system on one workload in this (fresh) process."""
    timed = _Timed(system, name, dropout, small)
    timed.steps(steps)
    return timed.report(steps)


def serve(system: str, name: str, dropout: float, small: bool, stdin=None, stdout=None
          ) -> None:
    """A child that takes turns: built and warmed up, it says ``ready``, then for each
    line ``N`` from the parent times 1 + N steps (the first, after its idle wait,
    untimed) and answers their times as a JSON list; for ``profile N`` it answers the
    compiled step's split over N profiled steps (``_Timed.profile``, without the BLAS
    rate), for ``rate`` the BLAS rate; on ``done`` it answers its report (without a
    split: the parent asked for those)."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    try:
        timed = _Timed(system, name, dropout, small)
    except Exception as e:  # noqa: BLE001 - the parent shows it in the table
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}), file=stdout, flush=True)
        return
    print(json.dumps("ready"), file=stdout, flush=True)
    steps = 0
    for line in stdin:
        if line.strip() == "done":
            print(json.dumps(timed.report(max(steps, 1), profile=False)), file=stdout,
                  flush=True)
            return
        if line.startswith("profile"):
            print(json.dumps(timed.profile(int(line.split()[1]), rate=False) or {}),
                  file=stdout, flush=True)
            continue
        if line.strip() == "rate":
            print(json.dumps({"blas_gflops": blas_rate()}), file=stdout, flush=True)
            continue
        steps = int(line)
        timed.fn()
        print(json.dumps(timed.steps(steps)), file=stdout, flush=True)


def _jax_step(name: str):
    """A callable running one step of the MLP under ``jax.jit``: forward, cross-entropy,
    grad and Adam (torch's defaults: lr 1e-3, betas 0.9/0.999, eps 1e-8) in one jitted
    function."""
    if not name.startswith("mlp:"):
        raise ValueError("jax_jit runs the mlp:WIDTH:BATCH workload only")
    import jax
    import jax.numpy as jnp
    import numpy as np

    _, width, batch = name.split(":")
    width, batch = int(width), int(batch)
    rng = np.random.default_rng(0)
    dims = [784, width, width, 10]
    params = []
    for i, o in zip(dims[:-1], dims[1:]):
        bound = 1 / np.sqrt(i)
        params += [jnp.asarray(rng.uniform(-bound, bound, (i, o)).astype(np.float32)),
                   jnp.asarray(rng.uniform(-bound, bound, (o,)).astype(np.float32))]
    x = jnp.asarray(rng.standard_normal((batch, 784)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 10, batch))

    def loss_fn(ps, x, y):
        h = x
        for k in range(0, len(ps) - 2, 2):
            h = jax.nn.relu(h @ ps[k] + ps[k + 1])
        logits = h @ ps[-2] + ps[-1]
        logp = jax.nn.log_softmax(logits)
        return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))

    @jax.jit
    def step(ps, m, v, t, x, y):
        loss, g = jax.value_and_grad(loss_fn)(ps, x, y)
        t = t + 1
        m = [0.9 * a + 0.1 * b for a, b in zip(m, g)]
        v = [0.999 * a + 0.001 * b * b for a, b in zip(v, g)]
        c1, c2 = 1 - 0.9 ** t, 1 - 0.999 ** t
        ps = [p - 1e-3 * (a / c1) / (jnp.sqrt(b / c2) + 1e-8) for p, a, b in zip(ps, m, v)]
        return ps, m, v, t, loss

    m = [jnp.zeros_like(p) for p in params]
    v = [jnp.zeros_like(p) for p in params]
    state = [(params, m, v, jnp.asarray(0.0, jnp.float32))]

    def run() -> float:
        *new, loss = step(*state[0], x, y)
        state[0] = tuple(new)
        return float(loss)

    for _ in range(2):
        run()
    return run


def _run_child(system: str, name: str, dropout: float, steps: int, small: bool) -> dict:
    cmd = [sys.executable, "-m", "gcompile.bench_models", "--child", system, name,
           str(dropout), str(steps), "1" if small else "0"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"system": system, "workload": name,
                "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _torch_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _jax_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("jax") is not None


class _Turns:
    """The live children of one round, one per system, taking turns."""

    def __init__(self, systems: list[str], name: str, dropout: float, small: bool) -> None:
        self.procs: dict = {}
        self.errors: dict = {}
        for s in systems:
            cmd = [sys.executable, "-m", "gcompile.bench_models", "--serve", s, name,
                   str(dropout), "1" if small else "0"]
            self.procs[s] = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE, text=True)
        for s in systems:   # all built, compiled and warm before any turn is timed
            self._ask(s, None)

    def _ask(self, s: str, line: str | None):
        """Send ``line`` (if any) to system s and read its answer; a child that failed
        or died is dropped, with its error kept."""
        proc = self.procs.get(s)
        if proc is None:
            return None
        try:
            if line is not None:
                proc.stdin.write(line + "\n")
                proc.stdin.flush()
            text = proc.stdout.readline()
        except OSError:
            text = ""
        got = json.loads(text) if text.strip() else None
        if got is None or (isinstance(got, dict) and "error" in got):
            proc.kill()
            self.errors[s] = got["error"] if got else \
                ((proc.stderr.read().strip().splitlines() or ["failed"])[-1])
            del self.procs[s]
            return None
        return got

    def turn(self, s: str, steps: int) -> list[float] | None:
        return self._ask(s, str(steps))

    def profile(self, s: str, steps: int) -> dict | None:
        return self._ask(s, f"profile {steps}")

    def rate(self, s: str) -> float | None:
        got = self._ask(s, "rate")
        return got["blas_gflops"] if got else None

    def finish(self, s: str) -> dict:
        got = self._ask(s, "done")
        proc = self.procs.pop(s, None)
        if proc is not None:
            proc.wait()
        return got if got is not None else {"system": s,
                                            "error": self.errors.get(s, "no result")}


def run(names: list[str], systems: list[str], rounds: int = 3, steps: int = 10,
        dropout: float = 0.0, small: bool = False, say=None, turns: int = 5,
        pause_s: float = 0.05, probe=None) -> list[dict]:
    """Rounds of fresh processes, one per system, alive together but never running at
    once: they take ``turns`` turns each of ``steps`` timed steps, in rotating order,
    ``pause_s`` apart (every system's idle threads asleep before the next turn). A
    machine whose speed drifts (shared hosts: 30% for tens of seconds) then slows every
    system alike, where a process per round put whole systems on one side of a change.
    One row per workload: per system the median of its turns' median step times, and
    ``paired``: the median over turns of compiled / PyTorch within the same turn.

    ``probe`` (default ``bench_probe.cross_core_ratio``) runs before each system's turn
    and after the last: a turn ran with the cores near when every probe around it did
    (``bench_probe.near``, against the baseline of all the run's probes), and the row
    gives those turns' figures apart too. The compiled step's split is profiled after
    the turns, up to 4 times, each profile and the BLAS rate after it between probes,
    and taken from a profile that ran with the cores near where one did."""
    probe = probe or bench_probe.cross_core_ratio
    if "torch_eager" in systems and not _torch_available():
        systems = [s for s in systems if s != "torch_eager"]
    if "jax_jit" in systems and not _jax_available():
        systems = [s for s in systems if s != "jax_jit"]
    done = []
    seen: list = []  # every probe of the run
    for n in names:
        per_turn: dict = {s: [] for s in systems}
        reports: dict = {s: [] for s in systems}
        probes: list = []  # per turn, the probes around its turns
        splits: list = []  # (split, probes around it)
        for r in range(rounds):
            if say:
                say(f"round {r + 1}/{rounds}: {n}: starting {', '.join(systems)}")
            live = _Turns(systems, n, dropout, small)
            for t in range(turns):
                k = (r * turns + t) % len(systems)
                around = []
                for s in systems[k:] + systems[:k]:
                    time.sleep(pause_s)
                    around.append(probe())
                    got = live.turn(s, steps)
                    per_turn[s].append(1e3 * statistics.median(got) if got else None)
                around.append(probe())
                probes.append(around)
                seen += around
            for _ in range(4 if "gc_compiled" in live.procs else 0):
                around = [probe()]
                got = live.profile("gc_compiled", steps)
                around.append(probe())
                rate = live.rate("gc_compiled") if got else None
                around.append(probe())
                seen += around
                if got and rate:
                    splits.append((dict(got, blas_gflops=rate), around))
                base = bench_probe.baseline(seen)
                if sum(ok for _, ok in _near_marks(splits, base)) >= 2:
                    break
            for s in systems:
                reports[s].append(live.finish(s))
        done.append((n, per_turn, reports, probes, splits))
    base = bench_probe.baseline(seen)
    return [_row(n, dropout, systems, per_turn, reports, probes, splits, base)
            for n, per_turn, reports, probes, splits in done]


def _near_marks(groups: list, base: float | None) -> list:
    """(item, near) for (item, probes) pairs: near when every probe around the item was
    (``bench_probe.near`` against ``base``)."""
    flat = [p for _, ps in groups for p in ps]
    marks = iter(bench_probe.near(flat, base))
    return [(item, all([next(marks) for _ in ps])) for item, ps in groups]


def _total(sp: dict) -> float:
    return sp["gemm_ms"] + sp["conv_ms"] + sp["layer_ms"] + sp["fused_ms"] + sp["python_ms"]


def _row(name: str, dropout: float, systems: list[str], per_turn: dict, reports: dict,
         probes: list | None = None, splits: list | None = None,
         base: float | None = None) -> dict:
    """One workload's row; ``base``: the probes' near baseline (default: these probes')."""
    row: dict = {"workload": name, "dropout": dropout}
    n_turns = max((len(v) for v in per_turn.values()), default=0)
    probes = probes if probes is not None else [[] for _ in range(n_turns)]
    splits = splits or []
    got = [p for ps in probes for p in ps if p is not None]
    if base is None:
        base = bench_probe.baseline(got + [p for _, ps in splits for p in ps])
    near = [ok for _, ok in _near_marks(list(enumerate(probes)), base)]
    if got:
        row["probe"] = {"baseline": base,
                        "best": min(got), "median": statistics.median(got),
                        "near_turns": sum(near), "turns": len(near), "near": near,
                        "worst_per_turn": [round(max((p for p in ps if p is not None),
                                                     default=0.0), 3) for ps in probes]}
    for s in systems:
        ms = [m for m in per_turn[s] if m is not None]
        ok = [g for g in reports[s] if "error" not in g]
        if not ms:
            row[s] = {"error": next((g["error"] for g in reports[s] if "error" in g),
                                    "no result")}
            continue
        cell: dict = {"ms": statistics.median(ms), "turns": [round(m, 2) for m in ms]}
        near_ms = [m for m, ok_ in zip(per_turn[s], near) if ok_ and m is not None]
        if got and near_ms:
            cell["near_ms"] = statistics.median(near_ms)
        if s == "gc_compiled" and ok:
            cell["plan"] = all(g.get("plan") for g in ok)
            marked = _near_marks(splits, base) + [(g["split"], True) for g in ok
                                                  if "split" in g]
            pool = [sp for sp, ok_ in marked if ok_]
            if pool or marked:
                cell["split"] = min(pool or [sp for sp, _ in marked], key=_total)
                if splits:
                    cell["split_near"] = bool(pool)
        row[s] = cell
    for s in ("gc_compiled", "gc_eager"):
        pairs = [(a / b, ok_) for a, b, ok_ in
                 zip(per_turn.get(s, ()), per_turn.get("torch_eager", ()), near)
                 if a is not None and b]
        if pairs and isinstance(row.get(s), dict) and "ms" in row[s]:
            row[s]["paired"] = statistics.median(q for q, _ in pairs)
            if got and any(ok_ for _, ok_ in pairs):
                row[s]["paired_near"] = statistics.median(q for q, ok_ in pairs if ok_)
    return row


SWEEP_BATCHES = (32, 64, 128, 256, 512, 1024)
SWEEP_WIDTHS = (256, 512, 1024, 2048)


def sweep(systems: list[str], rounds: int = 1, steps: int = 5, say=None) -> list[dict]:
    """How cost grows: the MLP step (784-W-W-10, Adam) over batch (width 512) and over
    width (batch 256), each point and system in a fresh process; time per sample and
    resident memory beyond the model (parameters excluded)."""
    points = [("batch", 512, b) for b in SWEEP_BATCHES] + \
             [("width", w, 256) for w in SWEEP_WIDTHS if w != 512]
    if "torch_eager" in systems and not _torch_available():
        systems = [s for s in systems if s != "torch_eager"]
    out = []
    for axis, width, batch in points:
        name = f"mlp:{width}:{batch}"
        row: dict = {"axis": axis, "width": width, "batch": batch}
        for s in systems:
            got = []
            for r in range(rounds):
                if say:
                    say(f"sweep {axis}: width {width} batch {batch}: {s} ({r + 1}/{rounds})")
                got.append(_run_child(s, name, 0.0, steps, False))
            ok = [g for g in got if "ms" in g]
            if not ok:
                row[s] = {"error": got[-1].get("error", "no result")}
                continue
            ms = statistics.median(g["ms"] for g in ok)
            row[s] = {"ms": ms, "us_per_sample": 1e3 * ms / batch,
                      "mem_mb": statistics.median(g["mem_mb"] for g in ok),
                      "param_mb": ok[0]["param_mb"]}
            if "planned_mb" in ok[0]:
                row[s]["planned_mb"] = ok[0]["planned_mb"]
        out.append(row)
    return out


def format_sweep(rows: list[dict], systems: list[str]) -> str:
    """Time per sample and resident MB beyond the model per system; for a compiled
    system also the plan's planned arena (MB)."""
    planned = [s for s in systems if any("planned_mb" in r.get(s, {}) for r in rows)]
    head = f"{'axis':<6}{'width':>6}{'batch':>6}{'params MB':>10}" + "".join(
        f"{s + ' us/sample':>22}{s + ' MB':>16}" + (f"{'planned MB':>12}" if s in planned
                                                     else "") for s in systems)
    lines = [head]
    for r in rows:
        pm = next((r[s]["param_mb"] for s in systems if "param_mb" in r.get(s, {})), 0.0)
        cells = ""
        for s in systems:
            c = r.get(s, {})
            cells += (f"{c['us_per_sample']:>22.2f}{c['mem_mb']:>16.1f}" if "ms" in c
                      else f"{'failed':>22}{'':>16}")
            if s in planned:
                cells += f"{c['planned_mb']:>12.1f}" if "planned_mb" in c else f"{'':>12}"
        lines.append(f"{r['axis']:<6}{r['width']:>6}{r['batch']:>6}{pm:>10.1f}" + cells)
    return "\n".join(lines)


def plot_sweep(rows: list[dict], systems: list[str], path: str) -> None:
    """Time per sample against batch and against width, and memory against parameters."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for s in systems:
        for ax, axis, key in ((axes[0], "batch", "batch"), (axes[1], "width", "width")):
            pts = [(r[key], r[s]["us_per_sample"]) for r in rows
                   if (r["axis"] == axis or (axis == "width" and r["batch"] == 256))
                   and "ms" in r.get(s, {})]
            pts.sort()
            if pts:
                ax.plot(*zip(*pts), marker="o", label=s)
        mem = sorted((r[s]["param_mb"], r[s]["mem_mb"]) for r in rows
                     if r["batch"] == 256 and "ms" in r.get(s, {}))
        if mem:
            axes[2].plot(*zip(*mem), marker="o", label=s)
    axes[0].set(xscale="log", xlabel="batch (width 512)", ylabel="us per sample",
                title="MLP train step: cost per sample vs batch")
    axes[1].set(xlabel="width (batch 256)", ylabel="us per sample",
                title="cost per sample vs width")
    axes[2].set(xlabel="parameters (MB)", ylabel="resident MB beyond the model",
                title="memory vs parameters (batch 256)")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def format_table(rows: list[dict]) -> str:
    head = (f"{'workload':<16}{'gc eager':>10}{'gc compiled':>13}{'torch eager':>13}"
            f"{'comp/torch':>12}{'eager/torch':>13}{'eager/comp':>12}")
    lines = [head]

    def ms(cell):
        return cell.get("ms") if isinstance(cell, dict) else None

    for r in rows:
        e, c, t = ms(r.get("gc_eager", {})), ms(r.get("gc_compiled", {})), \
            ms(r.get("torch_eager", {}))
        j = ms(r.get("jax_jit", {}))

        def f(v):
            return f"{v:.1f}" if v is not None else "-"

        def ratio(a, b):
            return f"{a / b:.2f}x" if a is not None and b else "-"

        lines.append(f"{r['workload']:<16}{f(e):>10}{f(c):>13}{f(t):>13}"
                     f"{ratio(c, t):>12}{ratio(e, t):>13}{ratio(e, c):>12}"
                     + (f"   jax jit {f(j)} ms, compiled/jax {ratio(c, j)}" if j else ""))
    for r in rows:
        paired = [f"{label} {r[s]['paired']:.2f}x" for s, label in
                  (("gc_compiled", "compiled/torch"), ("gc_eager", "eager/torch"))
                  if isinstance(r.get(s), dict) and "paired" in r[s]]
        if paired:
            turns = len(r["gc_compiled" if "gc_compiled" in r else "gc_eager"].get("turns", ()))
            lines.append(f"{r['workload']} per turn (median over {turns} turns of the ratio "
                         "within a turn): " + ", ".join(paired))
        lines += _near_lines(r)
    for r in rows:
        comp = r.get("gc_compiled", {})
        if "split" in comp:
            sp = comp["split"]
            conv = (f"conv (with its GEMMs) {sp['conv_ms']:.1f} ms, "
                    if sp.get("conv_ms") else "")
            lines.append(f"{r['workload']} compiled step: GEMM {sp['gemm_ms']:.1f} ms, {conv}"
                         f"layer kernels {sp['layer_ms']:.1f} ms, fused kernels "
                         f"{sp['fused_ms']:.1f} ms, Python {sp['python_ms']:.1f} ms"
                         + ("" if comp.get("plan") else " (NO PLAN: ran eagerly)"))
            lines += _rate_lines(r["workload"], sp)
            if comp.get("split_near") is False:
                lines.append("    (no profile ran with the cores near: these are from one "
                             "that ran with them far)")
            if sp["top_layer_steps"]:
                lines.append("    layer steps: " + ", ".join(
                    f"{k} {v:.1f}" for k, v in sp["top_layer_steps"]))
        for s, cell in r.items():
            if isinstance(cell, dict) and "error" in cell:
                lines.append(f"{r['workload']} {s}: failed: {cell['error']}")
    return "\n".join(lines)


def _near_lines(r: dict) -> list[str]:
    """The turns that ran with the cores near (``bench_probe``), apart."""
    pr = r.get("probe")
    if not pr:
        return []
    head = (f"{r['workload']} with the cores near: {pr['near_turns']} of {pr['turns']} "
            "turns (every cross-core read probe around the turn within "
            f"{bench_probe.NEAR_FACTOR}x of the run's baseline {pr['baseline']:.2f}; "
            f"the worst turn's {max(pr['worst_per_turn']):.2f})")
    if not pr["near_turns"]:
        return [head]
    parts = [f"{label} {r[s]['near_ms']:.1f} ms" for s, label in
             (("gc_eager", "gc eager"), ("gc_compiled", "compiled"), ("torch_eager", "torch"))
             if isinstance(r.get(s), dict) and "near_ms" in r[s]]
    parts += [f"{label} {r[s]['paired_near']:.2f}x" for s, label in
              (("gc_compiled", "compiled/torch"), ("gc_eager", "eager/torch"))
              if isinstance(r.get(s), dict) and "paired_near" in r[s]]
    return [head + ": " + ", ".join(parts)]


def _rate_lines(workload: str, sp: dict) -> list[str]:
    """The step's GEMM (and convolution) time against its FLOPs at the machine's BLAS
    rate: 1.00x would be every product at the rate of a large square GEMM (a
    convolution's FLOPs are im2col's: Winograd's fewer multiplies can beat 1.00x). With
    both, also all of the step's products together (the convolutions' whole steps,
    their copies included)."""
    rate, fl = sp.get("blas_gflops"), sp.get("gflop")
    if not rate or not fl:
        return []
    parts = []
    both = ("products", None, sp["gemm_ms"] + sp["conv_ms"])
    for what, key, ms in (("GEMM", "gemm", sp["gemm_ms"]), ("conv", "conv", sp["conv_ms"]),
                          both):
        gflop = fl.get(key) if key else (fl.get("gemm", 0.0) + fl.get("conv", 0.0))
        if gflop and (key or (fl.get("gemm") and fl.get("conv"))):
            ideal = gflop / rate * 1e3
            parts.append(f"{'all ' if key is None else ''}{what} {ms:.1f} ms for "
                         f"{gflop:.2f} GFLOP ({gflop / ms * 1e3:.0f} GFLOP/s) = "
                         f"{ms / ideal:.2f}x")
    return [f"    {workload}: " + "; ".join(parts) + f" the time at the BLAS rate "
            f"({rate:.0f} GFLOP/s, a 1024^3 float32 GEMM)"] if parts else []


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m gcompile.bench_models",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    p.add_argument("--serve", nargs=4, help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=None,
                   help="rounds of fresh processes (default 2; 1 with --sweep)")
    p.add_argument("--steps", type=int, default=10,
                   help="timed steps per turn (per process with --sweep)")
    p.add_argument("--turns", type=int, default=5,
                   help="turns per round: the systems' live processes take turns")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--small", action="store_true", help="small shapes (a quick check)")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    p.add_argument("--sweep", action="store_true",
                   help="the MLP step over batch 32-1024 and width 256-2048 instead")
    p.add_argument("--plot", metavar="FILE.png", help="with --sweep: draw it (needs matplotlib)")
    p.add_argument("workloads", nargs="*", default=list(MODEL_WORKLOADS))
    args = p.parse_args(argv)
    if args.child:
        system, name, dropout, steps, small = args.child
        print(json.dumps(child(system, name, float(dropout), int(steps), small == "1")))
        return 0
    if args.serve:
        system, name, dropout, small = args.serve
        serve(system, name, float(dropout), small == "1")
        return 0
    systems = [s for s in args.systems.split(",") if s]
    say = lambda m: print(m, file=sys.stderr, flush=True)  # noqa: E731
    if args.sweep:
        rows = sweep(systems, args.rounds or 1, args.steps, say)
        shown = [s for s in systems if any(s in r for r in rows)]
        print(format_sweep(rows, shown))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(rows, fh, indent=1)
        if args.plot:
            plot_sweep(rows, shown, args.plot)
        return 0
    for n in args.workloads:
        if n not in MODEL_WORKLOADS and not re.fullmatch(r"mlp:\d+:\d+", n):
            p.error(f"unknown workload {n!r}; choose from {', '.join(MODEL_WORKLOADS)} or "
                    "mlp:WIDTH:BATCH")
    rows = run(args.workloads, systems, args.rounds or 2, args.steps, args.dropout, args.small,
               say=say, turns=args.turns)
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
