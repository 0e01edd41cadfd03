"""The ``electrocloud`` command: one subcommand per service.

Each stage package exposes ``<package>.cli`` with ``configure(parser)`` and
``run(args) -> int``. Those modules import only argparse at module level and
the rest inside ``run``, so ``electrocloud edge`` on a gateway never loads the
billing stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Protocol, cast

from electrocloud import __version__
from electrocloud.errors import ConfigError, ElectroCloudError

#: subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "simulate": ("simulator.cli", "serve simulated electricity meters over Modbus TCP"),
    "edge": ("edge.cli", "poll meters over Modbus and publish readings over MQTT"),
    "demo": ("electrocloud.demo.cli", "run the whole pipeline on simulated meters, then reconcile"),
    "backend": ("backend.cli", "ingest readings from MQTT into the store"),
    "tariff": ("billing.tariff_cli", "validate, explain and import tariffs"),
    "bill": ("billing.cli", "bill meters for a period: JSON, HTML and PDF invoices"),
    "bench": ("benchmarks.cli", "run the benchmarks and write docs/benchmarks.md"),
}


class _StageCli(Protocol):
    def configure(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _stage(module: str) -> _StageCli:
    return cast(_StageCli, importlib.import_module(module))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="electrocloud",
        description="ElectroCloud: electricity metering and billing, one subcommand per service.",
    )
    parser.add_argument("--version", action="version", version=f"electrocloud {__version__}")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        _stage(module).configure(sub_parser)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        return _stage(args._module).run(args)
    except ConfigError as exc:
        print(f"electrocloud {args.command}: {exc}", file=sys.stderr)
        return 2
    except ElectroCloudError as exc:
        print(f"electrocloud {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
