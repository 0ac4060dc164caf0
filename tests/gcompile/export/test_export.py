"""gcompile.export / ExportedProgram.save / gcompile.load: same results as eager, in this
process and in a new one that never imports the model's source; tampered files refused."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gcompile as torch
from gcompile.export import Dim, ExportedProgram
from gcompile.export.program import ExportFormatError
from gcompile.serialization import SerializationError

from .models import NAMES, make

ROOT = Path(__file__).resolve().parents[3]


def _eager(m, *xs):
    with torch.no_grad():
        return m(*xs)


@pytest.mark.parametrize("name", NAMES)
def test_export_matches_eager_and_round_trips(name, tmp_path):
    m, x = make(name)
    ref = _eager(m, x).numpy()
    ep = torch.export(m, x)
    assert isinstance(ep, ExportedProgram)
    np.testing.assert_allclose(ep(x).numpy(), ref, rtol=1e-4, atol=1e-5)
    path = tmp_path / f"{name}.gcx"
    ep.save(path)
    loaded = torch.load(path)
    assert isinstance(loaded, ExportedProgram)
    assert set(loaded.state_dict()) == set(ep.state_dict())
    np.testing.assert_allclose(loaded(x).numpy(), ref, rtol=1e-4, atol=1e-5)
    x2 = torch.randn(*x.shape)  # other values, same shapes
    np.testing.assert_allclose(loaded(x2).numpy(), _eager(m, x2).numpy(), rtol=1e-4, atol=1e-5)


def test_function_with_pytrees_and_module_save_function(tmp_path):
    w = torch.randn(4, 4)  # captured: becomes a weight of the program

    def f(inp, scale):
        a, b = inp["a"], inp["b"]
        return {"sum": (a @ w + b).relu() * scale, "parts": (a.exp(), [b.sum()])}

    inp = {"a": torch.randn(3, 4), "b": torch.randn(4)}
    ep = torch.export(f, inp, 2.0)
    torch.export.save(ep, tmp_path / "f.gcx")
    loaded = torch.load(tmp_path / "f.gcx")
    got, ref = loaded(inp, 2.0), f(inp, 2.0)
    assert set(got) == {"sum", "parts"} and isinstance(got["parts"], tuple)
    np.testing.assert_allclose(got["sum"].numpy(), ref["sum"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["parts"][1][0].numpy(), ref["parts"][1][0].numpy(), rtol=1e-5)
    with pytest.raises(TypeError, match="structured as"):
        loaded(inp, 3.0)  # the Python number was traced as a constant
    with pytest.raises(RuntimeError, match=r"expected shape \[3, 4\], got \[2, 4\]"):
        loaded({"a": torch.randn(2, 4), "b": torch.randn(4)}, 2.0)
    with pytest.raises(TypeError, match="expected dtype float32, got float64"):
        loaded({"a": torch.randn(3, 4, dtype=torch.float64), "b": torch.randn(4)}, 2.0)


def test_torch_style_tuple_of_args():
    def f(x, y):
        return x * y + 1
    x, y = torch.randn(3), torch.randn(3)
    ep = torch.export(f, (x, y))
    np.testing.assert_allclose(ep(x, y).numpy(), f(x, y).numpy())
    m, xm = make("mlp")
    np.testing.assert_allclose(torch.export(m, (xm,))(xm).numpy(), _eager(m, xm).numpy(),
                               rtol=1e-5, atol=1e-6)

    def g(pair):  # one argument that is a tuple
        return pair[0] - pair[1]
    np.testing.assert_allclose(torch.export(g, (x, y))((x, y)).numpy(), (x - y).numpy())


def test_dynamic_batch_dimension(tmp_path):
    m, x = make("cnn")
    ep = torch.export(m, x, dynamic_shapes=({0: Dim("batch", max=64)},))
    ep.save(tmp_path / "d.gcx")
    loaded = torch.load(tmp_path / "d.gcx")
    for b in (2, 5, 9):
        xb = torch.randn(b, 3, 8, 8)
        np.testing.assert_allclose(loaded(xb).numpy(), _eager(m, xb).numpy(), rtol=1e-4,
                                   atol=1e-5)
    with pytest.raises(RuntimeError, match="outside"):
        loaded(torch.randn(65, 3, 8, 8))
    with pytest.raises(RuntimeError, match=r"expected shape \['batch', 3, 8, 8\]"):
        loaded(torch.randn(4, 3, 9, 8))


@pytest.mark.parametrize("name", ["lstm", "attention", "mlp"])
def test_dynamic_batch_of_recurrent_and_attention_models(name, tmp_path):
    m, x = make(name)
    ep = torch.export(m, x, dynamic_shapes={"x": {0: Dim("batch")}})
    if name == "lstm":  # its zero initial state is a constant that follows the batch
        assert any(p[2] == "fill" for p in ep.patches)
    ep.save(tmp_path / "d.gcx")
    loaded = torch.load(tmp_path / "d.gcx")
    for b in (2, 6):
        xb = torch.randn(b, *x.shape[1:])
        np.testing.assert_allclose(loaded(xb).numpy(), _eager(m, xb).numpy(), rtol=1e-4,
                                   atol=1e-5)


def test_dynamic_dimension_that_cannot_follow_is_refused():
    def f(x):
        return x * float(x.shape[0])  # a float computed from the size is baked in
    with pytest.raises(NotImplementedError, match="cannot be dynamic"):
        torch.export(f, torch.randn(4, 3), dynamic_shapes={"x": {0: Dim("n")}})
    cache = {}

    def g(x):  # a tensor made from the size on the first call and captured
        key = x.shape[0]
        if key not in cache:
            cache[key] = torch.ones(key, 1)
        return x * cache[key]
    # (filling the cache is a Python side effect no graph repeats: refused as a graph
    # break; without it, hashing the size bakes it in and the symbolic trace refuses it)
    with pytest.raises(RuntimeError, match="changes a Python value it reads"):
        torch.export(g, torch.randn(4, 3), dynamic_shapes=({0: Dim("n")},))
    cache[4] = torch.ones(4, 1)
    with pytest.raises(NotImplementedError, match="cannot be dynamic"):
        torch.export(g, torch.randn(4, 3), dynamic_shapes=({0: Dim("n")},))
    with pytest.raises(ValueError, match="outside"):
        torch.export(f, torch.randn(4, 3), dynamic_shapes=({0: Dim("n", min=5)},))
    with pytest.raises(NotImplementedError, match="distinct dynamic dimensions"):
        torch.export(lambda a, b: a.sum() + b.sum(), torch.randn(3), torch.randn(4),
                     dynamic_shapes=({0: Dim("a")}, {0: Dim("b")}))


def test_a_branch_on_a_dynamic_size_is_refused_not_exported_wrong():
    # three traces at nearby sizes all take the same branch; the symbolic trace sees it
    def f(x):
        return x[:min(x.shape[0], 5)] * 2
    with pytest.raises(NotImplementedError, match="holds only where"):
        torch.export(f, torch.randn(3, 2), dynamic_shapes=({0: Dim("n")},))
    ep = torch.export(lambda x: (x * 2).sum(0), torch.randn(3, 2),
                      dynamic_shapes=({0: Dim("n")},))
    assert tuple(ep(torch.randn(9, 2)).shape) == (2,)


def test_training_mode_batchnorm_is_refused():
    m, x = make("cnn")
    m.train()
    with pytest.raises(NotImplementedError, match="model.eval"):
        torch.export(m, x)


def test_graph_break_is_an_error():
    def f(x):
        return x * 2 if x.sum().item() > 0 else x
    with pytest.raises(Exception, match="graph break"):
        torch.export(f, torch.randn(3))


def _saved(tmp_path):
    m, x = make("mlp")
    ep = torch.export(m, x)
    path = tmp_path / "m.gcx"
    ep.save(path)
    return path, x


def test_tampered_or_truncated_file_is_refused(tmp_path):
    path, _ = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    trunc = tmp_path / "trunc.gcx"
    trunc.write_bytes(bytes(data[:len(data) // 2]))
    with pytest.raises(SerializationError):
        torch.load(trunc)
    # an edit inside the graph JSON (a node's op renamed) fails the checksum
    i = data.find(b"relu")
    assert i > 0
    data[i:i + 4] = b"tanh"
    bad = tmp_path / "edit.gcx"
    bad.write_bytes(bytes(data))
    with pytest.raises(SerializationError, match="SHA-256"):
        torch.load(bad)


def _rewrite(path, out, edit):
    from gcompile.serialization import load as raw_load
    from gcompile.serialization import save as raw_save
    tree = raw_load(path)
    edit(tree)
    raw_save(tree, out)  # a consistent checksum: the field checks must catch it


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.update(graph=t["graph"].replace('"op":"relu"', '"op":"bogus"')), "graph"),
    (lambda t: t.update(program=t["program"].replace('"bindings"', '"bindingz"')),
     "program.bindings"),
    (lambda t: t["weights"].update({k: torch.zeros(1) for k in list(t["weights"])[:1]}),
     "program.bindings[1]"),
    (lambda t: t.update(kernels=[{"source": "x", "header": "{", "object": torch.zeros(1)}]),
     "kernels[0].header"),
    (lambda t: t.pop("weights"), "weights"),
    (lambda t: t.update(program=t["program"].replace('"patches":[]',
                                                     '"patches":[[["nodes",0,"op"],"n",1]]')),
     "program.patches[0]"),
])
def test_bad_field_is_named(tmp_path, edit, field):
    path, _ = _saved(tmp_path)
    _rewrite(path, tmp_path / "bad.gcx", edit)
    with pytest.raises(ExportFormatError, match=field.replace("[", r"\[").replace("]", r"\]")):
        torch.load(tmp_path / "bad.gcx")


def test_plain_checkpoints_still_load(tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt")["a"].tolist() == [1.0, 1.0]


def test_saved_file_holds_kernels_with_machine_code(tmp_path):
    from gcompile.serialization import load as raw_load
    path, _ = _saved(tmp_path)
    tree = raw_load(path)
    assert tree["format"] == "gcompile.exported_program"
    json.loads(tree["graph"])
    assert tree["kernels"], "the MLP plan runs generated kernels"
    for k in tree["kernels"]:
        assert "def entry" in k["source"] or "entry" in k["source"]
        assert json.loads(k["header"])["nbytes"] == k["object"].numel()


MODEL_SRC = textwrap.dedent('''
    import gcompile as torch
    from gcompile import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3, padding=1)
            self.bn = nn.BatchNorm2d(4)
            self.fc = nn.Linear(4 * 3 * 3, 5)
            self.pool = nn.MaxPool2d(2)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn(self.conv(x))))
            return self.fc(x.flatten(1)).softmax(-1)
''')

EXPORT_SCRIPT = textwrap.dedent('''
    import sys
    import gcompile as torch
    import usermodel
    torch.manual_seed(0)
    m = usermodel.Net().eval()
    x = torch.randn(3, 1, 6, 6)
    with torch.no_grad():
        ref = m(x)
    torch.export(m, x).save(sys.argv[1])
    torch.save({"x": x, "ref": ref}, sys.argv[2])
''')

LOAD_SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    import gcompile as torch
    from kernels.cpu import cache_stats
    ep = torch.load(sys.argv[1], trust_kernels=len(sys.argv) > 3)
    data = torch.load(sys.argv[2])
    got = ep(data["x"])
    np.testing.assert_allclose(got.numpy(), data["ref"].numpy(), rtol=1e-4, atol=1e-5)
    assert "usermodel" not in sys.modules
    print(json.dumps({"report": ep.kernel_report, "stats": cache_stats()}))
''')


def _run(script, args, cwd, env):
    r = subprocess.run([sys.executable, "-c", script, *args], cwd=cwd, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_load_in_a_new_process_without_the_source(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "usermodel.py").write_text(MODEL_SRC)
    env = dict(os.environ, PYTHONPATH=str(ROOT), GCOMPILE_CACHE_DIR=str(tmp_path / "cache1"))
    prog, data = str(tmp_path / "net.gcx"), str(tmp_path / "data.pt")
    _run(EXPORT_SCRIPT, [prog, data], src, env)
    (src / "usermodel.py").unlink()  # the source is gone
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    # a cold kernel cache: the machine code comes from the file (signed with this user's key)
    env2 = dict(env, GCOMPILE_CACHE_DIR=str(tmp_path / "cache2"))
    out = json.loads(_run(LOAD_SCRIPT, [prog, data], run_dir, env2).splitlines()[-1])
    assert out["report"]["installed"] == out["report"]["stored"] > 0
    assert out["stats"]["compiles"] == 0
    # another user's key: the stored machine code is not trusted; kernels are rebuilt
    env3 = dict(env, GCOMPILE_CACHE_DIR=str(tmp_path / "cache3"),
                GCOMPILE_CACHE_KEY_FILE=str(tmp_path / "other.key"))
    out = json.loads(_run(LOAD_SCRIPT, [prog, data], run_dir, env3).splitlines()[-1])
    assert out["report"]["installed"] == 0 and out["report"]["unsigned"] > 0
    assert out["stats"]["compiles"] > 0
    # ... unless the caller says it trusts the file: then it is re-signed with that key
    env4 = dict(env3, GCOMPILE_CACHE_DIR=str(tmp_path / "cache4"))
    out = json.loads(_run(LOAD_SCRIPT, [prog, data, "trust"], run_dir, env4).splitlines()[-1])
    assert out["report"]["installed"] == out["report"]["stored"] > 0
    assert out["stats"]["compiles"] == 0
