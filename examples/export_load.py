"""Export a trained model to one file and run it in a process without the model's code.

    python examples/export_load.py            # export, save, load in a new process, compare
    python examples/export_load.py --smoke    # the same, smaller: what CI runs

``gcompile.export(model, x)`` traces the model into a graph; ``ep.save(path)``
writes graph, weights and kernels to a single checkpoint file (safetensors + JSON,
no pickle); ``gcompile.load(path)`` gives the program back, callable like the model.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import gcompile as torch
from gcompile import nn

LOADER = """
import sys
import numpy as np
import gcompile as torch
ep = torch.load(sys.argv[1])                  # no model class needed here
x = torch.from_numpy(np.load(sys.argv[2]))
np.save(sys.argv[3], ep(x).numpy())
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="smaller model, for CI")
    args = ap.parse_args()
    if not hasattr(torch, "export") or not callable(torch.export):
        print("skipped: this gcompile has no gcompile.export yet")
        return 0
    width = 32 if args.smoke else 256
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, width), nn.GELU(), nn.LayerNorm(width),
                          nn.Linear(width, 5)).eval()
    x = torch.randn(8, 20)
    ep = torch.export(model, x)
    import numpy as np
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.gcp")
        ep.save(path)
        print(f"exported to {path}: {os.path.getsize(path)} bytes")
        np.save(os.path.join(tmp, "x.npy"), x.numpy())
        out = os.path.join(tmp, "y.npy")
        subprocess.run([sys.executable, "-c", LOADER, path, os.path.join(tmp, "x.npy"), out],
                       check=True)
        got = np.load(out)
    with torch.no_grad():
        want = model(x).numpy()
    err = float(np.max(np.abs(got - want)))
    print(f"loaded in a new process; max |loaded - eager| = {err:.2e}")
    if err > 1e-4:
        print("MISMATCH")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
