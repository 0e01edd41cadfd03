"""``python -m benchmarks`` / ``electrocloud bench``: run every benchmark, write docs/benchmarks.md.

Like the stage CLIs, this module imports only the standard library at module
level; the benchmarks load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

NAMES = ("edge", "backend", "freshness", "billing", "memory")
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short runs (CI keeps the harness working with it; figures are not for the docs)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="markdown file to write, or a directory for benchmarks.md (default: %(default)s)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure and run as JSON here")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=NAMES,
        metavar="NAME",
        help=f"run only these: {NAMES} (none, with --reuse: only rewrite the report)",
    )
    parser.add_argument(
        "--runs", type=int, help="runs per figure (default: 5, quick: 3), each after a warm-up"
    )
    parser.add_argument(
        "--memory-minutes",
        type=float,
        help="length of the memory run (default: 10, quick: 0.15)",
    )
    parser.add_argument(
        "--reuse",
        type=Path,
        metavar="JSON",
        help="with --only: take the other benchmarks' figures from this earlier --json file",
    )
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep logs and scratch files in this directory (default: a temp dir)",
    )


def run(args: argparse.Namespace) -> int:
    from benchmarks import backend, billing_runner, edge, freshness, memory, report
    from benchmarks.common import Outcome, machine_info

    runs = args.runs or (3 if args.quick else 5)
    memory_s = 60 * (args.memory_minutes or (0.15 if args.quick else 10.0))
    selected = list(NAMES) if args.only is None else args.only
    if not selected and args.reuse is None:
        raise SystemExit("--only without names needs --reuse")
    settings = {"quick": args.quick, "runs": runs, "memory_s": memory_s, "only": selected}
    started = time.monotonic()
    outcomes: list[Outcome] = []
    reused: dict[str, Outcome] = {}
    if args.reuse is not None:
        previous = json.loads(args.reuse.read_text())
        if not selected:  # nothing to run: the report again, with that run's settings
            settings = previous["settings"]
        for name, data in zip(previous["settings"]["only"], previous["benchmarks"], strict=True):
            reused[name] = Outcome.from_dict(data)
            if selected:
                reused[name].notes.append(f"reused from an earlier run ({args.reuse.name})")
    with tempfile.TemporaryDirectory(prefix="electrocloud-bench-") as scratch:
        base = args.keep or Path(scratch)
        for name in selected:
            work_dir = base / name
            work_dir.mkdir(parents=True, exist_ok=True)
            print(f"running {name} ...", file=sys.stderr, flush=True)
            began = time.monotonic()
            try:
                if name == "memory":
                    outcome = memory.run(
                        quick=args.quick, duration_s=memory_s, work_dir=work_dir, log_dir=work_dir
                    )
                else:
                    module = {
                        "edge": edge,
                        "backend": backend,
                        "freshness": freshness,
                        "billing": billing_runner,
                    }[name]
                    outcome = module.run(
                        quick=args.quick, runs=runs, work_dir=work_dir, log_dir=work_dir
                    )
            except Exception as exc:  # one broken benchmark must not hide the others' figures
                traceback.print_exc()
                outcome = Outcome(name, error=f"{type(exc).__name__}: {exc}".splitlines()[0])
            outcome.notes.append(f"took {time.monotonic() - began:.0f} s")
            outcomes.append(outcome)
            print(report.console(outcome), flush=True)
        elapsed = time.monotonic() - started
        if not selected:
            elapsed = previous["elapsed_s"]
        if reused:
            ran = dict(zip(selected, outcomes, strict=True))
            selected = [name for name in NAMES if name in ran or name in reused]
            outcomes = [ran.get(name) or reused[name] for name in selected]
            settings["only"] = selected
        path = report.write(args.out, outcomes, machine_info(), settings, elapsed, args.json)
    print(f"wrote {path} ({elapsed:.0f} s)")
    failed = [o.title for o in outcomes if o.error and "does not exist" not in o.error]
    return 1 if failed else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    configure(parser)
    return run(parser.parse_args(argv))
