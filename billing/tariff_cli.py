"""``electrocloud tariff``: validate, explain and import tariffs.

- ``validate FILE...``: check tariff YAML files (errors name file:line);
- ``explain FILE``: the components of each version and the TOU grid by
  season, day type and hour;
- ``import-urdb RATE.json -o FILE.yaml --timezone ZONE``: convert an OpenEI
  URDB rate (see billing/urdb.py for what converts and what is refused).
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="tariff_command", required=True, metavar="SUBCOMMAND")
    validate = sub.add_parser("validate", help="check tariff files")
    validate.add_argument("files", nargs="+", metavar="FILE")
    explain = sub.add_parser("explain", help="print a tariff's components and TOU grid")
    explain.add_argument("file", metavar="FILE")
    urdb = sub.add_parser("import-urdb", help="convert an OpenEI URDB rate to a tariff file")
    urdb.add_argument("rate", metavar="RATE.json")
    urdb.add_argument("-o", "--output", required=True, metavar="FILE.yaml")
    urdb.add_argument(
        "--timezone",
        required=True,
        help="IANA zone of the utility, e.g. America/Los_Angeles (URDB rates carry none)",
    )
    urdb.add_argument("--id", dest="tariff_id", help="tariff id (default: from the URDB label)")


def run(args: argparse.Namespace) -> int:
    if args.tariff_command == "validate":
        return _validate(args.files)
    if args.tariff_command == "explain":
        return _explain(args.file)
    return _import_urdb(args.rate, args.output, args.timezone, args.tariff_id)


def _validate(files: list[str]) -> int:
    from billing.tariff import load_tariff

    for path in files:
        tariff = load_tariff(path)
        versions = ", ".join(str(v.valid_from) for v in tariff.versions)
        print(
            f"{path}: ok: {tariff.id} ({tariff.currency}, {tariff.timezone}; versions {versions})"
        )
    return 0


def describe(path: str) -> str:
    """The text ``explain`` prints."""
    from billing.tariff import (
        DynamicEnergy,
        FlatEnergy,
        TieredEnergy,
        Tiers,
        TouEnergy,
        load_tariff,
    )
    from billing.tou import explain_grid

    tariff = load_tariff(path)

    def tiers_text(tiers: Tiers) -> str:
        blocks = []
        for block in tiers.blocks:
            limit = f"up to {block.up_to_kwh} kWh" if block.up_to_kwh is not None else "rest"
            blocks.append(f"{limit}: {block.price}")
        return f"{tiers.basis} tiers ({'; '.join(blocks)})"

    out = [
        f"{tariff.id}: {tariff.name}",
        f"currency {tariff.currency} (minor unit {tariff.minor_digits} digits, "
        f"{tariff.rounding} per line), time zone {tariff.timezone}",
    ]
    if tariff.holidays:
        subdivision = f"-{tariff.holidays.subdivision}" if tariff.holidays.subdivision else ""
        out.append(f"public holidays: {tariff.holidays.country}{subdivision}")
    for version in tariff.versions:
        out += ["", f"version valid from {version.valid_from}"]
        for fixed in version.fixed:
            out.append(f"  fixed {fixed.id}: {fixed.price} per {fixed.per} ({fixed.description})")
        energy = version.energy
        if isinstance(energy, FlatEnergy):
            out.append(f"  energy: flat {energy.price} per kWh")
        elif isinstance(energy, TieredEnergy):
            out.append(f"  energy: {tiers_text(energy.tiers)}")
        elif isinstance(energy, TouEnergy):
            for name, period_price in energy.prices.items():
                text = (
                    f"{period_price.price} per kWh"
                    if period_price.price is not None
                    else tiers_text(period_price.tiers)  # type: ignore[arg-type]
                )
                out.append(f"  energy {name}: {text}")
        elif isinstance(energy, DynamicEnergy):
            s = energy.series
            out.append(
                f"  energy: dynamic, {s.file} (per {s.unit}) x {s.multiplier} + {s.adder} per kWh"
            )
        for demand in version.demand:
            scope = f" in {', '.join(demand.periods)}" if demand.periods else ""
            months = f", months {demand.months}" if demand.months is not None else ""
            out.append(f"  demand {demand.id}: {demand.price_per_kw} per kW{scope}{months}")
        if version.export is not None:
            e = version.export
            rate = e.price if e.price is not None else (e.prices or e.series)
            out.append(f"  export ({e.mode}): {rate}")
        for levy in version.levies:
            out.append(f"  levy {levy.id}: {levy.price_per_kwh} per kWh ({levy.description})")
        if version.minimum_charge is not None:
            out.append(f"  minimum charge: {version.minimum_charge.amount} per month")
        if version.tax is not None:
            out.append(
                f"  tax {version.tax.id}: {version.tax.percent} % ({version.tax.description})"
            )
        if version.tou is not None:
            out += ["", "  energy TOU grid:"]
            out += ["  " + line for line in explain_grid(version.tou).splitlines()]
        if version.demand_tou is not None:
            out += ["", "  demand TOU grid:"]
            out += ["  " + line for line in explain_grid(version.demand_tou).splitlines()]
    return "\n".join(out)


def _explain(path: str) -> int:
    print(describe(path))
    return 0


def _import_urdb(rate_path: str, output: str, timezone: str, tariff_id: str | None) -> int:
    import json
    import sys
    from pathlib import Path

    from billing.urdb import UrdbError, convert_urdb

    try:
        document = json.loads(Path(rate_path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise UrdbError(f"{rate_path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise UrdbError(f"{rate_path}: not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise UrdbError(f"{rate_path}: expected a JSON object (one URDB rate)")
    conversion = convert_urdb(document, timezone=timezone, tariff_id=tariff_id, source=rate_path)
    Path(output).write_text(conversion.yaml_text, encoding="utf-8")
    for warning in conversion.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"wrote {output} ({len(conversion.warnings)} warnings, listed in its header)")
    return 0
