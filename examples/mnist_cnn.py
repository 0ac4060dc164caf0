"""A small MNIST-style CNN, trained with one compiled step, on synthetic digits.

    python examples/mnist_cnn.py            # a few epochs
    python examples/mnist_cnn.py --smoke    # seconds: what CI runs

The data is synthetic (each class is a noisy template image), so the script needs
no download; swap in real MNIST tensors of shape [N, 1, 28, 28] to train on it.
"""
from __future__ import annotations

import argparse
import time

import gcompile as torch
from gcompile import nn
from gcompile.utils.data import DataLoader, TensorDataset


def synthetic_digits(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` 28x28 images: a fixed random template per class plus noise."""
    templates = torch.randn(10, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    images = templates[labels] + 0.5 * torch.randn(n, 1, 28, 28, generator=generator)
    return images, labels


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.1), nn.Linear(32 * 7 * 7, 10))

    def forward(self, x):
        return self.classifier(self.features(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--smoke", action="store_true", help="tiny run for CI")
    args = ap.parse_args()
    n, epochs, batch = (256, 1, 32) if args.smoke else (4096, args.epochs, 64)

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x, y = synthetic_digits(n, g)
    loader = DataLoader(TensorDataset(x, y), batch_size=batch, shuffle=True, drop_last=True,
                        generator=g)
    model = Net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    @torch.compile
    def train_step(xb, yb):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    for epoch in range(epochs):
        t0 = time.perf_counter()
        model.train()
        total = 0.0
        for xb, yb in loader:
            total += train_step(xb, yb).item()
        model.eval()
        with torch.no_grad():
            acc = (model(x).argmax(1) == y).float().mean().item()
        print(f"epoch {epoch}: loss {total / len(loader):.4f}, accuracy {acc:.3f}, "
              f"{time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
