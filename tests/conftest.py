"""Shared fixtures: the real market data in ../shared/data, and (later) event loops."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
SHARED_FIX_AT = REPO_ROOT.parent / "shared" / "fix-at"


def shared_file(name: str) -> Path:
    """Path of a file in ../shared/data; a missing file fails the test loudly (never skips)."""
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.fail(f"real market data file {path} is missing: tests need ../shared/data beside the repo")
    return path


@pytest.fixture
def shared_data():
    return shared_file
