"""Progress on stderr: drawn in a terminal (checked in a pseudo-terminal), silent when
stderr is not a terminal, when GCOMPILE_PROGRESS=0, and on the fast path."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("rich")
pty = pytest.importorskip("pty")

SCRIPT = textwrap.dedent("""
    import time
    from gcompile.progress import task
    with task("crunching", total=3) as t:
        for i in range(3):
            time.sleep(0.05)
            t.update(1, description=f"crunching item {i + 1}")
    print("done", flush=True)
""")


def _run_in_pty(code: str, env: dict, timeout: float = 120.0) -> str:
    """Run ``python -c code`` with stdin/stdout/stderr on a pseudo-terminal; its output."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        os.execve(sys.executable, [sys.executable, "-c", code], env)
    chunks = []
    import select
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.5)
        if r:
            try:
                data = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        else:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
    else:
        os.kill(pid, 9)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
    os.close(fd)
    return b"".join(chunks).decode(errors="replace")


def _env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCOMPILE_PROGRESS")}
    env.update(kw)
    return env


def test_bar_is_drawn_in_a_terminal():
    out = _run_in_pty(SCRIPT, _env(GCOMPILE_PROGRESS_DELAY="0", TERM="xterm"))
    assert "done" in out
    assert "crunching item 3" in out and "3/3" in out


def test_quiet_when_disabled_in_a_terminal():
    out = _run_in_pty(SCRIPT, _env(GCOMPILE_PROGRESS="0", GCOMPILE_PROGRESS_DELAY="0"))
    assert "done" in out and "crunching" not in out


def test_quiet_on_the_fast_path_in_a_terminal():
    # the work ends long before the (default 2 s) delay: nothing is drawn
    out = _run_in_pty(SCRIPT, _env(TERM="xterm"))
    assert "done" in out and "crunching" not in out


def test_quiet_when_stderr_is_not_a_terminal():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          env=_env(GCOMPILE_PROGRESS_DELAY="0"), timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "done"
    assert proc.stderr == ""


def test_cold_compile_shows_kernel_count(tmp_path):
    """A cold plan with several new kernels reports "compiling kernels i/n"."""
    code = textwrap.dedent("""
        import gcompile as torch
        import gcompile.nn.functional as F
        @torch.compile
        def f(x, w, b):
            h = torch.tanh(x) * 2.0 + torch.sigmoid(x)
            return F.softmax(h @ w + b, -1), F.layer_norm(h, (16,))
        args = (torch.randn(8, 16), torch.randn(16, 16), torch.randn(16))
        f(*args)  # traces and builds the plan
        f(*args)  # its first run: the kernels compile
        print("done", flush=True)
    """)
    out = _run_in_pty(code, _env(GCOMPILE_PROGRESS_DELAY="0", TERM="xterm",
                                 GCOMPILE_CACHE_DIR=str(tmp_path / "cache"),
                                 GCOMPILE_COMPILE_WORKERS="2"))
    assert "done" in out
    assert "compiling kernels" in out


def test_track_yields_everything():
    from gcompile.progress import track
    assert list(track(range(5), "counting")) == [0, 1, 2, 3, 4]


def test_bench_reports_workload_and_system():
    code = ("import sys; from gcompile.cli import main; sys.exit(main(['bench', 'gelu', "
            "'--small', '--no-torch', '--no-latency', '--repeat', '2']))")
    out = _run_in_pty(code, _env(GCOMPILE_PROGRESS_DELAY="0", TERM="xterm", COLUMNS="160"))
    assert "bench 1/1 gelu: gcompile eager vs compiled" in out
    assert "speedup" in out  # the table still follows on stdout
