"""Examples from the seed notes (../shared/seeds) with the numbers they print."""
import numpy as np
import pytest

import gcompile as torch
from gcompile.autograd import Variable


def test_graph_leaf_grads_scalar():
    w1 = Variable(torch.Tensor([2]), requires_grad=True)
    w2 = Variable(torch.Tensor([3]), requires_grad=True)
    w3 = Variable(torch.Tensor([5]), requires_grad=True)
    x = w1 + w2
    y = w2 * w3
    z = x + y
    z.backward()
    assert repr(w1.grad) == "tensor([1.])"
    assert repr(w2.grad) == "tensor([6.])"
    assert repr(w3.grad) == "tensor([3.])"
    assert x.grad is None and y.grad is None


def test_graph_leaf_grads_mean():
    w1 = Variable(torch.ones(2, 2) * 2, requires_grad=True)
    w2 = Variable(torch.ones(2, 2) * 3, requires_grad=True)
    w3 = Variable(torch.ones(2, 2) * 5, requires_grad=True)
    s = ((w1 + w2) + w2 * w3).mean()
    s.backward()
    assert repr(w1.grad) == "tensor([[0.2500, 0.2500],\n        [0.2500, 0.2500]])"
    assert repr(w2.grad) == "tensor([[1.5000, 1.5000],\n        [1.5000, 1.5000]])"
    assert repr(w3.grad) == "tensor([[0.7500, 0.7500],\n        [0.7500, 0.7500]])"


def test_max_dim_and_gather():
    x = torch.tensor([[3, 2, 1], [4, 5, 6]])
    values, indices = torch.max(x, dim=1)
    assert repr(torch.max(x, dim=1)) == ("torch.return_types.max(\nvalues=tensor([3, 6]),\n"
                                         "indices=tensor([0, 2]))")
    assert repr(values) == "tensor([3, 6])"
    assert repr(indices) == "tensor([0, 2])"
    r = torch.gather(x, dim=1, index=indices.unsqueeze(1))
    assert repr(r) == "tensor([[3],\n        [6]])"
    assert repr(r.squeeze()) == "tensor([3, 6])"
    assert repr(x[torch.arange(2), indices]) == "tensor([3, 6])"
    values, indices = torch.max(x, dim=1, keepdim=True)
    assert repr(values) == "tensor([[3],\n        [6]])"
    assert repr(indices) == "tensor([[0],\n        [2]])"
    assert repr(x[torch.arange(2), indices.squeeze()].unsqueeze(dim=1)) == \
        "tensor([[3],\n        [6]])"


def test_no_grad_breaks_graph():
    x = torch.ones(2, 2, requires_grad=True)
    m = torch.ones(2, 2, requires_grad=True)
    with torch.no_grad():
        z = x + 1
    y = z * 2 + m
    y.mean().backward()
    assert x.grad is None
    assert repr(m.grad) == "tensor([[0.2500, 0.2500],\n        [0.2500, 0.2500]])"
    assert y.grad is None


def test_no_grad_nothing_to_differentiate():
    x = torch.ones(2, 2, requires_grad=True)
    m = torch.ones(2, 2, requires_grad=True)
    with torch.no_grad():
        z = x + 1
    out = (z * 2 + m.detach()).mean()
    try:
        out.backward()
    except RuntimeError as e:
        assert "element 0 of tensors does not require grad and does not have a grad_fn" in str(e)
    else:
        raise AssertionError("expected RuntimeError")


def test_custom_function_square_sum():
    class SquareSumFunction(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, y):
            ctx.save_for_backward(x, y)
            return x ** 2 + y ** 2

        @staticmethod
        def backward(ctx, grad_output):
            x, y = ctx.saved_tensors
            return grad_output * 2 * x, grad_output * 2 * y

    x = torch.tensor([2.0], requires_grad=True)
    y = torch.tensor([3.0], requires_grad=True)
    z = SquareSumFunction.apply(x, y)
    z.backward()
    assert repr(x.grad) == "tensor([4.])" and repr(y.grad) == "tensor([6.])"
    assert z.grad_fn.name() == "SquareSumFunctionBackward"


def test_autograd_grad_of_stack():
    x = torch.tensor([2.0, 3.0], requires_grad=True)
    y = torch.stack([x[0] ** 2 + x[1] ** 2, x[0] * 3 + x[1] ** 2])
    grads = torch.autograd.grad(outputs=y, inputs=x, grad_outputs=torch.ones_like(y))
    assert repr(x) == "tensor([2., 3.], requires_grad=True)"
    assert repr(y).startswith("tensor([13., 15.], grad_fn=<")
    assert repr(grads) == "(tensor([ 7., 12.]),)"


def test_cat_stack():
    a = torch.tensor([[1, 2], [3, 4]])
    b = torch.tensor([[5, 6], [7, 8]])
    assert repr(torch.cat((a, b), dim=0)) == \
        "tensor([[1, 2],\n        [3, 4],\n        [5, 6],\n        [7, 8]])"
    assert repr(torch.cat((a, b), dim=1)) == "tensor([[1, 2, 5, 6],\n        [3, 4, 7, 8]])"
    a = torch.tensor([1, 2, 3])
    b = torch.tensor([4, 5, 6])
    assert repr(torch.stack((a, b), dim=0)) == "tensor([[1, 2, 3],\n        [4, 5, 6]])"
    assert repr(torch.stack((a, b), dim=1)) == \
        "tensor([[1, 4],\n        [2, 5],\n        [3, 6]])"


def test_repeat():
    x = torch.tensor([1, 2])
    assert repr(x.repeat(3)) == "tensor([1, 2, 1, 2, 1, 2])"
    r = x.repeat(2, 3)
    assert repr(r.shape) == "torch.Size([2, 6])"
    assert repr(r) == "tensor([[1, 2, 1, 2, 1, 2],\n        [1, 2, 1, 2, 1, 2]])"
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert x.repeat(2, 3).tolist() == [[1, 2, 3, 1, 2, 3, 1, 2, 3], [4, 5, 6, 4, 5, 6, 4, 5, 6],
                                       [1, 2, 3, 1, 2, 3, 1, 2, 3], [4, 5, 6, 4, 5, 6, 4, 5, 6]]


def test_linspace_arange():
    assert repr(torch.linspace(0, 2, steps=4)) == "tensor([0.0000, 0.6667, 1.3333, 2.0000])"
    assert repr(torch.arange(0, 10, step=2)) == "tensor([0, 2, 4, 6, 8])"


def test_is_contiguous():
    x = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert x.is_contiguous()
    assert not x.t().is_contiguous()
    assert x.t().contiguous().is_contiguous()


def test_none_indexing_unsqueeze():
    x = torch.tensor([[3, 2, 1], [4, 5, 6]], dtype=torch.float32)
    y = x[None]
    assert repr(y) == "tensor([[[3., 2., 1.],\n         [4., 5., 6.]]])"
    assert y.shape == (1, 2, 3)
    y = x[:, None]
    assert repr(y) == "tensor([[[3., 2., 1.]],\n\n        [[4., 5., 6.]]])"
    assert y.shape == (2, 1, 3)
    y = x[:, :, None]
    assert y.shape == (2, 3, 1)
    assert repr(y) == ("tensor([[[3.],\n         [2.],\n         [1.]],\n\n"
                       "        [[4.],\n         [5.],\n         [6.]]])")


def test_flatten_unflatten():
    x = torch.tensor([[[[1, 2], [3, 4]], [[5, 6], [7, 8]]]])
    assert x.shape == (1, 2, 2, 2)
    y = torch.flatten(x)
    assert y.shape == (8,) and repr(y) == "tensor([1, 2, 3, 4, 5, 6, 7, 8])"
    z = torch.flatten(x, start_dim=1, end_dim=2)
    assert z.shape == (1, 4, 2)
    w = z.unflatten(dim=1, sizes=(2, 2))
    assert w.shape == (1, 2, 2, 2)
    assert np.array_equal(w.numpy(), x.numpy())


def test_backward_polynomial():
    x = torch.tensor([2.0, 3.0], requires_grad=True)
    (x ** 2 + 2 * x).sum().backward()
    assert repr(x.grad) == "tensor([6., 8.])"


def test_generator_reset_reproduces():
    g = torch.Generator().manual_seed(42)
    p1 = torch.randperm(10, generator=g)
    p2 = torch.randperm(10, generator=g)
    g.manual_seed(42)
    p3 = torch.randperm(10, generator=g)
    assert p1.tolist() == p3.tolist()
    assert p1.tolist() != p2.tolist()
    g1 = torch.Generator().manual_seed(7)
    g2 = torch.Generator().manual_seed(7)
    a = torch.rand(2, generator=g1)
    b = torch.rand(2, generator=g1)
    c = torch.rand(2, generator=g2)
    assert torch.equal(a, c) and not torch.equal(a, b)


def test_max_sort_mm_on_printed_matrices():
    t = torch.tensor([[20, 95, 9, 94], [97, 61, 80, 67], [76, 66, 64, 65]])
    assert repr(t.max(0)) == ("torch.return_types.max(\nvalues=tensor([97, 95, 80, 94]),\n"
                              "indices=tensor([1, 0, 1, 0]))")
    assert repr(t.argmax(0)) == "tensor([1, 0, 1, 0])"
    assert repr(t.sort(-1, descending=True)) == (
        "torch.return_types.sort(\n"
        "values=tensor([[95, 94, 20,  9],\n        [97, 80, 67, 61],\n        [76, 66, 65, 64]]),\n"
        "indices=tensor([[1, 3, 0, 2],\n        [0, 2, 3, 1],\n        [0, 1, 3, 2]]))")
    a = torch.ones(2, 3, 4)
    assert t.float().mean([0, 1]).shape == ()
    assert torch.stack([a[0], a[0], a[0]], -1).shape == (3, 4, 3)
    assert torch.cat([a[0], a[0], a[0]], -1).shape == (3, 12)


def test_split_chunk_printed():
    t = torch.tensor([[8, 9, 5, 3, 6, 7], [1, 4, 2, 2, 7, 1], [5, 2, 5, 7, 2, 7]])
    parts = t.split([1, 2, 3], -1)
    assert [p.tolist() for p in parts] == [[[8], [1], [5]], [[9, 5], [4, 2], [2, 5]],
                                           [[3, 6, 7], [2, 7, 1], [7, 2, 7]]]
    assert repr(parts[0]) == "tensor([[8],\n        [1],\n        [5]])"
    assert [p.tolist() for p in t.split(3, -1)] == [[[8, 9, 5], [1, 4, 2], [5, 2, 5]],
                                                    [[3, 6, 7], [2, 7, 1], [7, 2, 7]]]
    assert [p.tolist() for p in t.chunk(3, -1)] == [[[8, 9], [1, 4], [5, 2]],
                                                    [[5, 3], [2, 2], [5, 7]],
                                                    [[6, 7], [7, 1], [2, 7]]]


def test_autograd_intro_example():
    x = torch.ones(2, 2, requires_grad=True)
    y = x + 2
    z = y * y * 3
    out = z.mean()
    assert repr(z) == "tensor([[27., 27.],\n        [27., 27.]], grad_fn=<MulBackward0>)"
    assert repr(out) == "tensor(27., grad_fn=<MeanBackward0>)"
    out.backward()
    assert repr(x.grad) == "tensor([[4.5000, 4.5000],\n        [4.5000, 4.5000]])"


def test_dtype_type_shape_and_int_view():
    a = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    assert (repr(a.dtype), a.type(), repr(a.shape)) == \
        ("torch.float32", "torch.FloatTensor", "torch.Size([2, 2])")
    t = torch.tensor([0, 0, 0, 0, -1, 1, 0, 2, 0, 2, 0, 0], dtype=torch.int32).view(3, 4)
    assert t.nelement() == 12 and t.ndimension() == 2
    assert t.view(4, 3).shape == (4, 3) and t.view(-1, 3).shape == (4, 3)
    assert repr(t.view(12)) == ("tensor([ 0,  0,  0,  0, -1,  1,  0,  2,  0,  2,  0,  0], "
                                "dtype=torch.int32)")
    assert torch.randn(3, 3).to(torch.int).dtype is torch.int32


def test_elementwise_inplace_broadcast_examples():
    x = torch.tensor([3, 2, 1])
    y = torch.tensor([1, 2, 3])
    assert (x + y).tolist() == [4, 4, 4] and (x - y).tolist() == [2, 0, -2]
    assert (x * y).tolist() == [3, 4, 3]
    assert repr(x / y) == "tensor([3.0000, 1.0000, 0.3333])"
    x = torch.tensor([10, 20, 30], dtype=torch.float32)
    x.add_(2)
    x.sub_(3)
    x.mul_(5)
    x.div_(2)
    assert repr(x) == "tensor([22.5000, 47.5000, 72.5000])"
    a = torch.tensor([1, 2, 3])
    b = torch.tensor([10])
    assert (a + b.repeat(3)).tolist() == [11, 12, 13] == (a + b).tolist()
    b2 = torch.tensor([4, 5, 6])
    assert torch.stack([a, b2], dim=0).shape == (2, 3)
    assert torch.cat([a, b2], dim=0).shape == (6,)


def test_scalar_derivative_and_no_grad_error():
    x = torch.tensor(2.0, requires_grad=True)
    y = x ** 2 + 2 * x + 2
    y.backward()
    assert repr(x.grad) == "tensor(6.)"
    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = x * 2
    assert y.requires_grad
    y.sum().backward()
    with torch.no_grad():
        z = x * 2
        assert not z.requires_grad
    with pytest.raises(RuntimeError):
        z.sum().backward()
