"""End-to-end time of the main job: ``dvc repro`` of the committed pipeline in a clean clone,
then the no-op rerun and ``dvc status``; writes benchmarks/results/repro.json.

    python benchmarks/bench_repro.py [--src .] [--workdir DIR] [--export DIR] [--label TEXT]

The clone (``git clone`` of ``--src``'s HEAD: committed files only, no data, no DVC cache)
runs with this Python's environment first on PATH (the ``python`` and ``dvc`` of the
stages). Every line DVC prints is timestamped, so the result has the time of every stage
(from its "Running stage" line to the next) and their sums per kind (``prepare``, ``train``,
``llm_train``, ...). Per-machine caches outside the clone (the converted LLM in
``~/.cache/clsuite``, pip's cache) are used if present and reported as found. ``--export``
copies ``dvc.lock`` and ``reports/metrics/`` of the finished clone there (what a commit of the
results holds). Not part of ``make bench``: it takes as long as ``make repro``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
RUNNING = re.compile(r"^Running stage '([^']+)':")


def stage_kind(name: str) -> str:
    """``train@smnist-replay-0`` → ``train``; ``report`` → ``report``."""
    return name.split("@", 1)[0]


def stage_times(events: list[tuple[float, str]], end: float) -> dict[str, float]:
    """Seconds of every stage DVC ran, from the timestamped lines of its output: a stage lasts
    from its "Running stage" line to the next one (or to ``end``)."""
    starts = [(t, m.group(1)) for t, line in events if (m := RUNNING.match(line))]
    return {name: round(nxt - t, 2) for (t, name), nxt in zip(starts, [s for s, _ in starts[1:]] + [end])}


def timed(cmd: list[str], cwd: Path, env: dict, log) -> tuple[int, float, list[tuple[float, str]]]:
    """Run ``cmd``; (exit code, seconds, [(time since start, line)]) with every line logged."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1)
    events = []
    assert proc.stdout is not None
    for line in proc.stdout:
        t = time.perf_counter() - start
        events.append((t, line.rstrip("\n")))
        log.write(f"{t:9.2f} {line}")
        log.flush()
    return proc.wait(), time.perf_counter() - start, events


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", type=Path, default=HERE.parent, help="the git checkout to clone (its HEAD)")
    ap.add_argument("--workdir", type=Path, help="where to clone (default: a new temporary folder, kept)")
    ap.add_argument("--export", type=Path, help="copy dvc.lock and reports/metrics of the finished clone here")
    ap.add_argument("--label", default="", help="a note stored with the result (e.g. 'idle machine')")
    ap.add_argument("--out", type=Path, default=RESULTS / "repro.json")
    ap.add_argument("--target", action="append", default=[],
                    help="reproduce only this stage and what it needs (repeatable; default: the whole pipeline)")
    args = ap.parse_args(argv)

    work = args.workdir or Path(tempfile.mkdtemp(prefix="clsuite-repro-"))
    if work.exists() and any(work.iterdir()):
        ap.error(f"--workdir {work} is not empty; pass an empty or new folder")
    subprocess.run(["git", "clone", "--quiet", str(args.src.resolve()), str(work)], check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True,
                            check=True).stdout.strip()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    llm_cache = Path(os.environ.get("CLSUITE_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME")
                                                                  or Path.home() / ".cache") / "clsuite") / "llm"
    result: dict = {"commit": commit, "label": args.label, "targets": args.target, "workdir": str(work),
                    "cpu_count": os.cpu_count(),
                    "loadavg_before": [round(v, 2) for v in os.getloadavg()],
                    "llm_model_cache_present": llm_cache.is_dir() and any(llm_cache.iterdir())}
    log_path = work / "bench_repro.log"
    with log_path.open("w") as log:
        code, total, events = timed(["dvc", "repro", *args.target], work, env, log)
        result["repro"] = {"exit_code": code, "seconds": round(total, 1)}
        stages = stage_times(events, total)
        kinds: dict[str, list[float]] = defaultdict(list)
        for name, seconds in stages.items():
            kinds[stage_kind(name)].append(seconds)
        result["by_kind"] = {k: {"stages": len(v), "seconds": round(sum(v), 1), "median": round(sorted(v)[len(v) // 2], 2)}
                             for k, v in kinds.items()}
        result["stages"] = stages
        if code == 0:
            noop_code, noop, _ = timed(["dvc", "repro", *args.target], work, env, log)
            status_code, status, _ = timed(["dvc", "status"], work, env, log)
            result["noop_repro"] = {"exit_code": noop_code, "seconds": round(noop, 2)}
            result["status"] = {"exit_code": status_code, "seconds": round(status, 2)}
    result["loadavg_after"] = [round(v, 2) for v in os.getloadavg()]
    if args.export and code == 0:
        args.export.mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "dvc.lock", args.export / "dvc.lock")
        if (work / "reports" / "metrics").is_dir():
            shutil.copytree(work / "reports" / "metrics", args.export / "metrics", dirs_exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("commit", "repro", "by_kind") if k in result}, indent=2))
    print(f"log: {log_path}; result: {args.out}")
    return code


if __name__ == "__main__":
    sys.exit(main())
