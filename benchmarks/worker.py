"""A benchmark worker process: runs commands that arrive as JSON lines on stdin.

Each line is ``{"cmd": "module:function", "args": {...}}`` naming a function in
the ``benchmarks`` package (async functions run on a fresh event loop); the
answer is one JSON line on stdout, ``{"ok": true, "result": ...}`` or
``{"ok": false, "error": "..."}``. Everything else the code prints or logs goes
to stderr (the worker's log file). The worker ends when stdin closes.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import logging
import sys
import traceback
from typing import Any


def _resolve(command: str) -> Any:
    module_name, _, function_name = command.partition(":")
    if not module_name.startswith("benchmarks.") or not function_name:
        raise ValueError(f"not a benchmark command: {command!r}")
    return getattr(importlib.import_module(module_name), function_name)


def main() -> None:
    protocol = sys.stdout
    sys.stdout = sys.stderr  # stray prints must not corrupt the protocol
    logging.basicConfig(
        level=logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            function = _resolve(request["cmd"])
            result = function(**request.get("args", {}))
            if inspect.iscoroutine(result):
                result = asyncio.run(result)
            reply = {"ok": True, "result": result}
        except Exception:
            reply = {"ok": False, "error": traceback.format_exc()}
        protocol.write(json.dumps(reply) + "\n")
        protocol.flush()


if __name__ == "__main__":
    main()
