"""gcompile.distributed in one process: errors in torch's words, the missing-extra
message, SyncBatchNorm over one rank, and the launcher (gcompile run)."""
from __future__ import annotations

import sys

import numpy as np
import pytest

import gcompile as torch
import gcompile.distributed as dist
from gcompile import nn
from gcompile.distributed import launch


def test_not_initialized_errors():
    assert not dist.is_initialized()
    for fn in (dist.get_rank, dist.get_world_size, dist.barrier,
               lambda: dist.all_reduce(torch.ones(2)), lambda: dist.broadcast(torch.ones(2), 0)):
        with pytest.raises(ValueError, match="Default process group has not been initialized"):
            fn()
    with pytest.raises(ValueError, match="Default process group has not been initialized"):
        nn.parallel.DistributedDataParallel(nn.Linear(2, 2))


def test_unsupported_backend():
    with pytest.raises(RuntimeError, match="doesn't have nccl built in"):
        dist.init_process_group("nccl")
    assert not dist.is_initialized()


def test_missing_mpi4py_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert dist.is_available() is False
    with pytest.raises(RuntimeError, match=r"pip install 'gcompile\[distributed\]'"):
        dist.init_process_group("mpi")
    assert not dist.is_initialized()


def test_reduce_op_names():
    assert {op.value for op in (dist.ReduceOp.SUM, dist.ReduceOp.AVG, dist.ReduceOp.MAX,
                                dist.ReduceOp.MIN, dist.ReduceOp.PRODUCT)} == {
        "sum", "avg", "max", "min", "product"}
    assert issubclass(dist.DistBackendError, RuntimeError)


def _bn_cnn():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(),
                         nn.Linear(27, 2), nn.BatchNorm1d(2))


def test_sync_batchnorm_over_one_rank_is_batchnorm():
    ref = _bn_cnn()
    model = nn.SyncBatchNorm.convert_sync_batchnorm(_bn_cnn())
    assert isinstance(model[1], nn.SyncBatchNorm) and isinstance(model[5], nn.SyncBatchNorm)
    assert list(model.state_dict()) == list(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        x = torch.randn(6, 2, 5, 5, generator=g)
        for m in (ref, model):
            m.zero_grad()
            m(x).pow(2).sum().backward()
        for (n, p), q in zip(ref.named_parameters(), model.parameters()):
            np.testing.assert_allclose(q.grad.numpy(), p.grad.numpy(), rtol=1e-4, atol=1e-5,
                                       err_msg=n)
    for (n, b), c in zip(ref.named_buffers(), model.buffers()):
        np.testing.assert_allclose(c.numpy(), b.numpy(), rtol=1e-5, atol=1e-6, err_msg=n)
    model.eval()
    ref.eval()
    x = torch.randn(4, 2, 5, 5, generator=g)
    np.testing.assert_allclose(model(x).detach().numpy(), ref(x).detach().numpy(), rtol=1e-5,
                               atol=1e-6)


def test_launch_builds_the_mpiexec_command(capsys):
    cmd = launch.build_command(3, "train.py", ["--lr", "0.1"], "/x/mpiexec", ["-bind-to", "none"])
    assert cmd == ["/x/mpiexec", "-n", "3", "-bind-to", "none", sys.executable, "train.py",
                   "--lr", "0.1"]
    with pytest.raises(ValueError):
        launch.build_command(0, "train.py", [], "/x/mpiexec")


def test_launch_reports_a_missing_launcher(monkeypatch, capsys):
    monkeypatch.setenv("GCOMPILE_MPIEXEC", "/nonexistent/mpiexec")
    assert launch.main(["-n", "2", "train.py"]) == 2
    assert "not an executable" in capsys.readouterr().err


def test_launch_runs_a_script_on_two_ranks(tmp_path, capsys):
    pytest.importorskip("mpi4py", reason="needs mpi4py: pip install 'gcompile[distributed]'")
    try:
        launch.find_launcher()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    script = tmp_path / "s.py"
    out = tmp_path / "out"
    script.write_text(
        "import sys\nfrom mpi4py import MPI\n"
        f"open(r'{out}' + str(MPI.COMM_WORLD.Get_rank()), 'w').write(sys.argv[1])\n"
        "sys.exit(3 if sys.argv[1] == 'fail' else 0)\n")
    assert launch.main(["-n", "2", str(script), "hello"]) == 0
    assert (tmp_path / "out0").read_text() == "hello" == (tmp_path / "out1").read_text()
    assert launch.main(["-n", "2", str(script), "fail"]) != 0
    assert launch.main(["--dry-run", "-n", "2", str(script)]) == 0
    assert str(script) in capsys.readouterr().out
