"""QuickFIX's FIX 4.4 acceptance tests against our acceptor, started from the command line
exactly as the issue specifies:

    engine venue --fix-port PORT --fix-app echo --sender-comp-id ISLD --target-comp-id TW44

Every definition in ../shared/fix-at/definitions/server/fix44/ must pass.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import pytest

from tests import fixat
from tests.conftest import REPO_ROOT, SHARED_FIX_AT

DEFINITIONS = sorted((SHARED_FIX_AT / "definitions" / "server" / "fix44").glob("*.def"))


def test_definitions_present():
    assert len(DEFINITIONS) >= 40, f"acceptance definitions missing under {SHARED_FIX_AT}"


@pytest.fixture(scope="module")
def acceptor():
    cmd = [sys.executable, "-m", "engine.cli", "venue", "--fix-port", "0", "--fix-app", "echo",
           "--sender-comp-id", "ISLD", "--target-comp-id", "TW44"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    match = re.search(r"listening on ([\d.]+):(\d+)", line)
    if not match:
        proc.kill()
        raise AssertionError(f"venue did not start: {line!r} {proc.stderr.read()!r}")
    yield match.group(1), int(match.group(2))
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
    assert proc.returncode is not None


@pytest.mark.parametrize("definition", DEFINITIONS, ids=[d.stem for d in DEFINITIONS])
def test_acceptance(definition, acceptor):
    host, port = acceptor
    formats = fixat.load_field_formats(SHARED_FIX_AT / "definitions" / "fields.fmt")
    steps = fixat.run_definition(definition, host, port, formats)
    assert steps > 0
    time.sleep(0.05)  # let the acceptor see our close before the next definition logs on
