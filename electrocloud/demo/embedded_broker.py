"""An embedded MQTT 3.1.1 broker (amqtt) for machines without Mosquitto.

Run as ``python -m electrocloud.demo.embedded_broker PORT``. Only the demo uses it:
amqtt speaks MQTT 3.1.1 (no shared subscriptions, no Receive Maximum) and keeps
sessions in memory, so it is no substitute for Mosquitto in production.
"""

from __future__ import annotations

import asyncio
import signal
import sys


async def serve(port: int) -> None:
    from amqtt.broker import Broker

    config = {
        "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}},
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    broker = Broker(config)
    await broker.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await broker.shutdown()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
