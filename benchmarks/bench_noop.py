"""No-op ``dvc repro`` and ``dvc status`` of a finished workspace, with ruamel.yaml's C parser
(``ruamel.yaml.clib``, a dependency since issue #19) and with its pure-Python parser, side by side.

    python benchmarks/bench_noop.py --workdir DIR [--reps 7]

``DIR`` is a workspace where ``dvc repro`` has finished (e.g. the clone of ``bench_repro.py``).
The pure-Python contender runs DVC in a process where ``_ruamel_yaml`` cannot be imported, as
without the package; both run the same DVC on the same files, in rotated order. Not part of
``make bench``: it needs a finished workspace. Writes benchmarks/results/noop_yaml.json.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import common

#: DVC's command line in a fresh process; {hide} makes ruamel.yaml fall back to its Python parser
DVC = "import sys{hide}; from dvc.cli import main; sys.exit(main({args!r}))"
HIDE_C_PARSER = "; sys.modules['_ruamel_yaml'] = None"


def dvc(workdir: Path, args: list[str], c_parser: bool) -> dict[str, float]:
    """Seconds of one DVC command: wall, and CPU of the DVC process and the stages it ran."""
    code = DVC.format(hide="" if c_parser else HIDE_C_PARSER, args=args)
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, check=False)
    wall, after = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_CHILDREN)
    if out.returncode not in (0, 1) or (args[0] == "repro" and out.returncode != 0):  # status exits 1 when stale
        raise SystemExit(f"dvc {' '.join(args)} failed in {workdir}:\n{out.stdout}{out.stderr}")
    return {"wall": wall, "cpu": (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, required=True, help="a workspace where `dvc repro` has finished")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    import _ruamel_yaml  # noqa: F401  (the C parser must be installed for the comparison)

    result = {"machine": common.machine(), "workdir": str(args.workdir), "reps": args.reps}
    for command in (["repro", "-q"], ["status", "-q"]):
        times = common.interleaved({
            "c_parser": lambda command=command: dvc(args.workdir, command, True),
            "pure_python": lambda command=command: dvc(args.workdir, command, False),
        }, args.reps)
        summary = common.summarise(times, baseline="c_parser")
        common.print_ratios(f"dvc {command[0]} (no-op)", summary)
        result[f"dvc_{command[0]}"] = summary
    if not args.no_write:
        print(f"  wrote {common.write_result('noop_yaml', result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
