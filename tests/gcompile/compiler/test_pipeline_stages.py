"""GCOMPILE_LOG=stages prints the compile pipeline, stage by stage, in order."""
import re

import pytest

import gcompile as torch
from gcompile import nn

BACK_END = ["verify", "passes (decompose, simplify)", "fusion", "lower", "memory plan",
            "executable"]


def _stages(err: str) -> list[str]:
    return re.findall(r"\[gcompile:stages\] == (.+) \(\d+\.\d ms\)", err)


def test_a_train_step_prints_every_stage_in_order(monkeypatch, capsys):
    monkeypatch.setenv("GCOMPILE_LOG", "stages")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(5, 4), torch.randint(0, 3, (5,))

    @torch.compile
    def step(x, y):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for _ in range(3):
        step(x, y)
    err = capsys.readouterr().err
    # the first step runs eagerly (every .grad None); the second traces and compiles
    assert _stages(err) == ["trace", "trace"] + BACK_END
    assert re.search(r"(linear|matmul) %arg0", err)  # the traced graph
    assert "[matmul]: matmul" in err      # the fusion groups
    assert re.search(r"\d+ steps: \d+ kernel", err)  # what lowering made
    assert "arena" in err                 # the memory plan


def test_a_compiled_module_with_gradients_runs_autodiff_then_two_back_ends(monkeypatch,
                                                                           capsys):
    monkeypatch.setenv("GCOMPILE_LOG", "stages")
    cm = torch.compile(nn.Linear(3, 2))
    cm(torch.randn(4, 3)).sum().backward()
    got = _stages(capsys.readouterr().err)
    assert got == ["trace", "autodiff"] + BACK_END + BACK_END


def test_stages_stay_silent_unless_asked(monkeypatch, capsys):
    monkeypatch.delenv("GCOMPILE_LOG", raising=False)
    torch.compile(lambda a: a * 2)(torch.ones(3))
    assert "stages" not in capsys.readouterr().err


def test_tril_triu_refuse_vectors_as_torch_does():
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        torch.ones(4).triu()
    with pytest.raises(RuntimeError, match="at least 2 dimensions"):
        torch.tril(torch.ones(4))


def test_explain_shows_the_loop_variant_that_ran():
    """A transposed input runs the strided loop; explain shows that variant's source."""
    x = torch.randn(7, 5).T
    e = torch.explain(lambda a: (a * 3 - 1).relu(), x)
    src = e.kernel_sources[0]
    assert src.startswith("# variant ('strided'") and "(ran)" in src
    assert "def entry" in src or "cfunc" in src
