"""Nothing found in the kernel cache folder runs on its own word.

Machine code is loaded only when it carries a tag made with this user's key (kept
outside the cache folder) over the code, its header and the source the loader
expects; header fields that are not what the loader expects are refused and the
kernel rebuilt, and the process never aborts on them. A planted byte-code file is
never run either. Processes that might run planted code or abort are subprocesses.
"""
from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

from kernels import cache

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from kernels.cpu import compile_kernel, cache_stats
    from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var

    def spec(c):
        f = "float32"
        st = (Stmt("t", "tanh", (inp(0),), (), f), Stmt("y", "mul", (var("t"), const(c, f)),
                                                        (), f))
        return KernelSpec((f,), ((f, "full"),), (Phase("map", st, stores=((0, var("y")),)),),
                          "elementwise")

    x = np.linspace(-3, 3, 101, dtype=np.float32)
    ok = True
    sources = []
    for c in [float(a) for a in sys.argv[1:]]:
        k = compile_kernel(spec(c))
        out = np.empty_like(x)
        k([x], [out])
        ok &= bool(np.allclose(out, c * np.tanh(x), rtol=1e-5, atol=1e-6))
        sources.append(k.source)
    print(json.dumps(dict(cache_stats(), ok=ok, numba="numba" in sys.modules,
                          sources=sources)))
""")


def _env(cache_dir: Path, key_file: Path) -> dict:
    return dict(os.environ, GCOMPILE_CACHE_DIR=str(cache_dir),
                GCOMPILE_CACHE_KEY_FILE=str(key_file),
                PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _run(cache_dir: Path, key_file: Path, consts=(2.0,)) -> dict:
    r = subprocess.run([sys.executable, "-c", SCRIPT, *map(str, consts)],
                       env=_env(cache_dir, key_file), capture_output=True, text=True,
                       timeout=300, cwd=str(ROOT))
    assert r.returncode == 0, (f"the kernel process died (exit status {r.returncode}): "
                               f"{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.fixture()
def warm(tmp_path, monkeypatch):
    """A cache folder holding one intact entry (the kernel ``2 * tanh(x)``), its key
    (outside the folder), and this process pointed at both."""
    folder, key = tmp_path / "cache", tmp_path / "private" / "cache.key"
    first = _run(folder, key)
    assert first["ok"] and first["compiles"] == 1
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(folder))
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(key))
    (source,) = first["sources"]
    kobj = cache.object_path(source)
    head = json.loads(kobj.read_bytes().split(b"\n", 1)[0])
    return folder, key, source, kobj, head


def _object(symbol: str, nargs: int, body: str, decls: str = "") -> bytes:
    """Object code defining ``symbol`` (``nargs`` i64 arguments) as ``body``."""
    import llvmlite.binding as ll
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    args = ", ".join(f"i64 %a{i}" for i in range(nargs))
    ir = f'{decls}\ndefine void @"{symbol}"({args}) {{\n{body}\n}}\n'
    mod = ll.parse_assembly(ir)
    mod.triple = ll.get_process_triple()
    mod.verify()
    tm = ll.Target.from_triple(mod.triple).create_target_machine()
    return tm.emit_object(mod)


def _exit77(symbol: str, nargs: int) -> bytes:
    """Planted machine code: ends the process with status 77 when it runs."""
    return _object(symbol, nargs, "  call void @_exit(i32 77)\n  unreachable",
                   "declare void @_exit(i32)")


# ---- planted and swapped entries ------------------------------------------------------------
def test_key_is_private_and_outside_the_cache_folder(warm):
    folder, key, _, _, _ = warm
    assert key.is_file() and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    assert folder not in key.parents and not list(folder.glob("*key*"))
    again = _run(folder, key)
    assert again["ok"] and again["disk_hits"] == 1 and again["compiles"] == 0
    assert not again["numba"]  # the check costs a warm process no Numba import


@pytest.mark.parametrize("header", ["self_checksum", "copied_tag"])
def test_planted_object_with_a_valid_looking_checksum_is_refused(warm, header):
    import hashlib
    folder, key, _, kobj, head = warm
    obj = _exit77(head["symbol"], head["nargs"])
    fake = {"symbol": head["symbol"], "nargs": head["nargs"], "externals": ["_exit"],
            "nbytes": len(obj), "sha256": hashlib.sha256(obj).hexdigest()}
    if header == "copied_tag":  # the legitimate entry's tag, format and module, reused
        fake.update({k: head[k] for k in ("hmac", "format", "module") if k in head})
    kobj.write_bytes(json.dumps(fake, sort_keys=True).encode() + b"\n" + obj)
    r = _run(folder, key)  # the planted code would end this process with status 77
    assert r["ok"] and r["disk_hits"] == 0 and r["compiles"] == 1
    assert b"_exit" not in kobj.read_bytes()  # the entry was rebuilt ...
    assert _run(folder, key)["disk_hits"] == 1  # ... and the rebuilt one is trusted


def test_an_entry_written_for_another_kernel_is_refused(tmp_path):
    folder, key = tmp_path / "cache", tmp_path / "cache.key"
    first = _run(folder, key, consts=(2.0, 3.0))
    assert first["ok"] and first["compiles"] == 2
    a, b = (folder / f"{cache.module_name(s)}.kobj" for s in first["sources"])
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)  # each kernel's (intact, signed) machine code under the other's name
    b.write_bytes(da)
    r = _run(folder, key, consts=(2.0, 3.0))
    assert r["ok"] and r["disk_hits"] == 0 and r["compiles"] == 2


def test_an_entry_signed_with_another_key_is_refused(warm, tmp_path):
    folder, _, _, _, _ = warm
    other = _run(folder, tmp_path / "someone_else.key")
    assert other["ok"] and other["disk_hits"] == 0 and other["compiles"] == 1


# ---- signed entries whose header is not what the loader expects ----------------------------
def _lie(kind: str, head: dict) -> tuple[bytes | None, dict]:
    sym, n = head["symbol"], head["nargs"]
    if kind == "helper_symbol":  # a symbol of the loader's own engine: it traps when called
        return None, {"symbol": "NRT_MemInfo_call_dtor"}
    if kind == "absent_symbol":
        return None, {"symbol": sym + "_gone"}
    if kind == "arity":
        return None, {"nargs": n + 1}
    if kind == "hidden_external":  # needs a symbol no process has, and does not say so
        obj = _object(sym, n, "  call void @gcompile_surely_not_a_symbol()\n  ret void",
                      "declare void @gcompile_surely_not_a_symbol()")
        return obj, {"externals": []}
    if kind == "not_an_object":
        return b"\x7fELF\x02\x01\x01" + b"\0" * 57 + b"\xff" * 64, {}
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["helper_symbol", "absent_symbol", "arity",
                                  "hidden_external", "not_an_object"])
def test_a_signed_entry_with_a_lying_header_is_rebuilt_not_fatal(warm, kind):
    folder, key, source, kobj, head = warm
    obj, changes = _lie(kind, head)
    body = kobj.read_bytes().split(b"\n", 1)[1] if obj is None else obj
    meta = {"symbol": head["symbol"], "nargs": head["nargs"], "externals": head["externals"]}
    meta.update(changes)
    cache.store_object(source, body, meta)  # signed with the right key: only the fields lie
    assert cache.load_object(source) is not None
    r = _run(folder, key)
    assert r["ok"] and r["disk_hits"] == 0 and r["compiles"] == 1
    assert r.get("rejected") == 1
    assert _run(folder, key)["disk_hits"] == 1


# ---- the key itself -------------------------------------------------------------------------
def _fresh_source(tag: str) -> str:
    return f"GCOMPILE_TRUST_TEST = {tag!r}\n"


def _fake_entry(source: str) -> None:
    path = cache.cache_dir() / f"{cache.module_name(source)}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    cache.store_object(source, b"\x01\x02\x03 object code",
                       {"symbol": "cfunc.x", "nargs": 2, "externals": []})


def test_signed_entry_round_trips_and_every_field_is_covered(tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(tmp_path / "k"))
    src = _fresh_source("fields")
    _fake_entry(src)
    obj, head = cache.load_object(src)
    assert obj == b"\x01\x02\x03 object code" and head["nargs"] == 2
    good = cache.object_path(src).read_bytes()
    line, code = good.split(b"\n", 1)
    for field, value in [("symbol", "cfunc.y"), ("nargs", 3), ("externals", ["abort"]),
                         ("nbytes", len(code)), ("module", "gk_" + "0" * 32),
                         ("format", "gcompile-kobj-1"), ("extra", 1)]:
        h = json.loads(line)
        if h.get(field) == value:
            continue
        h[field] = value
        cache.object_path(src).write_bytes(json.dumps(h).encode() + b"\n" + code)
        assert cache.load_object(src) is None, field
        assert not cache.object_path(src).exists()  # refused entries are dropped
    cache.object_path(src).write_bytes(line + b"\n" + code[:-1] + b"\x04")
    assert cache.load_object(src) is None


def test_a_key_other_users_can_read_is_not_used(tmp_path, monkeypatch):
    if not hasattr(os, "geteuid"):
        pytest.skip("no POSIX file modes here")
    key = tmp_path / "shared.key"
    key.write_text("ab" * 32 + "\n")
    os.chmod(key, 0o644)
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(key))
    src = _fresh_source("shared key")
    with pytest.warns(RuntimeWarning, match="other users can read or write it"):
        _fake_entry(src)
    assert not cache.object_path(src).exists()  # nothing signed with a key others know
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once, not on every kernel
        assert cache.load_object(src) is None


def test_a_key_inside_the_cache_folder_is_not_used(tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(tmp_path / "c" / "sub" / "k"))
    src = _fresh_source("key inside")
    with pytest.warns(RuntimeWarning, match="inside the kernel cache folder"):
        _fake_entry(src)
    assert not cache.object_path(src).exists()
    assert not (tmp_path / "c" / "sub" / "k").exists()


def test_the_key_is_made_once_and_shared(tmp_path, monkeypatch):
    key = tmp_path / "deep" / "er" / "k"
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(key))
    src = _fresh_source("made once")
    _fake_entry(src)
    text = key.read_text()
    assert len(text.strip()) == 64 and stat.S_IMODE(key.stat().st_mode) == 0o600
    cache._KEYS.clear()  # as a new process would: the same key is read back, not remade
    assert cache.load_object(src) is not None and key.read_text() == text
    assert [p.name for p in key.parent.iterdir()] == ["k"]  # no temporary left


# ---- byte code ------------------------------------------------------------------------------
def test_planted_byte_code_beside_a_cached_source_is_never_run(tmp_path, monkeypatch):
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(tmp_path))
    src = "X = 41\n" + "# planted-pyc test\n"
    path = tmp_path / f"{cache.module_name(src)}.py"
    path.write_text(src)
    st = path.stat()
    from importlib._bootstrap_external import _code_to_timestamp_pyc
    evil = compile("X = 666\n", str(path), "exec")
    pyc = Path(importlib.util.cache_from_source(str(path)))
    pyc.parent.mkdir()
    pyc.write_bytes(_code_to_timestamp_pyc(evil, st.st_mtime, st.st_size))
    mod, got = cache.load_module(src)
    assert got == path and mod.X == 41
    assert mod.__file__ == str(path)  # tracebacks still name the real source file
