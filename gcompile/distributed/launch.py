"""``gcompile run -n N script.py``: a thin wrapper around the MPI launcher.

``mpiexec -n N python script.py`` needs nothing else; this finds ``mpiexec`` (the
one next to the running Python first, as the ``mpich`` wheel installs it there),
runs the script under this same Python, and returns the launcher's exit code.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

LAUNCHERS = ("mpiexec", "mpirun")


def find_launcher() -> str:
    """Path of mpiexec/mpirun: $GCOMPILE_MPIEXEC, next to sys.executable, then PATH."""
    env = os.environ.get("GCOMPILE_MPIEXEC")
    if env:
        if shutil.which(env) is None:
            raise FileNotFoundError(f"GCOMPILE_MPIEXEC={env!r} is not an executable")
        return shutil.which(env)
    here = os.path.dirname(sys.executable)
    for name in LAUNCHERS:
        cand = os.path.join(here, name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    for name in LAUNCHERS:
        found = shutil.which(name)
        if found:
            return found
    raise FileNotFoundError("no MPI launcher (mpiexec or mpirun) found; install one with: "
                            "pip install 'gcompile[distributed]'")


def build_command(nproc: int, script: str, script_args: list[str], launcher: str,
                  launcher_args: list[str] | None = None) -> list[str]:
    """The launcher command line that runs ``script`` on ``nproc`` ranks."""
    if nproc < 1:
        raise ValueError(f"-n must be at least 1, got {nproc}")
    return [launcher, "-n", str(nproc), *(launcher_args or []), sys.executable, script,
            *script_args]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gcompile run",
                                description="run a script on N MPI ranks (wraps mpiexec)")
    p.add_argument("-n", "--nproc", type=int, default=1, help="number of processes")
    p.add_argument("--launcher-arg", action="append", default=[], dest="launcher_args",
                   help="extra argument passed to mpiexec (repeatable)")
    p.add_argument("--dry-run", action="store_true", help="print the command, do not run it")
    p.add_argument("script", help="the Python script")
    p.add_argument("args", nargs=argparse.REMAINDER, help="the script's arguments")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``gcompile run``: returns the launcher's exit code."""
    ns = _parser().parse_args(argv)
    try:
        launcher = find_launcher()
        cmd = build_command(ns.nproc, ns.script, ns.args, launcher, ns.launcher_args)
    except (FileNotFoundError, ValueError) as e:
        print(f"gcompile run: {e}", file=sys.stderr)
        return 2
    if ns.dry_run:
        print(" ".join(cmd))
        return 0
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
