"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: Test data shared by the project, next to the repository (see ``shared/data/SOURCES.md``).
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared test-data folder (``formats/``, ``real/``); skip when it is missing."""
    if not SHARED.is_dir():
        pytest.skip(f"shared test data not found at {SHARED}")
    return SHARED
