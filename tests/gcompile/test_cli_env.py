"""``gcompile --version``, ``env``, ``cache info|clear``, ``run``, ``bench --output --plot``
and every subcommand's ``--help`` examples."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import gcompile
from gcompile.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"gcompile {gcompile.__version__}"


def test_version_from_the_installed_command():
    out = subprocess.run([sys.executable, "-m", "gcompile", "--version"], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith("gcompile ")


@pytest.mark.parametrize("cmd", ["demo", "bench", "env", "cache"])
def test_every_subcommand_help_has_examples(cmd, capsys):
    with pytest.raises(SystemExit):
        main([cmd, "--help"])
    out = capsys.readouterr().out
    assert "examples:" in out and f"gcompile {cmd}" in out


def test_top_level_help_lists_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for cmd in ("demo", "bench", "env", "cache", "run"):
        assert cmd in out
    assert "examples:" in out


def _parse_env(text: str) -> dict:
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        assert sep, f"not a 'key: value' line: {line!r}"
        assert key not in fields, f"key {key!r} twice"
        fields[key] = value
    return fields


def test_env_report_parses(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path))
    (tmp_path / "gk_0123.kobj").write_bytes(b"x" * 1000)
    (tmp_path / "gk_0123.py").write_text("pass\n")
    assert main(["env"]) == 0
    fields = _parse_env(capsys.readouterr().out)
    import llvmlite
    import numpy as np
    assert fields["gcompile"] == gcompile.__version__
    assert fields["numpy"] == np.__version__
    assert fields["llvmlite"] == llvmlite.__version__
    assert fields["python"] == sys.version.split()[0]
    assert fields["kernel cache"] == str(tmp_path)
    assert fields["env GCOMPILE_CACHE_DIR"] == str(tmp_path)
    assert fields["kernel cache size"].startswith("1 kernels, ")
    assert fields["cuda available"] in ("True", "False")
    assert fields["mpi available"].split()[0] in ("True", "False")
    assert int(fields["kernel threads"]) >= 1
    from kernels.cpu import native_pool
    assert fields["thread pool"].startswith("native" if native_pool.available() else "python")
    assert fields["llvm cpu"] and fields["blas"]
    assert fields["host heap"]
    pytest.importorskip("threadpoolctl")
    assert "threadpoolctl is not installed" not in fields["blas"]


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["gcompile"] == gcompile.__version__
    assert isinstance(rep["llvm_cpu_features"], list) and rep["llvm_cpu_features"]
    assert set(rep["kernel_cache"]) >= {"dir", "objects", "bytes", "key_file"}


def test_cache_info_and_clear(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path))
    (tmp_path / "gk_a.kobj").write_bytes(b"1" * 300)
    (tmp_path / "gk_a.py").write_text("x = 1\n")
    (tmp_path / "gk_a.seen").touch()
    (tmp_path / "notes.txt").write_text("not the cache's file")  # never touched
    cuda = tmp_path / "cuda"  # kernels.cuda.disk_cache's sources and signed files
    cuda.mkdir()
    (cuda / "gk_cuda_1.py").write_text("y = 2\n")
    (cuda / "gk_cuda_1.entry-16.py311.nbi").write_bytes(b"2" * 10)
    (cuda / "gk_cuda_1.entry-16.py311.1.nbc").write_bytes(b"3" * 20)
    (cuda / "readme.txt").write_text("not the cache's file either")
    assert main(["cache", "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["objects"] == 1 and info["sources"] == 1 and info["cuda_files"] == 3
    assert info["bytes"] == 306 + 6 + 10 + 20
    assert main(["cache", "info"]) == 0
    assert "CUDA: 3 files" in capsys.readouterr().out
    assert main(["cache", "clear"]) == 0
    assert "removed 6 files" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cuda", "notes.txt"]
    assert [p.name for p in cuda.iterdir()] == ["readme.txt"]
    assert main(["cache", "info"]) == 0
    assert "kernels: 0 compiled" in capsys.readouterr().out


def test_cache_clear_then_compile_rebuilds(tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path))
    f = gcompile.compile(lambda x: gcompile.relu(x * 3.0 + 1.0))
    x = gcompile.randn(64)
    want = gcompile.relu(x * 3.0 + 1.0)
    assert gcompile.allclose(f(x), want)
    assert main(["cache", "clear"]) == 0
    g = gcompile.compile(lambda x: gcompile.relu(x * 3.0 + 1.0))
    assert gcompile.allclose(g(x), want)


def test_run_forwards_to_the_launcher(capsys):
    pytest.importorskip("gcompile.distributed.launch")
    import shutil
    if not (shutil.which("mpiexec") or shutil.which("mpirun")):
        pytest.skip("no MPI launcher")
    assert main(["run", "-n", "2", "--dry-run", "train.py", "--epochs", "1"]) == 0
    out = capsys.readouterr().out
    assert "-n 2" in out and out.rstrip().endswith("train.py --epochs 1")


def test_run_without_the_launcher_says_why(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "gcompile.distributed.launch", None)
    assert main(["run", "-n", "2", "train.py"]) == 2
    err = capsys.readouterr().err
    assert "launcher is not available" in err and "gcompile[distributed]" in err


def test_bench_writes_json_and_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, png = tmp_path / "b.json", tmp_path / "b.png"
    assert main(["bench", "gelu", "--small", "--no-torch", "--no-latency", "--repeat", "2",
                 "--output", str(out), "--plot", str(png)]) == 0
    rep = json.loads(out.read_text())
    assert [r["workload"] for r in rep["results"]] == ["gelu"]
    assert rep["results"][0]["compiled_ms"] > 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "results written to" in capsys.readouterr().out


def test_bench_rejects_unknown_workloads(capsys):
    assert main(["bench", "nope", "--no-latency"]) == 2
    assert "unknown workload" in capsys.readouterr().err


def test_train_workloads_build_and_step():
    """The bench's train workloads (cnn, LSTM LM, GPT with dropout) run a compiled step."""
    from gcompile.bench_train import TRAIN_WORKLOADS, _setup
    assert {"cnn_train", "lstm_lm_train", "gpt_train"} <= set(TRAIN_WORKLOADS)
    for name in ("cnn_train", "lstm_lm_train", "gpt_train"):
        model, (x, y), loss_fn = _setup(name, small=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        assert loss.dim() == 0 and bool(gcompile.isfinite(loss))
        assert all(p.grad is not None for p in model.parameters())
