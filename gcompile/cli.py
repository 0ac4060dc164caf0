"""The ``gcompile`` command line."""
from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo
    return run_demo(steps=args.steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gcompile", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("demo", help="train a small model and show what gcompile does")
    p.add_argument("--steps", type=int, default=200)
    p.set_defaults(func=_demo)
    from . import bench
    b = sub.add_parser("bench", help="time eager vs compiled on the standard workloads")
    bench.add_arguments(b)
    b.set_defaults(func=bench.run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
