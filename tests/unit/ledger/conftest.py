"""Fixtures for the engine tests: a fresh service directory per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from notarium.ledger import EngineConfig, Ledger, init_service, open_ledger


@pytest.fixture
def service(tmp_path: Path) -> Path:
    d = tmp_path / "svc"
    init_service(d)
    return d


@pytest.fixture
def ledger(service: Path) -> Iterator[Ledger]:
    led = open_ledger(service, EngineConfig(signature_interval_ms=5))
    yield led
    led.close()
