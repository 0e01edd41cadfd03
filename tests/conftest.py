from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from services import MosquittoBroker


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A fresh real Mosquitto broker on a free loopback port."""
    with MosquittoBroker(tmp_path / "mosquitto") as broker:
        yield broker
