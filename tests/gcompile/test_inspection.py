"""What users can look at: graph text with source lines, explain's DOT/PNG with fusion
clusters, the per-step profile, and compile() option validation."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

import gcompile as torch
import gcompile.nn.functional as F
from gcompile.compiler.options import MODES, OPTIONS, validate_compile_options
from gcompile.profile import Profile, profile


def _block(x, w, b):
    y = x @ w
    return F.gelu(y + b).sum(-1)


LINE = inspect.getsourcelines(_block)[1]


def _inputs():
    torch.manual_seed(0)
    return torch.randn(16, 8), torch.randn(8, 8), torch.randn(8)


def test_compiled_graph_text_has_source_lines():
    cf = torch.compile(_block)
    cf(*_inputs())
    text = cf.graph.format()
    assert f"# test_inspection.py:{LINE + 1}" in text  # the matmul
    assert f"# test_inspection.py:{LINE + 2}" in text  # add, gelu, sum
    body = [ln for ln in text.splitlines() if " = " in ln]
    cols = {ln.index("#") for ln in body if "#" in ln}
    assert len(cols) == 1, "source comments are aligned in one column"
    assert "#" not in str(cf.graph)  # str() stays equal to the JSON round trip's text
    assert cf.graph.format(source=False) == str(cf.graph)


def test_explain_dot_has_one_cluster_per_fused_group():
    ex = torch.explain(_block, *_inputs())
    dot = ex.to_dot()
    assert dot.startswith('digraph "') and dot.rstrip().endswith("}")
    clusters = re.findall(r"subgraph cluster_(\d+) \{", dot)
    fused = [g for g in ex.fusion.groups if g.kind in ("elementwise", "rows")
             or len(g.nodes) > 1]
    assert sorted(map(int, clusters)) == sorted(g.id for g in fused) and clusters
    for g in fused:  # every node of the group is declared inside its cluster
        block = dot.split(f"subgraph cluster_{g.id} {{", 1)[1].split("  }", 1)[0]
        for n in g.nodes:
            assert f'"{n.out.name}" [label=' in block
    for n in ex.graph.nodes:
        assert dot.count(f'"{n.out.name}" [label=') == 1
    g = ex.to_networkx()
    assert {d["group"] for _, d in g.nodes(data=True)} >= {grp.id for grp in fused}


def test_explain_save_png(tmp_path):
    pytest.importorskip("matplotlib", reason="save_png draws with matplotlib (plot extra)")
    ex = torch.explain(_block, *_inputs())
    path = tmp_path / "g.png"
    ex.save_png(path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_profile_reports_every_step(capsys):
    x, w, b = _inputs()
    prof = profile(_block, x, w, b, runs=3, warmup=1)
    assert isinstance(prof, Profile)
    table = capsys.readouterr().out
    assert "GB/s" in table and "GFLOP/s" in table
    cf = torch.compile(_block)
    cf(x, w, b)
    assert len(prof.steps) == len(cf.entries[-1].executable.plan.steps)
    mm = [s for s in prof.steps if s.kind == "matmul"]
    assert mm and mm[0].flops == 2 * 16 * 8 * 8 and mm[0].gflops > 0
    assert all(s.seconds >= 0 and s.bytes > 0 for s in prof.steps if s.kind != "view")
    assert prof.total_seconds > 0
    with pytest.raises(ValueError, match="runs"):
        profile(_block, x, w, b, runs=0)


def test_profile_of_a_module_prints_nothing_when_asked(capsys):
    m = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU())
    prof = profile(m, torch.randn(2, 4), runs=2, print_table=False)
    assert capsys.readouterr().out == ""
    assert any(s.kind == "matmul" for s in prof.steps)
    np.testing.assert_array_less(-1e-12, [s.seconds for s in prof.steps])


def test_profile_of_a_training_step_runs_its_plan_and_splits_the_time(capsys):
    """A step that calls backward() is profiled whole, through real calls (it trains),
    with the share of each kind of step and the Python time outside them."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, y = torch.randn(5, 6), torch.randint(0, 3, (5,))

    def step(x, y):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    w0 = model[0].weight.detach().clone()
    prof = profile(step, x, y, runs=3, warmup=1)
    table = capsys.readouterr().out
    assert prof.training and "training step" in table and "per call:" in table
    assert "python" in table.splitlines()[-1]
    kinds = prof.by_kind()
    assert kinds.get("matmul", 0) > 0 and kinds.get("kernel", 0) > 0
    assert prof.python_seconds >= 0 and prof.total_seconds > 0
    assert not np.allclose(model[0].weight.detach().numpy(), w0.numpy())  # it trained


def test_compile_options_validation():
    assert validate_compile_options(None, None, {}) == {}
    for mode in MODES:
        assert validate_compile_options(mode, None, {}) == {}
    assert validate_compile_options(None, {"max_recompiles": 3, "kernels": "reference"},
                                    {"disable": False}) == {"max_recompiles": 3,
                                                            "kernels": "reference"}
    with pytest.raises(RuntimeError, match="Unrecognized mode=fast, should be one of: default, "
                                           "reduce-overhead, max-autotune"):
        validate_compile_options("fast", None, {})
    with pytest.raises(RuntimeError, match=r"Unexpected optimization option triton.cudagraphs, "
                                           r"known options are \['kernels'"):
        validate_compile_options(None, {"triton.cudagraphs": True}, {})
    with pytest.raises(RuntimeError, match="Either mode or options"):
        validate_compile_options("default", {"max_recompiles": 2}, {})
    with pytest.raises(TypeError, match="unexpected keyword argument 'fullgrph'.*disable"):
        validate_compile_options(None, None, {"fullgrph": True})
    with pytest.raises(TypeError, match="'max_recompiles' must be int, got str"):
        validate_compile_options(None, {"max_recompiles": "big"}, {})
    with pytest.raises(TypeError, match="'max_recompiles' must be int, got bool"):
        validate_compile_options(None, {"max_recompiles": True}, {})
    with pytest.raises(ValueError, match=r"'kernels' must be one of \['numba', 'reference'\]"):
        validate_compile_options(None, {"kernels": "cuda"}, {})
    with pytest.raises(ValueError, match="at least 1"):
        validate_compile_options(None, {"max_recompiles": 0}, {})
    assert set(OPTIONS) == {"kernels", "max_recompiles", "keep_arena"}


def test_compile_options_check_log_channels(monkeypatch):
    monkeypatch.setenv("GCOMPILE_LOG", "recompiles,grpah_breaks")
    with pytest.raises(ValueError, match="unknown log channel 'grpah_breaks'; valid channels: "
                                         "recompiles, graph_breaks"):
        validate_compile_options(None, None, {})
    monkeypatch.setenv("GCOMPILE_LOG", "recompiles,graph_breaks")
    assert validate_compile_options(None, None, {}) == {}
