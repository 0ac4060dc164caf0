"""Where compiled training's memory goes: gcompile eager, ``compile(step)`` and torch eager.

    python benchmarks/memory.py [--widths 256,512,1024,2048,4096] [--batch 512]
                                [--systems gc_eager,gc_compiled,torch_eager] [--json FILE]

Workload: an MLP of 4 Linear layers (784-W-W-W-10) with ReLU, cross-entropy and Adam,
one training step per call (zero_grad, forward, backward, step), as in issue 20; plus a
tiny case (width 64, batch 8) whose compiled figure is the fixed cost, and the
character GPT of ``gcompile.bench_models`` (``gpt_train``: 2 blocks, d 128, 64 tokens,
batch 16, AdamW). Every system and
size runs in its own fresh process. Columns, all beyond the model's own parameters (the
resident size once the model, optimizer and batch exist):

- ``after3`` / ``after13``: resident MB after 3 steps and after 10 more (gradients and
  Adam's two moments are 3x the parameters in every system); ``anon13``: of that, the
  anonymous part (without touched pages of shared libraries such as LLVM's code);
- ``peak3``: the highest resident MB during the first 3 steps (VmHWM, reset once the
  model exists): for the compiled step, that includes tracing and planning;
  figures are for a warm kernel cache: a process that had to compile kernels (Numba
  imported) is measured again;
- ``arena``: MB of the compiled plans' arenas (intermediates placed by liveness) and
  whether their pages go back to the OS after each call (``r``) or stay (``k``);
- ``saved``: MB of activations kept from the forward for the backward (inputs and
  parameters not counted): eager from the autograd graph after the forward, torch
  through ``saved_tensors_hooks``, compiled from the step plan (what lives across its
  first backward step, ``StepEntry.saved_bytes``; the step's min-cut,
  ``ir.passes.partition``, chooses it) and, below the table, the min-cut of
  ``compile(loss_fn)`` (``TrainingEntry.saved_bytes``) for a compiled forward whose
  backward runs from the tape. A last section gives the saved bytes per step exactly.

A second table breaks the fixed cost down (resident MB added by each stage of a fresh
process: interpreter, NumPy, llvmlite, the rest of ``import gcompile``, a first eager
step, the compiled step's trace/plan/first calls) with the process's threads, loaded
kernels and whether Numba was imported. The kernel cache is whatever this user's cache
holds (warm after a first run).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

SYSTEMS = ("gc_eager", "gc_compiled", "torch_eager")
MB = 2 ** 20


def rss_mb() -> float:
    """Resident memory of this process (Linux /proc)."""
    gc.collect()
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / MB


def anon_mb() -> float:
    """The process's own (anonymous) resident memory: RSS less the file-backed pages
    of shared libraries it has touched (LLVM's code is most of those), which are
    clean, shared with other processes and reclaimable."""
    gc.collect()
    return _status("RssAnon") / 1024


def _status(key: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return float(line.split()[1])
    return 0.0


def hwm_mb() -> float:
    return _status("VmHWM") / 1024


def reset_hwm() -> bool:
    """Reset VmHWM to the current resident size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def build(tm, width: int, batch: int):
    nn, F = tm.nn, tm.nn.functional
    tm.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                          nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 10))
    opt = tm.optim.Adam(model.parameters(), lr=1e-3)
    x = tm.randn(batch, 784)
    y = tm.randint(0, 10, (batch,))
    return model, opt, x, y, (lambda out, t: F.cross_entropy(out, t))


def _root(a):
    while getattr(a, "base", None) is not None and hasattr(a.base, "nbytes"):
        a = a.base
    return a


def gc_saved_bytes(loss, exclude: set[int]) -> int:
    """Bytes of arrays the eager autograd graph below ``loss`` keeps for its backward
    (each underlying buffer once; parameters and inputs, in ``exclude``, not counted)."""
    import numpy as np
    seen_nodes, seen_bufs, total = set(), set(), 0
    stack = [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or id(node) in seen_nodes:
            continue
        seen_nodes.add(id(node))
        stack.extend(getattr(node, "_next", ()))
        saved = getattr(node, "_saved", None)
        ctx = getattr(node, "ctx", None)
        if saved is None and ctx is not None:
            saved = getattr(ctx, "_saved", None)
        items = saved.values() if isinstance(saved, dict) else (saved or ())
        for s in items:
            if s is None:
                continue
            arr = s if isinstance(s, np.ndarray) else (
                s.data if getattr(s, "data", None) is not None else
                getattr(getattr(s, "tensor", None), "_data", None))
            if not isinstance(arr, np.ndarray):
                continue
            r = _root(arr)
            if id(r) in exclude or id(r) in seen_bufs:
                continue
            seen_bufs.add(id(r))
            total += r.nbytes
    return total


def torch_saved_bytes(torch, model, loss_fn, x, y) -> int:
    exclude = {p.untyped_storage().data_ptr() for p in model.parameters()}
    exclude |= {x.untyped_storage().data_ptr(), y.untyped_storage().data_ptr()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in exclude:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn(model(x), y)
    del loss
    return sum(seen.values())


def train_step(model, opt, loss_fn):
    """gcompile.bench_models.train_step, restated: a torch child must not import gcompile
    (its memory is what is measured)."""
    def step(x, y):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss
    return step


def child(system: str, width: int, batch: int, workload: str = "mlp") -> dict:
    """Measure one system at one size in this (fresh) process; ``workload`` "mlp" or a
    model of ``gcompile.bench_models`` (the character GPT: ``gpt_train``)."""
    if system.startswith("torch"):
        import torch as tm
    else:
        import gcompile as tm
    tm.set_num_threads(int(os.environ.get("GCOMPILE_BENCH_THREADS", "2")))
    if workload == "mlp":
        model, opt, x, y, loss_fn = build(tm, width, batch)
    else:
        from gcompile.bench_models import build as build_model
        model, opt, (x, y), loss_fn = build_model(tm, workload)
        model.train()
    base, base_anon = rss_mb(), anon_mb()
    have_hwm = reset_hwm()

    step = train_step(model, opt, loss_fn)

    fn = tm.compile(step) if system == "gc_compiled" else step
    for _ in range(3):
        float(fn(x, y))
    out: dict = {"system": system, "width": width, "batch": batch, "workload": workload,
                 "after3": rss_mb() - base, "peak3": hwm_mb() - base if have_hwm else None}
    reset_hwm()
    for _ in range(10):
        float(fn(x, y))
    out["after13"] = rss_mb() - base
    out["anon13"] = anon_mb() - base_anon
    out["peak13"] = hwm_mb() - base if have_hwm else None
    out["param_mb"] = sum(p.numel() * p.element_size() for p in model.parameters()) / MB
    # kernels compiled in this process (a cold kernel cache): Numba and LLVM's compiler
    # stay loaded; main() measures such a case again, warm
    out["cold"] = "numba" in sys.modules
    if system == "gc_compiled":
        from runtime.allocator import default_allocator, default_arena_pool
        plans = [ex.plan for e in fn.entries for ex in e.executables()]
        out["plans"] = len(plans)
        out["arena_mb"] = sum(p.arena_bytes for p in plans) / MB
        out["arena_released"] = all(p.releases_arena for p in plans)
        out["pool"] = default_arena_pool.stats()
        out["allocator_cached_mb"] = default_allocator.stats()["cached_bytes"] / MB
        steps = [e for e in fn.entries if e.kind == "step"]
        out["saved_bytes"] = steps[-1].saved_bytes if steps else None
        out["saved_mb"] = steps[-1].saved_bytes / MB if steps else None
        cut = steps[-1].executable.compiled.graph.meta.get("step_cut") if steps else None
        if cut is not None:  # the step's min-cut: its model of the bytes, and what it did
            out["step_cut"] = {"saved_bytes": cut.saved_bytes, "recomputed": len(cut.recomputed),
                               "no_recompute_bytes": cut.saved_bytes_no_recompute}
        # the min-cut: a compiled forward whose backward plan runs from the tape
        lf = tm.compile(lambda x, y: loss_fn(model(x), y))
        for _ in range(2):
            lf(x, y).backward()
        opt.zero_grad()
        te = lf.entries[-1]
        vals = {n.out.name: n.out for n in te.joint.graph.nodes}  # not inputs
        out["mincut_mb"] = sum(vals[n].nbytes for n in te.part.saved if n in vals) / MB
        out["mincut_all_mb"] = te.saved_bytes / MB
        out["no_recompute_mb"] = te.saved_bytes_no_recompute / MB
    elif system == "gc_eager":
        exclude = {id(_root(p._data)) for p in model.parameters()}
        exclude |= {id(_root(x._data)), id(_root(y._data))}
        loss = loss_fn(model(x), y)
        out["saved_bytes"] = gc_saved_bytes(loss, exclude)
        out["saved_mb"] = out["saved_bytes"] / MB
        del loss
    else:
        out["saved_bytes"] = torch_saved_bytes(tm, model, loss_fn, x, y)
        out["saved_mb"] = out["saved_bytes"] / MB
    return out


def fixed_child() -> dict:
    """Resident MB added by each stage of a fresh process (tiny compiled MLP step)."""
    stages = []
    last = [rss_mb(), anon_mb()]

    def mark(what: str) -> None:
        now = [rss_mb(), anon_mb()]
        stages.append((what, now[0] - last[0], now[1] - last[1]))
        last[:] = now

    stages.append(("interpreter", last[0], last[1]))
    import numpy  # noqa: F401
    mark("import numpy")
    import llvmlite.binding  # noqa: F401
    mark("import llvmlite.binding (LLVM shared library)")
    import gcompile as tm
    mark("rest of import gcompile")
    tm.set_num_threads(int(os.environ.get("GCOMPILE_BENCH_THREADS", "2")))
    model, opt, x, y, loss_fn = build(tm, 64, 8)

    step = train_step(model, opt, loss_fn)

    mark("model, optimizer, batch")
    step(x, y)
    mark("first eager step (eager kernels, pools)")
    step(x, y)
    mark("second eager step")
    fn = tm.compile(step)
    fn(x, y)
    mark("compile(step): first call (traced, run eagerly)")
    fn(x, y)
    mark("compile(step): second call (traced, planned)")
    for _ in range(10):
        fn(x, y)
    mark("compile(step): 10 more calls")
    from kernels import cpu
    from kernels.cpu import native
    info = {"threads": int(_status("Threads")), "kernels": len(cpu._KERNELS),
            "native_objects": len(native._LOADED), "numba_imported": "numba" in sys.modules,
            "modules": len(sys.modules), "kernel_cache": cpu.cache_stats()}
    return {"stages": stages, "info": info}


def _run(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--child"] + args,
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _measure(args: list[str]) -> dict:
    """One fresh-process measurement; again when that process had to compile kernels
    (the figures are for a warm kernel cache; the cold one's are kept as ``cold_run``)."""
    got = _run(args)
    if got.get("cold"):
        cold = got
        got = _run(args)
        got["cold_run"] = {k: cold[k] for k in ("after13", "anon13", "peak3") if k in cold}
    return got


def _torch_available() -> bool:
    import importlib.util
    return importlib.util.find_spec("torch") is not None


def _f(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def format_table(rows: list[dict], systems: list[str]) -> str:
    lines = []
    head = f"{'width':>6}{'batch':>6}{'params':>8}  " + "  ".join(
        f"{s:>42}" for s in systems)
    sub = f"{'':>6}{'':>6}{'MB':>8}  " + "  ".join(
        f"{'after3':>7}{'after13':>8}{'anon13':>7}{'peak3':>7}{'saved':>7}{'arena':>6}"
        for _ in systems)
    lines += [head, sub]
    for r in rows:
        cells = []
        for s in systems:
            c = r.get(s, {})
            if "error" in c or not c:
                cells.append(f"{'failed: ' + c.get('error', '?')[:34]:>42}")
                continue
            arena = ("-" if "arena_mb" not in c else
                     f"{c['arena_mb']:.0f}{'r' if c['arena_released'] else 'k'}")
            cells.append(f"{c['after3']:>7.1f}{c['after13']:>8.1f}{c['anon13']:>7.1f}"
                         f"{_f(c['peak3']):>7}{_f(c.get('saved_mb'), '.2f'):>7}{arena:>6}")
        pm = next((r[s]["param_mb"] for s in systems if "param_mb" in r.get(s, {})), 0.0)
        lines.append(f"{r['width']:>6}{r['batch']:>6}{pm:>8.1f}  " + "  ".join(cells))
    lines.append("(MB beyond the parameters; arena: r = pages released after each call, "
                 "k = kept)")
    comp = [(r["width"], r["batch"], r["gc_compiled"]) for r in rows
            if "after13" in r.get("gc_compiled", {})]
    if comp:
        lines.append("compiled step, min-cut of compile(loss_fn) for comparison "
                     "(activations; all saved incl. inputs; saving everything):")
        for w, b, c in comp:
            lines.append(f"  {w}x{b}: step plan saves {c['saved_mb']:.2f} MB; min-cut "
                         f"{c['mincut_mb']:.2f} MB ({c['mincut_all_mb']:.2f}; "
                         f"{c['no_recompute_mb']:.2f}); {c['plans']} plan(s), pool "
                         f"{c['pool']}")
    lines.append("saved for the backward per step, bytes (compiled: the step plan; in "
                 "brackets its min-cut's count, values recomputed, and the bytes without "
                 "recomputation):")
    for r in rows:
        cells = []
        for s in systems:
            c = r.get(s, {})
            if c.get("saved_bytes") is None:
                cells.append(f"{s} -")
                continue
            cut = c.get("step_cut")
            extra = (f" ({cut['saved_bytes']}, {cut['recomputed']} recomputed, "
                     f"{cut['no_recompute_bytes']})" if cut else "")
            cells.append(f"{s} {c['saved_bytes']}{extra}")
        lines.append(f"  {r['width']}x{r['batch']}: " + "; ".join(cells))
    return "\n".join(lines)


def format_fixed(fx: dict) -> str:
    if "error" in fx:
        return f"fixed cost: failed: {fx['error']}"
    lines = ["fixed cost, a fresh process (MB added by each stage: resident, of which "
             "anonymous; the rest is touched pages of shared libraries):",
             f"  {'':<52}{'RSS':>8}{'anon':>8}"]
    for what, mb, anon in fx["stages"]:
        lines.append(f"  {what:<52}{mb:>8.1f}{anon:>8.1f}")
    lines.append("  " + ", ".join(f"{k}: {v}" for k, v in fx["info"].items()
                                  if k != "kernel_cache"))
    cold = fx.get("cold", {}).get("stages")
    if cold:
        comp = [st for st in cold if st[0].startswith("compile(step)")]
        lines.append(f"  with a cold kernel cache (kernels compiled here, Numba imported) the "
                     f"compile(step) stages add {sum(st[1] for st in comp):.1f} MB "
                     f"({sum(st[2] for st in comp):.1f} anonymous)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    p.add_argument("--widths", default="256,512,1024,2048,4096")
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--no-tiny", action="store_true", help="leave out the 64x8 case")
    p.add_argument("--no-gpt", action="store_true",
                   help="leave out the character GPT of gcompile.bench_models (gpt_train)")
    p.add_argument("--json", metavar="FILE")
    a = p.parse_args(argv)
    if a.child:
        if a.child[0] == "fixed":
            print(json.dumps(fixed_child()))
        else:
            print(json.dumps(child(a.child[0], int(a.child[1]), int(a.child[2]),
                                   *a.child[3:])))
        return 0
    systems = [s for s in a.systems.split(",") if s]
    if "torch_eager" in systems and not _torch_available():
        systems.remove("torch_eager")
    sizes = ([] if a.no_tiny else [(64, 8)]) + [(int(w), a.batch) for w in
                                                a.widths.split(",") if w]
    rows = []
    for w, b in sizes:
        row: dict = {"width": w, "batch": b}
        for s in systems:
            print(f"{s} {w}x{b} ...", file=sys.stderr, flush=True)
            row[s] = _measure([s, str(w), str(b)])
        rows.append(row)
    if not a.no_gpt:
        row = {"width": "gpt", "batch": 16}
        for s in systems:
            print(f"{s} gpt_train ...", file=sys.stderr, flush=True)
            row[s] = _measure([s, "0", "16", "gpt_train"])
        rows.append(row)
    fx = _run(["fixed"])
    if fx.get("info", {}).get("numba_imported"):
        cold, fx = fx, _run(["fixed"])
        fx["cold"] = cold
    print(format_table(rows, systems))
    print(format_fixed(fx))
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"rows": rows, "fixed": fx}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
