"""RNN, LSTM, GRU (multi-layer, bidirectional, batch_first) and their cells.

A layer direction is: one matmul for every step's input projection, then one
recurrent scan op (``lstm_scan``/``gru_scan``/``rnn_scan`` in ir/ops/recurrent.py,
served by the native step kernels of kernels/cpu/recurrent.py: a BLAS matmul and
one fused gate kernel per step) whose backward runs the loop in reverse and
leaves the weight gradients to single large matmuls. Parameter names, shapes,
gate order (LSTM i, f, g, o; GRU r, z, n) and initialisation follow torch.
"""
from __future__ import annotations

import math

import numpy as np

import kernels.cpu.recurrent  # noqa: F401  (native step kernels serve the scan ops)

from ... import _creation
from ..._functions import cat, stack
from ..._tensor import Tensor, apply_op
from .. import functional as F
from .. import init
from ..parameter import Parameter
from .module import Module

_GATES = {"LSTM": 4, "GRU": 3, "RNN_TANH": 1, "RNN_RELU": 1}


def _proj(x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
    """(T, B, I) @ W^T (+ b) as one (T*B, I) matmul."""
    t, bsz, i = x.shape
    out = apply_op("matmul", (x.reshape(t * bsz, i), apply_op("permute", (w,), {"dims": (1, 0)})))
    if b is not None:
        out = apply_op("add", (out, b))
    return out.reshape(t, bsz, w.shape[0])


class RNNBase(Module):
    """Shared constructor, parameter layout and the layer/direction loop."""

    def __init__(self, mode: str, input_size: int, hidden_size: int, num_layers: int = 1,
                 bias: bool = True, batch_first: bool = False, dropout: float = 0.0,
                 bidirectional: bool = False, proj_size: int = 0, device=None,
                 dtype=None) -> None:
        super().__init__()
        if not isinstance(proj_size, int) or isinstance(proj_size, bool) or proj_size < 0:
            raise ValueError("proj_size should be a positive integer or zero to disable "
                             "projections")
        if proj_size and mode != "LSTM":
            raise ValueError("proj_size argument is only supported for LSTM, not RNN or GRU")
        if proj_size >= hidden_size:
            raise ValueError("proj_size has to be smaller than hidden_size")
        if not 0 <= dropout <= 1:
            raise ValueError("dropout should be a number in range [0, 1] representing the "
                             "probability of an element being zeroed")
        if hidden_size <= 0:
            raise ValueError("hidden_size must be greater than zero")
        if num_layers <= 0:
            raise ValueError("num_layers must be greater than zero")
        self.mode = mode
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first = bias, batch_first
        self.dropout, self.bidirectional = float(dropout), bidirectional
        self.proj_size = proj_size
        ndir = 2 if bidirectional else 1
        gate = _GATES[mode] * hidden_size
        real_hidden = proj_size or hidden_size  # what h carries between steps and layers
        self._flat_weights_names = []
        for layer in range(num_layers):
            for d in range(ndir):
                lin = input_size if layer == 0 else real_hidden * ndir
                sfx = f"_l{layer}" + ("_reverse" if d else "")
                params = [("weight_ih" + sfx, (gate, lin)),
                          ("weight_hh" + sfx, (gate, real_hidden))]
                if bias:
                    params += [("bias_ih" + sfx, (gate,)), ("bias_hh" + sfx, (gate,))]
                if proj_size:
                    params.append(("weight_hr" + sfx, (proj_size, hidden_size)))
                for name, shape in params:
                    setattr(self, name, Parameter(_creation.empty(shape, dtype=dtype)))
                    self._flat_weights_names.append(name)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        stdv = 1.0 / math.sqrt(self.hidden_size) if self.hidden_size > 0 else 0
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    @property
    def all_weights(self):
        k = (4 if self.bias else 2) + (1 if self.proj_size else 0)
        return [[getattr(self, n) for n in self._flat_weights_names[i:i + k]]
                for i in range(0, len(self._flat_weights_names), k)]

    def flatten_parameters(self) -> None:
        """No-op (torch uses it for cuDNN)."""

    def _layer_params(self, layer: int, d: int):
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        w_ih, w_hh = getattr(self, "weight_ih" + sfx), getattr(self, "weight_hh" + sfx)
        b_ih = getattr(self, "bias_ih" + sfx) if self.bias else None
        b_hh = getattr(self, "bias_hh" + sfx) if self.bias else None
        return w_ih, w_hh, b_ih, b_hh

    def _check(self, input: Tensor, hx, name: str):
        if isinstance(input, tuple) or type(input).__name__ == "PackedSequence":
            raise NotImplementedError(f"{name}: PackedSequence input is not supported; pad the "
                                      "batch (nn.utils.rnn.pad_sequence) instead")
        if input.dim() not in (2, 3):
            raise ValueError(f"{name}: Expected input to be 2D or 3D, got {input.dim()}D input "
                             f"of shape {tuple(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"{name} expected input with {self.input_size} features "
                               f"(input_size), got shape {tuple(input.shape)}")

    def _run(self, input: Tensor, states, step):
        """Shared driver: ``step(x, layer, d, state) -> (out (T,B,H), new_state)``."""
        ndir = 2 if self.bidirectional else 1
        x = input
        finals = []
        for layer in range(self.num_layers):
            outs = []
            for d in range(ndir):
                idx = layer * ndir + d
                xi = x.flip(0) if d else x
                out, fin = step(xi, layer, d, [s[idx] for s in states])
                outs.append(out.flip(0) if d else out)
                finals.append(fin)
            x = outs[0] if ndir == 1 else cat(outs, dim=2)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        return x, finals

    def _prepare(self, input: Tensor, hx, name: str, n_states: int):
        self._check(input, hx, name)
        batched = input.dim() == 3
        if not batched:
            input = input.unsqueeze(1)
        elif self.batch_first:
            input = input.transpose(0, 1)
        bsz = input.shape[1]
        ndir = 2 if self.bidirectional else 1
        # h carries proj_size features when LSTM projects; c keeps hidden_size
        sizes = [self.proj_size or self.hidden_size] + [self.hidden_size] * (n_states - 1)
        wants = [(self.num_layers * ndir, bsz, n) for n in sizes]
        if hx is None:
            states = [_creation.zeros(w, dtype=input.dtype) for w in wants]
        else:
            states = list(hx) if isinstance(hx, (tuple, list)) else [hx]
            if len(states) != n_states:
                raise RuntimeError(f"{name}: expected {n_states} initial state tensor(s), got "
                                   f"{len(states)}")
            fixed = []
            for s, want in zip(states, wants):
                if not batched:
                    if s.dim() != 2:
                        raise RuntimeError(f"For unbatched 2-D input, hx should also be 2-D but "
                                           f"got {s.dim()}-D tensor")
                    s = s.unsqueeze(1)
                if tuple(s.shape) != want:
                    raise RuntimeError(f"Expected hidden size {want}, got {list(s.shape)}")
                fixed.append(s)
            states = fixed
        return input, states, batched

    def _finish(self, out: Tensor, finals, batched: bool):
        if not batched:
            out = out.squeeze(1)
        elif self.batch_first:
            out = out.transpose(0, 1)
        stacked = []
        for k in range(len(finals[0])):
            s = stack([f[k] for f in finals], 0)
            stacked.append(s.squeeze(1) if not batched else s)
        return out, stacked

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if not self.bias:
            s += ", bias=False"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        if self.proj_size:
            s += f", proj_size={self.proj_size}"
        return s


class RNN(RNNBase):
    """Elman RNN: h_t = tanh(x W_ih^T + b_ih + h W_hh^T + b_hh) (or relu)."""

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 nonlinearity: str = "tanh", bias: bool = True, batch_first: bool = False,
                 dropout: float = 0.0, bidirectional: bool = False, device=None,
                 dtype=None) -> None:
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"Unknown nonlinearity '{nonlinearity}'. Select from 'tanh' or "
                             "'relu'.")
        self.__dict__["nonlinearity"] = nonlinearity
        super().__init__("RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU", input_size,
                         hidden_size, num_layers, bias, batch_first, dropout, bidirectional,
                         device=device, dtype=dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None):
        x, states, batched = self._prepare(input, hx, "RNN", 1)

        def step(xi, layer, d, st):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, d)
            xw = _proj(xi, w_ih, b_ih)
            if b_hh is not None:
                xw = apply_op("add", (xw, b_hh))
            out = apply_op("rnn_scan", (xw, st[0], w_hh), {"nonlinearity": self.nonlinearity})
            return out, (out[-1],)

        out, finals = self._run(x, states, step)
        out, (h_n,) = self._finish(out, finals, batched)
        return out, h_n

    def extra_repr(self) -> str:
        s = super().extra_repr()
        return s + (", nonlinearity='relu'" if self.nonlinearity == "relu" else "")


class LSTM(RNNBase):
    """LSTM with torch's gate order (i, f, g, o); returns output, (h_n, c_n)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("LSTM", *args, **kwargs)

    def forward(self, input: Tensor, hx=None):
        x, states, batched = self._prepare(input, hx, "LSTM", 2)

        def step(xi, layer, d, st):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, d)
            if self.proj_size:
                return self._projected_steps(xi, layer, d, st)
            xw = _proj(xi, w_ih, None)
            # both biases ride in the scan: one small add per step, one reduction back
            bias = apply_op("add", (b_ih, b_hh)) if b_ih is not None else \
                Tensor._make(np.zeros(4 * self.hidden_size, xw.dtype.np))
            packed = apply_op("lstm_scan", (xw, st[0], st[1], w_hh, bias))    # (7, T, B, H)
            hs = apply_op("select_block", (packed,), {"index": 0})
            cs = apply_op("select_block", (packed,), {"index": 1})
            return hs, (hs[-1], cs[-1])

        out, finals = self._run(x, states, step)
        out, (h_n, c_n) = self._finish(out, finals, batched)
        return out, (h_n, c_n)

    def _projected_steps(self, xi: Tensor, layer: int, d: int, st):
        """LSTM with a projection (proj_size): h_t = W_hr (o_t * tanh(c_t)), so the
        recurrence runs on the projected h. The time loop is ordinary ops (traced into
        the graph like any other code); the fused scan serves the unprojected case."""
        w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, d)
        sfx = f"_l{layer}" + ("_reverse" if d else "")
        w_hr = getattr(self, "weight_hr" + sfx)
        xw = _proj(xi, w_ih, b_ih)
        h, c = st
        w_hh_t = apply_op("permute", (w_hh,), {"dims": (1, 0)})
        w_hr_t = apply_op("permute", (w_hr,), {"dims": (1, 0)})
        outs = []
        for t in range(xi.shape[0]):
            g = apply_op("add", (xw[t], apply_op("matmul", (h, w_hh_t))))
            if b_hh is not None:
                g = apply_op("add", (g, b_hh))
            i, f, gg, o = g.chunk(4, 1)
            c = f.sigmoid() * c + i.sigmoid() * gg.tanh()
            h = apply_op("matmul", (o.sigmoid() * c.tanh(), w_hr_t))
            outs.append(h)
        return stack(outs, 0), (h, c)


class GRU(RNNBase):
    """GRU with torch's gate order (r, z, n); n = tanh(W_in x + b_in + r*(W_hn h + b_hn))."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__("GRU", *args, **kwargs)

    def forward(self, input: Tensor, hx: Tensor | None = None):
        x, states, batched = self._prepare(input, hx, "GRU", 1)
        h = self.hidden_size

        def step(xi, layer, d, st):
            w_ih, w_hh, b_ih, b_hh = self._layer_params(layer, d)
            xw = _proj(xi, w_ih, b_ih)
            if b_hh is None:
                b_hh = Tensor._make(np.zeros(3 * h, xw.dtype.np))
            packed = apply_op("gru_scan", (xw, st[0], w_hh, b_hh))      # (5, T, B, H)
            hs = apply_op("select_block", (packed,), {"index": 0})
            return hs, (hs[-1],)

        out, finals = self._run(x, states, step)
        out, (h_n,) = self._finish(out, finals, batched)
        return out, h_n


# ---- cells ---------------------------------------------------------------------------
class RNNCellBase(Module):
    def __init__(self, input_size: int, hidden_size: int, bias: bool, num_chunks: int,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = Parameter(_creation.empty((num_chunks * hidden_size, input_size),
                                                   dtype=dtype))
        self.weight_hh = Parameter(_creation.empty((num_chunks * hidden_size, hidden_size),
                                                   dtype=dtype))
        if bias:
            self.bias_ih = Parameter(_creation.empty(num_chunks * hidden_size, dtype=dtype))
            self.bias_hh = Parameter(_creation.empty(num_chunks * hidden_size, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        stdv = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0
        for w in self.parameters():
            init.uniform_(w, -stdv, stdv)

    def _check(self, input: Tensor, name: str) -> None:
        """torch's checks and messages for a cell's input."""
        if input.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected input to be 1D or 2D, got {input.dim()}D "
                             "instead")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"input has inconsistent input_size: got {input.shape[-1]} "
                               f"expected {self.input_size}")

    def _check_hidden(self, input: Tensor, hx: Tensor, name: str,
                      hname: str = "hidden0") -> None:
        if hx.dim() not in (1, 2):
            raise ValueError(f"{name}: Expected hidden to be 1D or 2D, got {hx.dim()}D instead")
        if input.dim() == 2 and (hx.dim() != 2 or input.shape[0] != hx.shape[0]):
            raise RuntimeError(f"Input batch size {input.shape[0]} doesn't match {hname} batch "
                               f"size {hx.shape[0] if hx.dim() == 2 else 1}")
        if hx.shape[-1] != self.hidden_size:
            raise RuntimeError(f"{hname} has inconsistent hidden_size: got {hx.shape[-1]}, "
                               f"expected {self.hidden_size}")

    def extra_repr(self) -> str:
        s = f"{self.input_size}, {self.hidden_size}"
        if not self.bias:
            s += ", bias=False"
        return s


class RNNCell(RNNCellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True,
                 nonlinearity: str = "tanh", device=None, dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, 1, device, dtype)
        self.nonlinearity = nonlinearity

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        self._check(input, "RNNCell")
        if hx is None:
            hx = _creation.zeros(tuple(input.shape[:-1]) + (self.hidden_size,), dtype=input.dtype)
        self._check_hidden(input, hx, "RNNCell")
        pre = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(hx, self.weight_hh,
                                                                       self.bias_hh)
        return pre.tanh() if self.nonlinearity == "tanh" else pre.relu()


class LSTMCell(RNNCellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, 4, device, dtype)

    def forward(self, input: Tensor, hx=None):
        self._check(input, "LSTMCell")
        if hx is None:
            z = _creation.zeros(tuple(input.shape[:-1]) + (self.hidden_size,), dtype=input.dtype)
            hx = (z, z)
        if not isinstance(hx, (tuple, list)) or len(hx) != 2:
            raise ValueError("LSTMCell: Expected hx to be a tuple of (h_0, c_0)")
        h, c = hx
        self._check_hidden(input, h, "LSTMCell", "hidden0")
        self._check_hidden(input, c, "LSTMCell", "hidden1")
        gates = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh,
                                                                         self.bias_hh)
        i, f, g, o = gates.chunk(4, -1)
        c2 = f.sigmoid() * c + i.sigmoid() * g.tanh()
        return o.sigmoid() * c2.tanh(), c2


class GRUCell(RNNCellBase):
    def __init__(self, input_size: int, hidden_size: int, bias: bool = True, device=None,
                 dtype=None) -> None:
        super().__init__(input_size, hidden_size, bias, 3, device, dtype)

    def forward(self, input: Tensor, hx: Tensor | None = None) -> Tensor:
        self._check(input, "GRUCell")
        if hx is None:
            hx = _creation.zeros(tuple(input.shape[:-1]) + (self.hidden_size,), dtype=input.dtype)
        self._check_hidden(input, hx, "GRUCell")
        gi = F.linear(input, self.weight_ih, self.bias_ih)
        gh = F.linear(hx, self.weight_hh, self.bias_hh)
        ir, iz, in_ = gi.chunk(3, -1)
        hr, hz, hn = gh.chunk(3, -1)
        r = (ir + hr).sigmoid()
        z = (iz + hz).sigmoid()
        n = (in_ + r * hn).tanh()
        return (1.0 - z) * n + z * hx
