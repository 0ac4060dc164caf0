"""An LSTM language model on a synthetic "grammar", compiled module + eager optimizer.

    python examples/lstm_lm.py            # a few hundred steps
    python examples/lstm_lm.py --smoke    # seconds: what CI runs

The token stream repeats short random phrases, so the next token is predictable
and the loss falls well below uniform; swap in real token ids to train on text.
"""
from __future__ import annotations

import argparse
import math
import time

import gcompile as torch
from gcompile import nn


class LSTMLanguageModel(nn.Module):
    def __init__(self, vocab: int, d: int, layers: int = 1) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, d, num_layers=layers, batch_first=True)
        self.head = nn.Linear(d, vocab)

    def forward(self, idx):
        h, _ = self.lstm(self.emb(idx))
        return self.head(h)


def phrase_stream(vocab: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` tokens made of 8 random phrases of 6 tokens, in random order."""
    phrases = torch.randint(0, vocab, (8, 6), generator=generator)
    order = torch.randint(0, 8, (n // 6 + 1,), generator=generator)
    return phrases[order].reshape(-1)[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = ap.parse_args()
    vocab, d, seq, batch = 32, (32 if args.smoke else 128), 24, (4 if args.smoke else 16)
    steps = 3 if args.smoke else args.steps

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = phrase_stream(vocab, 20000, g)
    model = LSTMLanguageModel(vocab, d)
    cmodel = torch.compile(model)  # forward and backward run as compiled plans
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    crit = nn.CrossEntropyLoss()

    t0 = time.perf_counter()
    for step in range(steps):
        ix = torch.randint(0, len(data) - seq - 1, (batch,), generator=g).tolist()
        x = torch.stack([data[i:i + seq] for i in ix])
        y = torch.stack([data[i + 1:i + seq + 1] for i in ix])
        opt.zero_grad()
        loss = crit(cmodel(x).reshape(-1, vocab), y.reshape(-1))
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"step {step}: loss {loss.item():.3f} (uniform {math.log(vocab):.3f}), "
                  f"perplexity {math.exp(loss.item()):.1f}, {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
