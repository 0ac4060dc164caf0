"""Bad input raises torch's exception type with a message naming op, shapes, dtypes."""
import pytest

import gcompile as torch


def test_broadcast_mismatch_names_op_and_shapes():
    with pytest.raises(RuntimeError, match=r"add.*\(2, 3\).*\(4,\)"):
        torch.ones(2, 3) + torch.ones(4)
    with pytest.raises(RuntimeError, match=r"mul.*\(2, 3\).*\(3, 2\)"):
        torch.ones(2, 3) * torch.ones(3, 2)


def test_matmul_shape_mismatch():
    with pytest.raises(RuntimeError, match=r"mat1 and mat2 shapes cannot be multiplied \(2x3 and "
                                           r"4x5\)"):
        torch.ones(2, 3) @ torch.ones(4, 5)
    with pytest.raises(RuntimeError, match="1D tensors expected"):
        torch.dot(torch.ones(2, 2), torch.ones(2))
    with pytest.raises(RuntimeError, match="inconsistent tensor size"):
        torch.dot(torch.ones(2), torch.ones(3))
    with pytest.raises(RuntimeError, match="same dtype"):
        torch.ones(2, 2) @ torch.ones(2, 2, dtype=torch.float64)


def test_view_on_non_contiguous():
    t = torch.ones(2, 3).t()
    with pytest.raises(RuntimeError, match=r"view size is not compatible with input tensor's size "
                                           r"and stride.*Use \.reshape"):
        t.view(6)
    with pytest.raises(RuntimeError, match=r"shape '\[4, 2\]' is invalid for input of size 6"):
        torch.ones(6).view(4, 2)


def test_backward_errors():
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="grad can be implicitly created only for scalar "
                                           r"outputs.*\(2,\)"):
        (x * 2).backward()
    y = (x * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        y.backward()
    with pytest.raises(RuntimeError, match="does not require grad and does not have a grad_fn"):
        torch.ones(2).sum().backward()


def test_inplace_errors():
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in "
                                           "an in-place operation"):
        x.mul_(2)
    with pytest.raises(RuntimeError, match="view of a leaf Variable"):
        x[0].mul_(2)
    y = x.exp()
    y.add_(1)
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: \[torch.FloatTensor "
                                           r"\[2\]\].*ExpBackward0.*version 1; expected version 0"):
        y.sum().backward()


def test_index_errors():
    t = torch.ones(2, 3)
    with pytest.raises(IndexError, match="index 5 is out of bounds for dimension 1 with size 3"):
        t[:, 5]
    with pytest.raises(IndexError, match="index 2 is out of bounds for dimension 0 with size 2"):
        t[torch.tensor([0, 2])]
    with pytest.raises(IndexError, match="too many indices for tensor of dimension 2"):
        t[0, 0, 0]
    with pytest.raises(IndexError, match="Dimension out of range"):
        t.sum(2)
    with pytest.raises(IndexError, match="tensors used as indices must be long"):
        t[torch.tensor([0.0])]
    with pytest.raises(IndexError, match="out of bounds"):
        t.index_select(1, torch.tensor([3]))
    with pytest.raises(RuntimeError, match="index 7 is out of bounds for dimension 1 with size"):
        t.gather(1, torch.tensor([[0, 7]]))  # RuntimeError in torch too (a TORCH_CHECK)
    with pytest.raises(IndexError, match=r"shape of the mask \[3\] at index 0 does not match"):
        t[torch.tensor([True, False, True])]


def test_float_only_ops_on_integers():
    with pytest.raises(RuntimeError, match=r"normal_kernel_cpu.*'Long'.*int64"):
        torch.randn(2, dtype=torch.int64)
    with pytest.raises(RuntimeError, match="mean\\(\\): could not infer output dtype.*Long"):
        torch.tensor([1, 2]).mean()
    with pytest.raises(RuntimeError, match="only Tensors of floating point and complex dtype can "
                                           "require gradients"):
        torch.tensor([1, 2], requires_grad=True)
    with pytest.raises(RuntimeError, match="check_uniform_bounds.*'Int'"):
        torch.rand(2, dtype=torch.int32)
    with pytest.raises(RuntimeError, match="floating point"):
        torch.tensor([1, 2]).norm()
    with pytest.raises(RuntimeError, match="bitwise_and.*floating-point"):
        torch.ones(2) & torch.ones(2)


def test_shape_op_errors():
    with pytest.raises(RuntimeError, match=r"expanded size of the tensor \(4\) must match the "
                                           r"existing size \(3\)"):
        torch.ones(3).expand(2, 4)
    with pytest.raises(RuntimeError, match="sizes of tensors must match except in dimension 0"):
        torch.cat([torch.ones(2, 3), torch.ones(2, 4)])
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        torch.stack([torch.ones(2), torch.ones(3)])
    with pytest.raises(RuntimeError, match="only one dimension can be inferred"):
        torch.ones(4).reshape(-1, -1)
    with pytest.raises(RuntimeError, match="permute"):
        torch.ones(2, 3).permute(0)
    with pytest.raises(RuntimeError, match="t\\(\\) expects a tensor with <= 2 dimensions"):
        torch.ones(2, 2, 2).t()
    with pytest.raises(RuntimeError, match="split_with_sizes expects split_sizes to sum"):
        torch.ones(4).split([1, 2])
    with pytest.raises(RuntimeError, match="output with shape \\[3\\] doesn't match the "
                                           "broadcast shape"):
        torch.ones(3).add_(torch.ones(2, 3))


def test_conversion_errors():
    with pytest.raises(RuntimeError, match="a Tensor with 2 elements cannot be converted to "
                                           "Scalar"):
        torch.ones(2).item()
    with pytest.raises(RuntimeError, match="Boolean value of Tensor with more than one value is "
                                           "ambiguous"):
        bool(torch.ones(2))
    with pytest.raises(RuntimeError, match="Can't call numpy\\(\\) on Tensor that requires grad"):
        torch.ones(2, requires_grad=True).numpy()
    with pytest.raises(TypeError, match="len\\(\\) of a 0-d tensor"):
        len(torch.tensor(1.0))
    with pytest.raises(TypeError, match="can't convert np.ndarray of type"):
        import numpy as np
        torch.from_numpy(np.array(["a"]))


def test_device_errors(monkeypatch):
    # the suite may run on the CUDA simulator (tests/conftest.py): make CUDA absent
    monkeypatch.setattr(torch.cuda, "_probe", lambda: (False, "No CUDA GPUs are available"))
    assert not torch.cuda.is_available()
    assert torch.cuda.device_count() == 0
    with pytest.raises(RuntimeError, match="No CUDA GPUs are available"):
        torch.ones(2).cuda()
    with pytest.raises(RuntimeError, match="No CUDA GPUs are available"):
        torch.ones(2, device="cuda")
    with pytest.raises(RuntimeError, match="Expected one of cpu, cuda"):
        torch.device("tpu")


def test_random_argument_errors():
    with pytest.raises(RuntimeError, match="from=5 >= to=5"):
        torch.randint(5, 5, (2,))
    with pytest.raises(RuntimeError, match="multinomial"):
        torch.multinomial(torch.tensor([-1.0, 1.0]), 1)
    with pytest.raises(RuntimeError, match="cannot sample n_sample > prob_dist"):
        torch.multinomial(torch.tensor([0.5, 0.5]), 3)
    with pytest.raises(TypeError, match="generator must be a gcompile.Generator"):
        torch.rand(2, generator=123)


def test_numpy_value_errors_become_runtime_errors():
    with pytest.raises(RuntimeError, match="pow: Integers to negative integer powers"):
        torch.tensor([2]) ** -1
    assert (torch.tensor([1, 2]) == None) is False  # noqa: E711
    with pytest.raises(TypeError):
        torch.tensor([1]) + None
    assert torch.tensor(5).view(-1).tolist() == [5]


def test_masked_fill_errors():
    with pytest.raises(RuntimeError, match="masked_fill only supports boolean masks"):
        torch.ones(3).masked_fill(torch.tensor([1, 0, 1]), 0.0)
    with pytest.raises(RuntimeError, match=r"mask of shape \[2, 3\] does not broadcast"):
        torch.ones(3).masked_fill(torch.ones(2, 3, dtype=torch.bool), 0.0)
    with pytest.raises(RuntimeError, match="only supports a 0-dimensional value tensor"):
        torch.ones(3).masked_fill(torch.ones(3, dtype=torch.bool), torch.ones(3))
