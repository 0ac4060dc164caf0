"""The GPU benchmark (``gcompile.bench_cuda``) from a checkout: the same as
``gcompile bench --device cuda``; see that module for what it measures."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from gcompile.bench_cuda import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
