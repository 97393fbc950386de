"""The fake OpenAI-compatible server (tests/support/fake_openai_server.py) as a test fixture.

A test module imports ``server`` (a running fake, stopped afterwards) and, where no real
API key from the environment may leak in, ``no_key_from_the_environment`` (autouse there).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import httpx2
import pytest

from tests.support.paths import REPO_ROOT

SERVER_SCRIPT = REPO_ROOT / "tests" / "support" / "fake_openai_server.py"


class FakeServer:
    """The fake server process: its endpoint, scripting and counters."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.port = port
        self.endpoint = f"http://127.0.0.1:{port}/v1"

    def script(self, **behaviour: object) -> None:
        httpx2.post(f"http://127.0.0.1:{self.port}/_control", json=behaviour, trust_env=False).raise_for_status()

    def counters(self) -> dict:
        return httpx2.get(f"http://127.0.0.1:{self.port}/_control", trust_env=False).json()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def start_server() -> FakeServer:
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.startswith("PORT "), line
    return FakeServer(process, int(line.split()[1]))


@pytest.fixture
def server() -> Iterator[FakeServer]:
    fake = start_server()
    yield fake
    fake.stop()


@pytest.fixture(autouse=True)
def no_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAPTIONDESK_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
