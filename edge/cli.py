"""``electrocloud edge --config edge.yaml``: run the edge agent until SIGTERM/Ctrl-C."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        required=True,
        help="edge agent YAML (see edge.example.yaml); ELECTROCLOUD_EDGE_* variables override it",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="validate the config and every device profile, print the read plan, and exit",
    )


def run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from edge.agent import EdgeAgent, load_profiles
    from edge.config import EdgeSettings
    from edge.plan import plan_reads
    from electrocloud.config import load_settings

    settings = load_settings(EdgeSettings, args.config)
    if args.check:
        for name, profile in load_profiles(settings).items():
            requests = plan_reads(profile)
            print(f"profile {name}: {len(profile.registers)} registers in {len(requests)} requests")
            for request in requests:
                fields = ", ".join(planned.register.field for planned in request.registers)
                print(
                    f"  {request.table} 0x{request.address:04x}+{request.count} "
                    f"(function {request.function_code}): {fields}"
                )
        print(f"config OK: {len(settings.meters)} meters, gateway {settings.gateway_id}")
        return 0

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await EdgeAgent(settings).run(stop)

    asyncio.run(main())
    return 0
