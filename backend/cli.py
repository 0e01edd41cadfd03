"""``electrocloud backend``: ingest readings from MQTT into the store."""

from __future__ import annotations

import argparse
import signal
import threading
from types import FrameType


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="backend YAML config (see backend.example.yaml); "
        "ELECTROCLOUD_BACKEND_* environment variables override it",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: ``electrocloud --help`` must not load paho, pydantic models, ...
    from backend.config import BackendSettings
    from backend.service import BackendService
    from electrocloud.config import load_settings

    settings = load_settings(BackendSettings, args.config)
    service = BackendService(settings)
    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if service.start(stop):
            stop.wait()
    finally:
        service.stop()
    return 0
