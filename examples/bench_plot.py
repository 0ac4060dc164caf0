"""Notebook-style benchmark: time eager vs compiled, then plot the speedups.

    python examples/bench_plot.py --out bench.png            # a few workloads
    python examples/bench_plot.py --smoke --out /tmp/b.png   # seconds: what CI runs

Each "cell" below is a step you would run in a notebook. The same numbers (and
more) come from the command line: ``gcompile bench --output b.json --plot b.png``.
"""
from __future__ import annotations

import argparse
import json

# %% [1] choose workloads
ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--out", default="bench.png", help="where to write the PNG")
ap.add_argument("--smoke", action="store_true", help="small sizes, two workloads, for CI")
args = ap.parse_args()
infer = ["gelu"] if args.smoke else ["gelu", "layernorm", "softmax", "mlp_infer"]
train = ["mlp_train"] if args.smoke else ["mlp_train", "cnn_train", "gpt_train"]

# %% [2] run them (in-process timings; --smoke skips the fresh-process latency runs)
from gcompile.bench import plot_report, run_bench  # noqa: E402
from gcompile.bench_train import run_train_bench  # noqa: E402

report = run_bench(infer, repeat=2 if args.smoke else 5, small=args.smoke, with_torch=False,
                   latency=not args.smoke)
report["training"] = run_train_bench(train, repeat=2 if args.smoke else 5, small=args.smoke,
                                     latency=not args.smoke)

# %% [3] look at the numbers
for r in report["results"]:
    print(f"{r['workload']:<12} eager {r['eager_ms']:8.2f} ms  compiled {r['compiled_ms']:8.2f} ms"
          f"  {r['speedup']:5.2f}x")
for r in report["training"]:
    print(f"{r['workload']:<12} eager {r['eager_ms']:8.2f} ms  whole step "
          f"{r['whole_step_ms']:8.2f} ms  {r['speedup_step']:5.2f}x")

# %% [4] plot (matplotlib: pip install 'gcompile[plot]')
plot_report(report, args.out)
with open(args.out.rsplit(".", 1)[0] + ".json", "w", encoding="utf-8") as f:
    json.dump(report, f, indent=2)
print(f"plot written to {args.out}")
