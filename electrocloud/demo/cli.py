"""``electrocloud demo``: argument parsing (module-level imports stay light)."""

from __future__ import annotations

import argparse
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--meters", type=int, default=25, help="simulated meters (default 25)")
    parser.add_argument(
        "--days",
        type=int,
        default=None,
        help="simulate and bill the last DAYS whole days (default: the previous calendar month)",
    )
    parser.add_argument(
        "--speed",
        type=float,
        default=8640.0,
        help="simulated seconds per real second (default 8640: a 30-day month in 5 min)",
    )
    parser.add_argument(
        "--read-every",
        type=float,
        default=15.0,
        help="simulated minutes between two reads of a meter (default 15)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--broker",
        choices=["auto", "mosquitto", "amqtt"],
        default="auto",
        help="MQTT broker: mosquitto from PATH when present (auto), or the embedded amqtt",
    )
    parser.add_argument("--out", type=Path, default=Path("demo-out"), help="output folder")
    parser.add_argument("--no-bill", action="store_true", help="skip billing at the end")


def run(args: argparse.Namespace) -> int:
    from electrocloud.demo.runner import Demo, DemoPlan, default_window

    start, end, period = default_window(args.days)
    plan = DemoPlan(
        meters=args.meters,
        start=start,
        end=end,
        speed=args.speed,
        read_every_s=args.read_every * 60,
        seed=args.seed,
        out=args.out,
        broker=args.broker,
        bill_period=None if args.no_bill else period,
    )
    summary = Demo(plan).run()
    return 0 if summary["readings_lost"] == 0 else 1
