"""gcompile.save writes what open(path, "wb") would (permissions, symlinks, read-only
files) while staying atomic; gcompile.load refuses a checkpoint whose metadata records
are missing or damaged instead of loading it unchecked."""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import stat
import tempfile

import numpy as np
import pytest

import gcompile as torch
from gcompile.serialization import SerializationError

OBJ = {"w": torch.arange(6.0).reshape(2, 3), "meta": {"epoch": 3, "name": "run"}}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return (isinstance(b, torch.Tensor) and a.dtype is b.dtype and a.shape == b.shape
                and np.array_equal(a.numpy(), b.numpy()))
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


def _leftovers(folder) -> list[str]:
    return [n for n in os.listdir(folder) if n.endswith(".tmp")]


# ---- what a save to a path writes ---------------------------------------------------------
@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604])
def test_overwriting_keeps_the_files_permission_bits(tmp_path, mode):
    path = tmp_path / "secret.pt"
    torch.save({"v": 1}, path)
    os.chmod(path, mode)
    torch.save({"v": 2}, path)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode
    assert torch.load(path) == {"v": 2}
    assert not _leftovers(tmp_path)


def test_a_new_file_gets_the_umask_mode(tmp_path):
    old = os.umask(0o027)
    try:
        torch.save({"v": 1}, tmp_path / "new.pt")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "new.pt").st_mode) == 0o640


def test_saving_through_a_symlink_writes_its_target(tmp_path):
    (tmp_path / "store").mkdir()
    real = tmp_path / "store" / "model.pt"
    torch.save({"v": 1}, real)
    os.chmod(real, 0o600)
    link = tmp_path / "latest.pt"
    os.symlink(os.path.join("store", "model.pt"), link)  # a relative link
    torch.save({"v": 2}, link)
    assert link.is_symlink() and os.readlink(link) == os.path.join("store", "model.pt")
    assert torch.load(real) == {"v": 2} and torch.load(link) == {"v": 2}
    assert stat.S_IMODE(os.stat(real).st_mode) == 0o600
    assert not _leftovers(tmp_path) and not _leftovers(tmp_path / "store")
    # a dangling link: the file it names is created, as open(path, "wb") would
    dangling = tmp_path / "next.pt"
    os.symlink(tmp_path / "store" / "fresh.pt", dangling)
    torch.save({"v": 3}, dangling)
    assert dangling.is_symlink() and torch.load(tmp_path / "store" / "fresh.pt") == {"v": 3}


@contextlib.contextmanager
def _as_plain_user():
    """A folder this process can write, run as a user without root's override of file
    permissions (under root: effective uid 'nobody' for the duration)."""
    if os.geteuid() != 0:
        d = tempfile.mkdtemp()
        try:
            yield d, lambda: None
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return
    d = tempfile.mkdtemp()
    os.chmod(d, 0o777)  # writable by the unprivileged user too, so only the file refuses
    try:
        yield d, lambda: os.seteuid(65534)
    finally:
        os.seteuid(0)
        shutil.rmtree(d, ignore_errors=True)


def test_saving_over_a_read_only_file_raises_permission_error_and_keeps_it():
    with _as_plain_user() as (folder, drop_privileges):
        path = os.path.join(folder, "frozen.pt")
        torch.save({"v": 1}, path)
        os.chmod(path, 0o444)
        before = open(path, "rb").read()
        drop_privileges()
        with pytest.raises(PermissionError):
            open(path, "wb")  # what a plain open does here ...
        with pytest.raises(PermissionError):
            torch.save({"v": 2}, path)  # ... and so does save
        assert open(path, "rb").read() == before
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o444
        assert not _leftovers(folder)
        assert torch.load(path) == {"v": 1}


def test_saving_onto_a_folder_raises_is_a_directory(tmp_path):
    with pytest.raises(IsADirectoryError):
        torch.save({"v": 1}, tmp_path)
    assert os.listdir(tmp_path) == []


def test_saving_to_a_pipe_writes_into_it_in_place(tmp_path):
    # like torch.save(x, "/dev/null") or to a named pipe: nothing to rename, nothing replaced
    if not hasattr(os, "mkfifo"):
        pytest.skip("no named pipes here")
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    r = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader, so a writer's open returns
    try:
        torch.save(OBJ, fifo)  # a small checkpoint: it fits in the pipe's buffer
        chunks = []
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(r, 1 << 16):
                chunks.append(chunk)
    finally:
        os.close(r)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert chunks and _same(OBJ, torch.load(io.BytesIO(b"".join(chunks))))


# ---- damaged metadata records ---------------------------------------------------------------
def _header_span(blob: bytes) -> tuple[int, int]:
    n = int.from_bytes(blob[:8], "little")
    return 8, 8 + n


def _metadata_span(blob: bytes) -> tuple[int, int]:
    """Byte range of the ``"__metadata__":{...}`` member inside the safetensors header."""
    lo, hi = _header_span(blob)
    start = blob.index(b'"__metadata__"', lo, hi)
    meta = json.loads(blob[lo:hi])["__metadata__"]
    body = json.dumps(meta, separators=(",", ":")).encode()
    end = blob.index(b"}", start + len(b'"__metadata__":') + len(body) - 1) + 1
    return start, end


def _saved(tmp_path) -> tuple:
    path = tmp_path / "ck.pt"
    torch.save(OBJ, path)
    return path, path.read_bytes()


@pytest.mark.parametrize("key", ["format", "gcompile.version", "gcompile.structure",
                                 "gcompile.sha256"])
def test_a_damaged_record_name_is_refused_naming_the_record(tmp_path, key):
    path, blob = _saved(tmp_path)
    quoted = json.dumps(key).encode()
    assert blob.count(quoted) == 1
    i = blob.index(quoted) + 2
    bad = bytearray(blob)
    bad[i] ^= 0x01  # one bit flipped in the record's name
    path.write_bytes(bytes(bad))
    with pytest.raises(SerializationError, match=f"'{key}' is missing") as e:
        torch.load(path)
    assert "ck.pt" in str(e.value) and "not loaded" in str(e.value)


@pytest.mark.parametrize("key, value", [("format", "gcompilf"),
                                        ("gcompile.sha256", "not-a-digest")])
def test_a_damaged_record_value_is_refused_naming_the_record(tmp_path, key, value):
    import safetensors.numpy as stn
    path, blob = _saved(tmp_path)
    header = json.loads(blob[slice(*_header_span(blob))])
    meta = dict(header["__metadata__"], **{key: value})
    stn.save_file({"w": np.arange(6.0, dtype=np.float32).reshape(2, 3)}, str(path),
                  metadata=meta)
    with pytest.raises(SerializationError, match=f"'{key}' is damaged"):
        torch.load(path)


def test_records_missing_altogether_are_refused(tmp_path):
    import safetensors.numpy as stn
    path = tmp_path / "half.pt"
    stn.save_file({"w": np.zeros(2, np.float32)}, str(path), metadata={"format": "gcompile"})
    with pytest.raises(SerializationError, match="'gcompile.version' is missing"):
        torch.load(path)


def test_no_single_bit_flip_in_the_metadata_loads_unchecked(tmp_path):
    path, blob = _saved(tmp_path)
    lo, hi = _metadata_span(blob)
    assert hi - lo > 100
    loaded_same = refused = 0
    for i in range(lo, hi):
        for bit in range(8):
            bad = bytearray(blob)
            bad[i] ^= 1 << bit
            path.write_bytes(bytes(bad))
            try:
                got = torch.load(path)
            except SerializationError:
                refused += 1
                continue
            assert _same(OBJ, got), (i - lo, bit, bytes(bad[lo:hi]))
            loaded_same += 1
    assert refused > 8 * (hi - lo) * 0.9  # nearly every flip is caught outright
