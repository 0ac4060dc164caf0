"""runtime.allocator.tune_host_heap: on glibc, eager-sized blocks come from the heap and
stay there between steps (no page faults per step); a user's own malloc settings, or
GCOMPILE_HOST_HEAP=default, leave the C library alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from runtime import allocator

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# a step: three 4 MB activations alive at once, then freed; 40 steps. Prints HOST_HEAP and
# the minor page faults of the last 30 (by default glibc hands the 12 MB freed at the
# heap's top back to the OS at every step, beyond its 8 MB trim threshold by then)
_CHILD = r"""
import json, resource, numpy as np
import gcompile
from runtime.allocator import HOST_HEAP
def rounds(n):
    for _ in range(n):
        acts = [np.empty(1 << 20, np.float32) for _ in range(3)]
        for a in acts:
            a[::1024] = 1.0
        del acts, a
rounds(10)
f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds(30)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
print(json.dumps({"heap": HOST_HEAP, "faults": faults}))
"""


def _child(**env):
    e = {k: v for k, v in os.environ.items()
         if not k.startswith(("MALLOC_", "GLIBC_TUNABLES", "GCOMPILE_HOST_HEAP"))}
    e.update(env)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         env=e, check=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


def _is_glibc() -> bool:
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError, AttributeError):
        return False


glibc = pytest.mark.skipif(not _is_glibc(), reason="glibc's malloc only")


@glibc
def test_blocks_stay_in_the_heap_between_steps():
    tuned = _child()
    assert tuned["heap"]["tuned"]
    default = _child(GCOMPILE_HOST_HEAP="default")
    assert not default["heap"]["tuned"]
    # 12 MB faulted in page by page afresh at every step by default, not when tuned
    assert default["faults"] > 30 * 1500
    assert tuned["faults"] < 30 * 50


@glibc
def test_the_users_malloc_settings_win():
    got = _child(MALLOC_TRIM_THRESHOLD_="1000000")
    assert not got["heap"]["tuned"] and "MALLOC_TRIM_THRESHOLD_" in got["heap"]["why"]


def test_the_state_is_reported():
    assert set(allocator.HOST_HEAP) == {"tuned", "why"} and allocator.HOST_HEAP["why"]
