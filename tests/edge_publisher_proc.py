"""Run an edge Publisher on a queue file in its own process (for kill -9 tests).

    python tests/edge_publisher_proc.py --queue Q --url mqtt://127.0.0.1:P --gateway gw-1

Runs until killed, or with ``--exit-when-empty`` until the queue is drained,
then closes cleanly and prints the publisher's stats as JSON on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import sys
from pathlib import Path

from edge.config import MqttSettings, QueueSettings
from edge.publisher import Publisher
from edge.queue import ReadingQueue


async def _run(args: argparse.Namespace) -> None:
    queue = ReadingQueue(args.queue, QueueSettings(path=args.queue))
    publisher = Publisher(
        gateway_id=args.gateway,
        mqtt=MqttSettings(
            url=args.url,
            max_batch_readings=args.max_batch,
            max_inflight=args.max_inflight,
            keepalive_s=5,
            reconnect_min_s=0.1,
            reconnect_max_s=0.5,
        ),
        queue=queue,
        agent_version="test-proc",
    )
    task = asyncio.create_task(publisher.run())
    try:
        if not args.exit_when_empty:
            await task
            return
        while queue.depth() or publisher.stats.in_flight:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        await publisher.close()
        await task
        print(json.dumps(dataclasses.asdict(publisher.stats)), flush=True)
    finally:
        queue.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--queue", type=Path, required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--gateway", required=True)
    parser.add_argument("--max-batch", type=int, default=60)
    parser.add_argument("--max-inflight", type=int, default=20)
    parser.add_argument("--exit-when-empty", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    asyncio.run(_run(args))


if __name__ == "__main__":
    main()
