"""torch -> gcompile conversion for the conformance suite: tensors go through NumPy,
classes and functions are looked up by name, and the few torch modules passed as
constructor arguments (a TransformerEncoder's layer) are rebuilt from their attributes."""
from __future__ import annotations

import numpy as np

import gcompile
import gcompile.nn as gnn
import gcompile.nn.functional as GF


def to_numpy(t) -> np.ndarray:
    """A torch or gcompile tensor as a NumPy array (detached)."""
    if isinstance(t, np.ndarray):
        return t
    return np.array(t.detach().cpu().numpy() if hasattr(t, "cpu") else t.detach().numpy())


def _rebuild_module(m):
    """A gcompile module equivalent to the torch module ``m`` (constructor arguments
    read back from its attributes)."""
    name = type(m).__name__
    if name in ("TransformerEncoderLayer", "TransformerDecoderLayer"):
        act = m.activation
        act = act if isinstance(act, str) else getattr(act, "__name__", type(act).__name__)
        act = getattr(GF, act.lower(), None) if act.lower() not in ("relu", "gelu") else act.lower()
        return getattr(gnn, name)(
            m.self_attn.embed_dim, m.self_attn.num_heads,
            dim_feedforward=m.linear1.out_features, dropout=m.dropout.p, activation=act,
            layer_norm_eps=m.norm1.eps, batch_first=m.self_attn.batch_first,
            norm_first=m.norm_first, bias=m.linear1.bias is not None)
    if name == "LayerNorm":
        return gnn.LayerNorm(m.normalized_shape, eps=m.eps,
                             elementwise_affine=m.elementwise_affine, bias=m.bias is not None)
    raise NotImplementedError(f"no conversion for a torch {name} argument")


def convert(v, requires_grad: bool | None = None):
    """A torch value (tensor, dtype, module, function, container) as gcompile's."""
    import torch
    if isinstance(v, torch.Tensor):
        t = gcompile.tensor(to_numpy(v))
        rg = v.requires_grad if requires_grad is None else requires_grad
        if rg and t.is_floating_point():
            t.requires_grad_(True)
        return t
    if isinstance(v, torch.dtype):
        return getattr(gcompile, str(v).split(".")[-1])
    if isinstance(v, torch.device):
        return str(v)
    if isinstance(v, torch.nn.Module):
        return _rebuild_module(v)
    if callable(v) and getattr(v, "__module__", "").startswith("torch"):
        return getattr(GF, v.__name__)
    if isinstance(v, tuple):
        return tuple(convert(a, requires_grad) for a in v)
    if isinstance(v, list):
        return [convert(a, requires_grad) for a in v]
    if isinstance(v, dict):
        return {k: convert(a, requires_grad) for k, a in v.items()}
    return v


def flatten(v, out: list) -> list:
    """The tensors of a (nested) output, in order."""
    if isinstance(v, (list, tuple)):
        for a in v:
            flatten(a, out)
    elif isinstance(v, dict):
        for a in v.values():
            flatten(a, out)
    elif v is not None and hasattr(v, "shape") and hasattr(v, "detach"):
        out.append(v)
    return out
