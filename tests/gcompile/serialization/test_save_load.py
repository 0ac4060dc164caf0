"""gcompile.save / gcompile.load: round trips, foreign files, corruption, refusal, atomicity."""
from __future__ import annotations

import io
import json
import math
import os
from collections import OrderedDict

import numpy as np
import pytest
import safetensors.numpy as stn

import gcompile as torch
from gcompile import serialization as ser
from gcompile.serialization import SerializationError
from ir.dtypes import all_dtypes


def roundtrip(obj, tmp_path, name="ck.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return torch.load(path)


def assert_same_tensor(a, b):
    assert isinstance(b, torch.Tensor)
    assert a.dtype is b.dtype and tuple(a.shape) == tuple(b.shape)
    np.testing.assert_array_equal(a.detach().numpy(), b.detach().numpy())


@pytest.mark.parametrize("dtype", all_dtypes, ids=lambda d: d.name)
def test_every_dtype_round_trips(dtype, tmp_path):
    arr = np.arange(-3, 9).reshape(3, 4) % (2 if dtype is torch.bool else 100)
    t = torch.tensor(arr.astype(dtype.np))
    assert_same_tensor(t, roundtrip(t, tmp_path))


def test_shapes_0d_empty_and_views(tmp_path):
    base = torch.arange(12.0).reshape(3, 4)
    obj = [torch.tensor(3.5), torch.zeros(0, 5), base.t(), base[1:, ::2]]
    got = roundtrip(obj, tmp_path)
    for a, b in zip(obj, got):
        assert_same_tensor(a, b)
    assert got[0].dim() == 0
    got[2].add_(1)  # views are saved as values: independent, writable
    assert got[3][0, 0].item() == 4.0


def test_nested_structures_round_trip(tmp_path):
    w = torch.randn(2, 3)
    obj = {
        "model": OrderedDict([("fc.weight", w), ("fc.bias", torch.zeros(3))]),
        "epoch": 7, "lr": 0.01, "best": math.inf, "worst": -math.inf, "name": "run-1",
        "flags": [True, False, None], "pair": (1, 2.5, "x"), "ints": {0: "a", 3: "b"},
        "tkey": {(1, "a"): 1}, "dtype": torch.float64, "size": torch.Size([2, 3]),
        "raw": b"\x00\x01", "np": np.arange(3, dtype=np.int32), "nps": np.float32(1.5),
        "empty": {}, "nested": [[[]]],
    }
    got = roundtrip(obj, tmp_path)
    assert type(got["model"]) is OrderedDict and list(got["model"]) == ["fc.weight", "fc.bias"]
    assert_same_tensor(w, got["model"]["fc.weight"])
    for k in ("epoch", "lr", "best", "worst", "name", "flags", "pair", "ints", "tkey", "raw",
              "empty", "nested"):
        assert got[k] == obj[k] and type(got[k]) is type(obj[k]), k
    assert got["dtype"] is torch.float64 and got["size"] == torch.Size([2, 3])
    assert type(got["size"]) is torch.Size
    np.testing.assert_array_equal(got["np"], obj["np"])
    assert got["nps"] == np.float32(1.5) and got["nps"].dtype == np.float32
    assert math.isnan(roundtrip(float("nan"), tmp_path))


def test_shared_tensors_stay_shared_and_requires_grad_kept(tmp_path):
    w = torch.randn(3, requires_grad=True)
    got = roundtrip({"a": w, "b": [w], "c": w.detach()}, tmp_path)
    assert got["a"] is got["b"][0]
    assert got["a"].requires_grad and got["a"].is_leaf and not got["c"].requires_grad


def test_state_dict_file_is_a_plain_safetensors_state_dict(tmp_path):
    sd = OrderedDict([("fc.weight", torch.randn(2, 3)), ("fc.bias", torch.randn(2))])
    path = tmp_path / "model.safetensors"
    torch.save(sd, path)
    plain = stn.load_file(str(path))  # any safetensors reader sees the tensors by name
    assert sorted(plain) == ["fc.bias", "fc.weight"]
    np.testing.assert_array_equal(plain["fc.weight"], sd["fc.weight"].numpy())


def test_loads_foreign_safetensors_state_dict(tmp_path):
    path = tmp_path / "foreign.safetensors"
    tensors = {"layer.0.weight": np.random.default_rng(0).standard_normal((4, 3)).astype(
        np.float32), "layer.0.bias": np.zeros(4, np.float16), "step": np.array(5, np.int64)}
    stn.save_file(tensors, str(path), metadata={"format": "pt"})
    got = torch.load(path, map_location="cpu", weights_only=True)
    assert isinstance(got, dict) and set(got) == set(tensors)
    for k, v in tensors.items():
        assert_same_tensor(torch.from_numpy(v), got[k])
    got["layer.0.weight"].add_(1.0)  # loaded tensors are writable


def test_file_objects(tmp_path):
    buf = io.BytesIO()
    torch.save({"x": torch.ones(2)}, buf)
    buf.seek(0)
    assert torch.load(buf)["x"].tolist() == [1.0, 1.0]
    torch.save({"x": torch.ones(2)}, tmp_path / "p.pt")
    assert len(buf.getvalue()) == len((tmp_path / "p.pt").read_bytes())
    with open(tmp_path / "p.pt", "rb") as f:
        assert torch.load(f)["x"].tolist() == [1.0, 1.0]
    torch.save([1], str(tmp_path / "s.pt").encode())  # bytes paths too
    assert torch.load(str(tmp_path / "s.pt")) == [1]


def test_unsupported_objects_are_refused_at_save(tmp_path):
    class Thing:
        def state_dict(self):
            return {}

    with pytest.raises(SerializationError, match="save its state_dict"):
        torch.save({"m": Thing()}, tmp_path / "x")
    with pytest.raises(SerializationError, match="cannot store an object of type builtins.set"):
        torch.save({1, 2}, tmp_path / "x")
    assert not os.path.exists(tmp_path / "x")


# ---- corrupt, tampered and hostile files -------------------------------------------------
def saved_bytes(tmp_path):
    path = tmp_path / "good.pt"
    torch.save({"w": torch.arange(100.0), "meta": {"epoch": 3}}, path)
    return path, path.read_bytes()


def test_truncated_file_names_the_file_and_the_problem(tmp_path):
    path, blob = saved_bytes(tmp_path)
    for cut in (len(blob) - 10, len(blob) // 2, 20, 4):
        bad = tmp_path / f"cut{cut}.pt"
        bad.write_bytes(blob[:cut])
        with pytest.raises(SerializationError, match="truncated") as e:
            torch.load(bad)
        assert str(bad) in str(e.value)


def test_tampered_data_is_detected(tmp_path):
    path, blob = saved_bytes(tmp_path)
    b = bytearray(blob)
    b[-5] ^= 0xFF  # flip bits inside the tensor data
    path.write_bytes(bytes(b))
    with pytest.raises(SerializationError, match="tampered") as e:
        torch.load(path)
    assert "good.pt" in str(e.value)


def test_tampered_header_is_detected(tmp_path):
    path, blob = saved_bytes(tmp_path)
    assert blob.count(b'epoch') == 1
    path.write_bytes(blob.replace(b'epoch', b'epocX'))
    with pytest.raises(SerializationError, match="tampered"):
        torch.load(path)
    path.write_bytes(blob.replace(b'{"__metadata__"', b'["__metadata__"', 1))
    with pytest.raises(SerializationError, match="corrupt safetensors header"):
        torch.load(path)


def forge(tmp_path, structure):
    """A well-formed file whose structure asks for code, with a valid checksum."""
    arrays = {"w": np.zeros(2, np.float32)}
    text = json.dumps(structure)
    meta = {"format": "gcompile", "gcompile.version": "1", "gcompile.structure": text,
            "gcompile.sha256": ser._digest(text, arrays)}
    path = tmp_path / "evil.pt"
    stn.save_file(arrays, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("node", [
    {"kind": "object", "module": "os", "class": "system", "args": ["touch pwned"]},
    {"kind": "tensor", "name": "w", "class": "os.system"},
    {"kind": "list", "items": [{"kind": "reduce", "callable": "builtins.eval",
                                "args": ["1+1"]}]},
    {"kind": "dtype", "name": "__import__('os')"},
])
def test_smuggled_code_is_refused(tmp_path, node):
    path = forge(tmp_path, node)
    with pytest.raises(SerializationError, match="refused"):
        torch.load(path)
    assert not os.path.exists("pwned")


def test_pickle_checkpoints_are_refused(tmp_path):
    import pickle
    path = tmp_path / "torch_style.pt"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(SerializationError, match="never unpickles"):
        torch.load(path, weights_only=False)
    path.write_bytes(b"PK\x03\x04" + b"\0" * 40)
    with pytest.raises(SerializationError, match="pickle/zip"):
        torch.load(path)


# ---- atomic writes -------------------------------------------------------------------------
def test_interrupted_save_leaves_the_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "ck.pt"
    torch.save({"version": 1, "w": torch.ones(1000)}, path)
    old = path.read_bytes()

    real_writer = ser._write_checkpoint

    def dying_writer(tmp, arrays, meta):
        real_writer(tmp, arrays, meta)  # write the real file, then cut it and crash
        with open(tmp, "r+b") as f:
            f.truncate(os.path.getsize(tmp) // 2)
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ser, "_write_checkpoint", dying_writer)
    with pytest.raises(OSError, match="disk full"):
        torch.save({"version": 2, "w": torch.zeros(1000)}, path)
    assert path.read_bytes() == old
    assert os.listdir(tmp_path) == ["ck.pt"]  # no temporary file left behind
    assert torch.load(path)["version"] == 1


def test_save_replaces_atomically_and_keeps_permissions(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"v": 1}, path)
    torch.save({"v": 2}, path)
    assert torch.load(path) == {"v": 2}
    umask = os.umask(0)
    os.umask(umask)
    assert (os.stat(path).st_mode & 0o777) == (0o666 & ~umask)


def test_foreign_bfloat16_tensors_load_as_bfloat16(tmp_path):
    vals = np.array([1.0, -2.5, 3.140625, 0.0], np.float32)  # exactly representable in bf16
    bf16 = (vals.view(np.uint32) >> 16).astype("<u2").tobytes()
    f32 = np.arange(3, dtype=np.float32).tobytes()
    header = {"emb": {"dtype": "BF16", "shape": [2, 2], "data_offsets": [0, 8]},
              "b": {"dtype": "F32", "shape": [3], "data_offsets": [8, 20]}}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path = tmp_path / "bf16.safetensors"
    path.write_bytes(len(text).to_bytes(8, "little") + text + bf16 + f32)
    got = torch.load(path)
    assert got["emb"].dtype is torch.bfloat16 and got["emb"].tolist() == [[1.0, -2.5],
                                                                           [3.140625, 0.0]]
    assert got["b"].tolist() == [0.0, 1.0, 2.0]
