"""The local stack shared by the end-to-end folders (tests/e2e, tests/meeting): the local
LiveKit server, the offline Gemini server and one real `python agent.py start` worker,
started once per test module. A conftest imports the fixtures it wants from here."""

from __future__ import annotations

import os

import pytest_asyncio

from devstack.stack import LocalStack

# A Python SDK caller is a headset: no acoustic echo, so no caller audio is discarded.
# Its level is already right, and gain control ramping over the first second would
# change the very speech the tests compare the echo with.
HEADSET_AGENT_ENV = {
    "AGENT_AGENT__GREET": "false",
    "AGENT_AUDIO__ECHO_WARMUP_S": "0",
    "AGENT_AUDIO__AUTO_GAIN_CONTROL": "false",
}


def clean_env() -> dict[str, str]:
    """This process's environment without settings meant for a deployment."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LIVEKIT_", "GOOGLE_", "AGENT_"))}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def stack(tmp_path_factory):
    async with LocalStack(workdir=tmp_path_factory.mktemp("stack"), base_env=clean_env()) as s:
        yield s


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def worker(stack):
    w = await stack.start_worker(HEADSET_AGENT_ENV)
    yield w
    await w.stop()
