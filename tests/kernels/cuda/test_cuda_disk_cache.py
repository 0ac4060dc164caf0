"""The on-disk CUDA kernel cache (``kernels.cuda.disk_cache``) keeps the CPU cache's rules.

numba-cuda's index and data files are pickles; here each is ``MAGIC + HMAC tag +
payload``, keyed by this user's kernel cache key, and nothing is unpickled before its
tag verifies: a flipped byte, swapped files, another key's files and a planted pickle
(one that would create a marker file when unpickled) are misses. The file layer and
the cache built on it run here without a GPU (plain payloads, a stand-in codegen);
the simulator path writes the generated sources and caches nothing; the ``gpu`` test
compiles in one process and loads from disk in the next.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("numba.cuda")

from kernels.cuda import disk_cache as dc  # noqa: E402

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture()
def env(tmp_path, monkeypatch):
    """A fresh cache folder and a private key outside it, for this process."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(folder))
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(tmp_path / "private" / "cache.key"))
    dc.cuda_cache_dir().mkdir(parents=True)
    return dc.cuda_cache_dir()


def _file(base: str = "f", stamp: object = "stamp") -> dc.SignedIndexDataCacheFile:
    return dc.SignedIndexDataCacheFile(cache_path=str(dc.cuda_cache_dir()),
                                       filename_base=base, source_stamp=stamp)


K1, K2 = ("sig1", ("sm", 90)), ("sig2", ("sm", 90))
D1, D2 = {"ptx": "one", "cubin": b"\x01" * 40}, {"ptx": "two", "cubin": b"\x02" * 40}


def _saved(base: str = "f") -> dc.SignedIndexDataCacheFile:
    f = _file(base)
    f.save(K1, D1)
    f.save(K2, D2)
    return f


def _names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


class Planted:
    """Unpickling this creates ``path``: proof that a planted pickle ran."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


# ---- the signed file layer ------------------------------------------------------------------
def test_round_trip_signed_and_atomic(env):
    _saved()
    assert _names(env) == {"f.nbi", "f.1.nbc", "f.2.nbc"}  # no temporary files left
    for p in env.iterdir():
        assert p.read_bytes().startswith(dc.MAGIC)
    f = _file()
    assert f.load(K1) == D1 and f.load(K2) == D2
    assert f.load(("sig3", ("sm", 90))) is None
    assert _file(stamp="another source").load(K1) is None  # a stale index is a miss


@pytest.mark.parametrize("where", ["tag", "payload", "magic", "truncated"])
@pytest.mark.parametrize("which", ["f.nbi", "f.1.nbc"])
def test_a_changed_byte_is_a_miss_and_is_overwritten(env, which, where):
    _saved()
    p = env / which
    b = bytearray(p.read_bytes())
    at = {"magic": 0, "tag": len(dc.MAGIC) + 5, "payload": len(b) - 3}.get(where)
    if at is None:
        b = b[:len(dc.MAGIC) + 10]
    else:
        b[at] ^= 0x01
    p.write_bytes(bytes(b))
    assert _file().load(K1) is None
    _file().save(K1, D1)  # recompiled: stored again, and trusted
    assert _file().load(K1) == D1


def test_swapped_entries_are_misses(env):
    _saved("f")
    g = _file("g")
    g.save(K1, D2)
    d1, d2 = (env / "f.1.nbc").read_bytes(), (env / "f.2.nbc").read_bytes()
    (env / "f.1.nbc").write_bytes(d2)  # each intact, signed data file under the other's name
    (env / "f.2.nbc").write_bytes(d1)
    assert _file().load(K1) is None and _file().load(K2) is None
    _saved("f")
    (env / "f.1.nbc").write_bytes((env / "g.1.nbc").read_bytes())  # another function's
    (env / "f.nbi").write_bytes((env / "g.nbi").read_bytes())
    assert _file().load(K1) is None and _file().load(K2) is None


def test_a_data_file_stored_under_another_key_is_a_miss(env):
    f = _saved()
    f._save_data("f.1.nbc", (K2, D2))  # correctly signed, but for K2's entry
    assert _file().load(K1) is None and _file().load(K2) == D2


def test_files_written_with_another_key_are_misses(env, tmp_path, monkeypatch):
    _saved()
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(tmp_path / "other" / "cache.key"))
    assert _file().load(K1) is None and _file().load(K2) is None
    _file().save(K1, D2)  # the other key's entry overwrites ...
    assert _file().load(K1) == D2
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(tmp_path / "private" / "cache.key"))
    assert _file().load(K1) is None  # ... and is not trusted under the first key


def test_planted_pickles_are_never_unpickled(env, tmp_path):
    import numba
    marker = tmp_path / "planted_ran"
    evil = pickle.dumps(Planted(str(marker)))
    # numba's own (unsigned) index format, with the planted object as its contents
    (env / "f.nbi").write_bytes(pickle.dumps(numba.__version__) + evil)
    assert _file().load(K1) is None
    # a signed index pointing at a planted data file: raw, and behind a forged header
    f = _file()
    f._save_index({K1: "f.1.nbc", K2: "f.2.nbc"})
    (env / "f.1.nbc").write_bytes(evil)
    (env / "f.2.nbc").write_bytes(dc.MAGIC + b"\0" * 32 + evil)
    assert _file().load(K1) is None and _file().load(K2) is None
    (env / "f.nbi").write_bytes(dc.MAGIC + os.urandom(32) + evil)  # forged index
    assert _file().load(K1) is None
    assert not marker.exists()
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(Planted(str(control))))  # the plant is live when unpickled
    assert control.exists()


def test_without_a_usable_key_nothing_is_written_or_read(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    key = tmp_path / "private" / "loose.key"
    monkeypatch.setenv("GCOMPILE_CACHE_DIR", str(folder))
    monkeypatch.setenv("GCOMPILE_CACHE_KEY_FILE", str(key))
    dc.cuda_cache_dir().mkdir(parents=True)
    key.parent.mkdir()
    key.write_text("k" * 64)
    os.chmod(key, 0o644)
    with pytest.warns(RuntimeWarning, match="other users can read or write it"):
        f = _file()
        f.save(K1, D1)
    assert _names(dc.cuda_cache_dir()) == set()
    assert f.load(K1) is None


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(env, monkeypatch):
    _saved()
    before = (env / "f.1.nbc").read_bytes()

    def fail(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        _file().save(K1, D2)
    monkeypatch.undo()
    assert _names(env) == {"f.nbi", "f.1.nbc", "f.2.nbc"}
    assert (env / "f.1.nbc").read_bytes() == before


# ---- the numba cache built on it (a stand-in kernel and codegen, no GPU) --------------------
class _Codegen:
    def __init__(self, cc: tuple) -> None:
        self.cc = cc

    def magic_tuple(self) -> tuple:
        return ("runtime 12.0", self.cc)


class _Context:
    def __init__(self, cc: tuple) -> None:
        self._codegen = _Codegen(cc)

    def refresh(self) -> None:
        pass

    def codegen(self) -> _Codegen:
        return self._codegen


class _Kernel:
    def __init__(self, state: dict, cc: tuple = (9, 0), lcs: bool = False) -> None:
        self.state, self.codegen, self.launch_config_sensitive = state, _Codegen(cc), lcs


class _Impl(dc.SignedCUDACacheImpl):
    def reduce(self, kernel):
        return kernel.state

    def rebuild(self, target_context, payload):
        return _Kernel(payload)


class _Cache(dc.SignedCUDACache):
    _impl_class = _Impl


SOURCE = "def entry(a, b):\n    a[0] = b[0]\n"


def _entry(source: str = SOURCE):
    path = dc.write_source(source)
    ns: dict = {}
    exec(compile(source, str(path), "exec"), ns)
    return ns["entry"]


def test_the_cache_stores_per_architecture_beside_the_source(env):
    fn = _entry()
    c = _Cache(fn)
    assert c.cache_path == str(env)
    sig = ("array(float32, 1d, C)", "array(float32, 1d, C)")
    c.save_overload(sig, _Kernel({"cubin": b"sm90"}))
    c.save_overload(sig, _Kernel({"cubin": b"lcs"}, cc=(8, 0), lcs=True))  # never stored
    stem = dc.source_path(SOURCE).stem
    assert all(n.startswith(stem) for n in _names(env)), _names(env)
    assert {n for n in _names(env) if n.endswith((".nbi", ".nbc"))} == {
        f"{stem}.entry-1.py{sys.version_info[0]}{sys.version_info[1]}{sys.abiflags}{s}"
        for s in (".nbi", ".1.nbc")}
    again = _Cache(_entry())
    assert again.load_overload(sig, _Context((9, 0))).state == {"cubin": b"sm90"}
    assert again.load_overload(sig, _Context((8, 0))) is None  # another GPU architecture
    for p in env.glob("*.nbc"):
        b = bytearray(p.read_bytes())
        b[-1] ^= 1
        p.write_bytes(bytes(b))
    assert _Cache(_entry()).load_overload(sig, _Context((9, 0))) is None


def test_an_edited_source_file_invalidates_and_is_rewritten(env):
    sig = ("float32",)
    _Cache(_entry()).save_overload(sig, _Kernel({"cubin": b"x"}))
    path = dc.source_path(SOURCE)
    path.write_text(SOURCE + "import os\nos.system('echo planted')\n")
    assert dc.write_source(SOURCE) == path and path.read_text() == SOURCE
    assert _Cache(_entry()).load_overload(sig, _Context((9, 0))).state == {"cubin": b"x"}
    path.write_text(SOURCE + "# edited\n")  # the stamp is the file's content
    ns: dict = {}
    exec(compile(SOURCE, str(path), "exec"), ns)  # the same code, the file not rewritten
    assert _Cache(ns["entry"]).load_overload(sig, _Context((9, 0))) is None


def test_attach_is_skipped_under_the_simulator(env):
    from kernels.cuda.views import simulator
    if not simulator():
        pytest.skip("runs under the CUDA simulator")
    from numba import cuda
    k = cuda.jit(_entry())
    assert dc.attach(k) is False


# ---- the simulator path ---------------------------------------------------------------------
def test_generated_sources_are_written_and_the_simulator_still_runs(env, monkeypatch):
    from numba import cuda

    import kernels.cuda as kc
    from kernels.cuda import compile_kernel
    from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var
    f = "float32"
    c = 0.8125
    st = (Stmt("t", "mul", (inp(0), const(c, f)), (), f),)
    spec = KernelSpec((f,), ((f, "full"),), (Phase("map", st, stores=((0, var("t")),)),),
                      "elementwise")
    k = compile_kernel(spec)
    # another test of this process may have loaded the same source (written to its own
    # cache folder then); forget it here, so this launch loads it and writes it to env
    for src in k.sources.values():
        monkeypatch.delitem(kc._MODULES, src, raising=False)
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    out = cuda.device_array((2, 3), np.float32)
    k([cuda.to_device(x)], [out])
    np.testing.assert_allclose(out.copy_to_host(), x * np.float32(c), rtol=1e-6)
    src = k._source(("ew", 1))
    path = dc.source_path(src)
    assert path.parent == env and path.read_text(encoding="utf-8") == src
    assert not [n for n in _names(env) if n.endswith((".nbi", ".nbc"))]  # nothing compiled


# ---- a real GPU: compiled in one process, loaded from disk in the next ----------------------
SCRIPT = textwrap.dedent("""
    import json
    import numpy as np
    from numba import cuda
    import kernels.cuda as kc
    from kernels.cuda import gemm
    from kernels.spec import KernelSpec, Phase, Stmt, const, inp, var

    f = "float32"
    st = (Stmt("t", "tanh", (inp(0),), (), f), Stmt("y", "mul", (var("t"), const(2.0, f)),
                                                    (), f))
    spec = KernelSpec((f,), ((f, "full"),), (Phase("map", st, stores=((0, var("y")),)),),
                      "elementwise")
    k = kc.compile_kernel(spec)
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    out = cuda.device_array(x.shape, np.float32)
    k([cuda.to_device(x)], [out])
    fn = kc._load(k._source(("ew", 1)))
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    c = cuda.device_array((3, 3), np.float32)
    gemm.tiled_gemm(cuda.to_device(a), cuda.to_device(np.ascontiguousarray(a.T)), c)
    g = gemm._kernel("float32", gemm.TILE)
    print(json.dumps({"hits": sum(fn.stats.cache_hits.values()),
                      "misses": sum(fn.stats.cache_misses.values()),
                      "gemm_hits": sum(g.stats.cache_hits.values()),
                      "path": fn.stats.cache_path, "out": out.copy_to_host().tolist(),
                      "gemm": c.copy_to_host().tolist()}))
""")


@pytest.mark.gpu
def test_kernels_compiled_once_load_from_disk_in_the_next_process(tmp_path):
    env = dict(os.environ, GCOMPILE_CACHE_DIR=str(tmp_path / "cache"),
               GCOMPILE_CACHE_KEY_FILE=str(tmp_path / "private" / "cache.key"),
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_ENABLE_CUDASIM", None)

    def run() -> dict:
        r = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                           text=True, timeout=600, cwd=str(ROOT))
        assert r.returncode == 0, r.stderr[-3000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    cold = run()
    assert cold["hits"] == 0 and cold["misses"] == 1 and cold["gemm_hits"] == 0
    assert cold["path"] == str(tmp_path / "cache" / "cuda")
    files = list((tmp_path / "cache" / "cuda").iterdir())
    assert any(p.suffix == ".nbc" for p in files)
    assert all(p.read_bytes().startswith(dc.MAGIC) for p in files
               if p.suffix in (".nbi", ".nbc"))
    warm = run()
    assert warm["hits"] == 1 and warm["misses"] == 0 and warm["gemm_hits"] == 1
    assert warm["out"] == cold["out"] and warm["gemm"] == cold["gemm"]
    x = np.linspace(-3, 3, 1000, dtype=np.float32)
    np.testing.assert_allclose(warm["out"], 2 * np.tanh(x), rtol=1e-5, atol=1e-6)
