"""examples/distributed_train.py on 2 ranks: rank-0 printing, save on rank 0, resume
everywhere, eager and whole-step compiled."""
from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys

_spec = importlib.util.spec_from_file_location(
    "_dist_mpi_helpers", pathlib.Path(__file__).with_name("mpi_helpers.py"))
H = importlib.util.module_from_spec(_spec)
sys.modules["_dist_mpi_helpers"] = H
_spec.loader.exec_module(H)

EXAMPLE = H.ROOT / "examples" / "distributed_train.py"


def _run(args, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(H.ROOT), GCOMPILE_COMPILE_WORKERS="0")
    cmd = [H.mpiexec(), "-n", "2", sys.executable, str(EXAMPLE), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env,
                          cwd=str(tmp_path))
    assert proc.returncode == 0, H.report(proc)
    return proc.stdout


def test_example_trains_saves_on_rank0_and_resumes(tmp_path):
    ckpt = str(tmp_path / "ckpt.pt")
    out = _run(["--epochs", "2", "--checkpoint", ckpt], tmp_path)
    lines = [ln for ln in out.splitlines() if ln.startswith("epoch")]
    assert [ln.split(":")[0] for ln in lines] == ["epoch 0", "epoch 1"], out  # rank 0 only
    assert all("on 2 rank(s)" in ln for ln in lines)
    assert os.path.exists(ckpt)
    out = _run(["--epochs", "1", "--checkpoint", ckpt, "--compile"], tmp_path)
    assert "resumed from" in out and "epoch 2:" in out, out
    acc = float(out.strip().splitlines()[-1].split()[-1])
    assert acc > 0.9, out
