"""Every example in examples/ runs with --smoke (a few seconds each), so none rots."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"

# example -> a line its --smoke run must print
EXPECT = {
    "mnist_cnn.py": r"epoch 0: loss \d+\.\d+, accuracy",
    "char_gpt.py": r"sample: '",
    "lstm_lm.py": r"step 2: loss \d+\.\d+",
    "export_load.py": r"(loaded in a new process; max \|loaded - eager\| = |skipped: )",
    "bench_plot.py": r"plot written to ",
}


def test_every_example_is_covered():
    mine = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("distributed_")}
    assert mine == set(EXPECT), "add new examples to EXPECT (and give them --smoke)"


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_example_smoke(name, tmp_path):
    argv = [sys.executable, str(EXAMPLES / name), "--smoke"]
    if name == "bench_plot.py":
        pytest.importorskip("matplotlib")
        argv += ["--out", str(tmp_path / "bench.png")]
    env = dict(os.environ, GCOMPILE_PROGRESS="0", MPLBACKEND="Agg")
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert re.search(EXPECT[name], proc.stdout), proc.stdout[-2000:]
    if name == "bench_plot.py":
        assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"
    if name == "export_load.py" and "skipped" in proc.stdout:
        pytest.skip("gcompile.export is not available yet")
