"""A character-level GPT: trains on a short text with one compiled step, then samples.

    python examples/char_gpt.py                 # a few hundred steps
    python examples/char_gpt.py --text my.txt   # your own text
    python examples/char_gpt.py --smoke         # seconds: what CI runs
"""
from __future__ import annotations

import argparse
import math
import time

import gcompile as torch
import gcompile.nn.functional as F
from gcompile import nn

TEXT = """To be, or not to be, that is the question:
Whether 'tis nobler in the mind to suffer
The slings and arrows of outrageous fortune,
Or to take arms against a sea of troubles
And by opposing end them. To die, to sleep;
No more; and by a sleep to say we end
The heart-ache and the thousand natural shocks
That flesh is heir to: 'tis a consummation
Devoutly to be wish'd. To die, to sleep;
To sleep, perchance to dream: ay, there's the rub.
"""


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.p = heads, dropout
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (z.reshape(b, t, self.heads, d // self.heads).transpose(1, 2)
                   for z in self.qkv(x).split(d, dim=2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.p if self.training else 0.0)
        return self.drop(self.proj(y.transpose(1, 2).reshape(b, t, d)))


class Block(nn.Module):
    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads, dropout)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d),
                                 nn.Dropout(dropout))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int, block: int, d: int, heads: int, layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.block = block
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(block, d)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*[Block(d, heads, dropout) for _ in range(layers)])
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

    def forward(self, idx):
        x = self.drop(self.tok(idx) + self.pos(torch.arange(idx.shape[1])))
        return self.head(self.ln(self.blocks(x)))


@torch.no_grad()
def sample(model: GPT, start: torch.Tensor, n: int, generator: torch.Generator) -> list[int]:
    """Draw ``n`` characters after ``start`` (eager: each call has a new length)."""
    model.eval()
    idx = start
    for _ in range(n):
        logits = model(idx[:, -model.block:])[:, -1, :]
        nxt = torch.multinomial(F.softmax(logits, -1), 1, generator=generator)
        idx = torch.cat([idx, nxt], dim=1)
    return idx[0].tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", help="a text file to train on (default: a built-in verse)")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = ap.parse_args()
    text = open(args.text, encoding="utf-8").read() if args.text else TEXT
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    block, batch, d, layers = (16, 4, 32, 1) if args.smoke else (64, 16, 128, 4)
    steps = 3 if args.smoke else args.steps

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = GPT(len(chars), block, d, heads=4, layers=layers, dropout=0.1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    @torch.compile
    def train_step(x, y):
        opt.zero_grad()
        loss = F.cross_entropy(model(x).reshape(-1, len(chars)), y.reshape(-1))
        loss.backward()
        opt.step()
        return loss

    t0 = time.perf_counter()
    for step in range(steps):
        ix = torch.randint(0, len(data) - block - 1, (batch,), generator=g)
        x = torch.stack([data[i:i + block] for i in ix.tolist()])
        y = torch.stack([data[i + 1:i + block + 1] for i in ix.tolist()])
        model.train()
        loss = train_step(x, y).item()
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"step {step}: loss {loss:.3f} (uniform would be {math.log(len(chars)):.3f}), "
                  f"{time.perf_counter() - t0:.1f} s")
    out = sample(model, data[:1].reshape(1, 1), 20 if args.smoke else 200, g)
    print("sample:", repr("".join(chars[i] for i in out)))


if __name__ == "__main__":
    main()
