"""pad_sequence (and its inverse unpad_sequence)."""
from __future__ import annotations

from collections.abc import Sequence

from ..._functions import stack
from ..._tensor import Tensor
from .. import functional as F


def pad_sequence(sequences: Sequence[Tensor], batch_first: bool = False,
                 padding_value: float = 0.0, padding_side: str = "right") -> Tensor:
    """Stack variable-length (L_i, *) tensors into (L_max, B, *) (or (B, L_max, *)),
    filling with ``padding_value``; differentiable (built from pad + stack)."""
    if not sequences:
        raise RuntimeError("received an empty list of sequences")
    if padding_side not in ("left", "right"):
        raise ValueError(f"Expected padding_side to be one of left or right, but got "
                         f"{padding_side}.")
    trailing = tuple(sequences[0].shape[1:])
    for s in sequences:
        if tuple(s.shape[1:]) != trailing:
            raise RuntimeError(f"pad_sequence: all sequences must have the same trailing shape; "
                               f"got {trailing} and {tuple(s.shape[1:])}")
    max_len = max(s.shape[0] for s in sequences)
    padded = []
    for s in sequences:
        extra = max_len - s.shape[0]
        pads = [0, 0] * len(trailing) + ([0, extra] if padding_side == "right" else [extra, 0])
        padded.append(F.pad(s, pads, value=padding_value) if extra else s)
    return stack(padded, 0 if batch_first else 1)


def unpad_sequence(padded_sequences: Tensor, lengths, batch_first: bool = False) -> list[Tensor]:
    if not batch_first:
        padded_sequences = padded_sequences.transpose(0, 1)
    return [padded_sequences[i, :int(n)] for i, n in enumerate(lengths)]


class PackedSequence(tuple):
    """Packed sequences are not supported; pad the batch instead."""

    def __new__(cls, *args, **kwargs):
        raise NotImplementedError("PackedSequence is not supported; use pad_sequence and a "
                                  "padded batch")


def pack_padded_sequence(*args, **kwargs):
    raise NotImplementedError("pack_padded_sequence is not supported; feed the padded batch "
                              "directly (and mask the outputs)")


def pad_packed_sequence(*args, **kwargs):
    raise NotImplementedError("pad_packed_sequence is not supported")


def pack_sequence(*args, **kwargs):
    raise NotImplementedError("pack_sequence is not supported; use pad_sequence")
