"""The disk cache: a second process compiles nothing; corrupt entries are rebuilt."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from kernels import cache
from kernels.cpu import cache_stats

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from kernels.cpu import compile_kernel, cache_stats
    from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var
    f = "float32"
    st = (Stmt("t", "tanh", (inp(0),), (), f), Stmt("y", "mul", (var("t"), const(2.0, f)), (), f))
    spec = KernelSpec((f,), ((f, "full"),), (Phase("map", st, stores=((0, var("y")),)),),
                      "elementwise")
    x = np.linspace(-3, 3, 101, dtype=np.float32)
    out = np.empty_like(x)
    compile_kernel(spec)([x], [out])
    ok = bool(np.allclose(out, 2 * np.tanh(x), rtol=1e-5, atol=1e-6))
    print(json.dumps(dict(cache_stats(), ok=ok, numba="numba" in sys.modules)))
""")


def _run(cache_dir: Path) -> dict:
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(cache_dir),
               GCOMPILE_CACHE_KEY_FILE=str(cache_dir.parent / f"{cache_dir.name}.key"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300, cwd=str(ROOT))
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_second_process_hits_disk_cache_and_corrupt_entries_are_rebuilt(tmp_path):
    first = _run(tmp_path)
    assert first["ok"] and first["compiles"] == 1 and first["disk_hits"] == 0
    assert first["dir"] == str(tmp_path) and first["numba"]
    second = _run(tmp_path)
    assert second["ok"] and second["compiles"] == 0 and second["disk_hits"] == 1
    assert not second["numba"]  # a warm process loads machine code without Numba
    # a corrupt generated source is rewritten (and its machine code not trusted)
    (src,) = tmp_path.glob("gk_*.py")
    src.write_text(src.read_text()[:-40] + "garbage(\n")
    third = _run(tmp_path)
    assert third["ok"] and third["compiles"] == 1
    # machine code whose checksum fails is rebuilt, never loaded: a flipped byte ...
    (obj,) = tmp_path.glob("gk_*.kobj")
    data = bytearray(obj.read_bytes())
    data[-100] ^= 0xFF
    obj.write_bytes(bytes(data))
    fourth = _run(tmp_path)
    assert fourth["ok"] and fourth["disk_hits"] == 0 and fourth["compiles"] == 1
    # ... a truncated file, or a header that is not JSON
    for bad in (obj.read_bytes()[:-500], b"not a header\n" + obj.read_bytes()):
        obj.write_bytes(bad)
        again = _run(tmp_path)
        assert again["ok"] and again["disk_hits"] == 0 and again["compiles"] == 1
    assert _run(tmp_path)["disk_hits"] == 1


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path / "k"))
    assert cache.cache_dir() == tmp_path / "k"
    assert cache_stats()["dir"] == str(tmp_path / "k")
    monkeypatch.delenv("GCOMPILE_CACHE_DIR")
    assert cache.cache_dir().parts[-2:] == ("gcompile", "kernels")


def test_load_module_atomic_and_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path))
    src = "X = 41\n"
    mod, path = cache.load_module(src)
    assert mod.X == 41 and path.read_text() == src
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".tmp")]
    name = cache.module_name(src)
    assert path.name == name + ".py"
    np.testing.assert_equal(cache.load_module(src)[0].X, 41)  # memory table


def test_unresolved_symbols_are_named_before_any_load():
    from kernels.cpu import native
    names = ["PyErr_Clear", "numba_gil_ensure", "NRT_MemInfo_call_dtor", "llvm.fma.f32",
             "gcompile_surely_not_a_symbol"]
    assert native.unresolved(names) == ["gcompile_surely_not_a_symbol"]


def test_unwritable_cache_folder_compiles_in_memory(tmp_path, monkeypatch):
    from kernels.cpu import compile_kernel
    from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(blocker / "cache"))
    f = "float64"
    st = (Stmt("y", "mul", (inp(0), const(3.25, f)), (), f),)
    spec = KernelSpec((f,), ((f, "full"),), (Phase("map", st, stores=((0, var("y")),)),),
                      "elementwise")
    x = np.arange(10.0)
    out = np.empty_like(x)
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        compile_kernel(spec)([x], [out])
    np.testing.assert_array_equal(out, x * 3.25)
