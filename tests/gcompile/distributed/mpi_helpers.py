"""Launch a worker script under ``mpiexec -n 2`` with a hard timeout (not a test module)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

WORKERS = pathlib.Path(__file__).resolve().parent / "workers"
ROOT = pathlib.Path(__file__).resolve().parents[3]


def mpiexec() -> str:
    pytest.importorskip("mpi4py", reason="needs mpi4py: pip install 'gcompile[distributed]'")
    from gcompile.distributed.launch import find_launcher
    try:
        return find_launcher()
    except FileNotFoundError as e:
        pytest.skip(str(e))


def run_workers(script: str, n: int = 2, timeout: float = 240, env: dict | None = None,
                args: tuple = ()) -> subprocess.CompletedProcess:
    """Run ``workers/<script>`` on ``n`` ranks; never waits longer than ``timeout``."""
    launcher = mpiexec()
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), e.get("PYTHONPATH")]))
    e.setdefault("GCOMPILE_COMPILE_WORKERS", "0")
    e.update(env or {})
    cmd = [launcher, "-n", str(n), sys.executable, str(WORKERS / script), *args]
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e,
                              cwd=str(ROOT))
    except subprocess.TimeoutExpired as ex:
        out = (ex.stdout or b"")
        out = out.decode() if isinstance(out, bytes) else out
        pytest.fail(f"{script} on {n} ranks did not finish in {timeout}s:\n{out[-4000:]}")


def passed(proc: subprocess.CompletedProcess) -> dict[str, int]:
    """How many ranks printed ``PASS <name>`` for each check name."""
    import re
    counts: dict[str, int] = {}
    # the ranks' lines may interleave without a newline between them: names are lowercase
    for name in re.findall(r"PASS ([a-z0-9_]+)", proc.stdout):
        counts[name] = counts.get(name, 0) + 1
    return counts


def report(proc: subprocess.CompletedProcess) -> str:
    return f"rc={proc.returncode}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-6000:]}"
