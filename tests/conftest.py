"""Shared fixtures: the real market data in ../shared/data, and the event-loop fixtures
of tests/conftest_loops.py (a plugin: any test module may ask for them)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# CI runs the property tests on a fixed set of examples (HYPOTHESIS_PROFILE=ci, set by
# .ci/run): a red CI then means the change, not the draw. Local runs keep exploring
# new examples; what they find is pinned with @example.
settings.register_profile("ci", derandomize=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

pytest_plugins = ["tests.conftest_loops"]

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
