"""Shared fixtures: the offline Gemini Live server, product settings, spoken audio."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agents.assistant import Assistant
from agents.session import build_session
from agents.settings import Settings, load_settings
from devstack.gemini import OfflineGeminiServer

from .support.audio import read_wav, resample, speech_wav
from .support.conversation import Conversation
from .support.run_alone import RunAlone
from .support.session_io import Microphone, Speaker

ARTIFACTS = Path(__file__).resolve().parent.parent / ".artifacts"

# The suite runs in two processes (pyproject: -n 2 --dist loadgroup). Each module is a group
# of its own, so its module-scoped stack and worker stay in one process. The modules that
# load the machine most run alone (support/run_alone.py): a browser with its workers, three
# workers with twelve calls, the phone calls (whose in-process gateway paces RTP in real
# time) and the meeting of four. Beside another module, replies were heard garbled
# (0.45-0.69 against 0.8): a phone greeting twice, and a room reply beside the meeting.
HEAVY = ("tests/browser/test_web_client.py", "tests/ops/test_scale_out.py", "tests/sip/", "tests/meeting/")

_RUN_ALONE = pytest.StashKey[RunAlone]()


def _module(item) -> str:
    return item.nodeid.split("::")[0]


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config, items):
    for item in items:
        item.add_marker(pytest.mark.xdist_group(_module(item)))


@pytest.hookimpl(hookwrapper=True, tryfirst=True)  # outside pytest-timeout's clock
def pytest_runtest_protocol(item, nextitem):
    workerinput = getattr(item.config, "workerinput", None)
    if workerinput is None:  # one process (-n 0): nothing runs beside anything
        yield
        return
    if _RUN_ALONE not in item.config.stash:
        item.config.stash[_RUN_ALONE] = RunAlone(workerinput["testrunuid"])
    gate = item.config.stash[_RUN_ALONE]
    # a heavy module holds the lock from its first setup to its last teardown; any other
    # test only for itself, so a heavy module waits for one test, not for a whole module
    alone = _module(item).startswith(HEAVY)
    gate.enter(_module(item) if alone else item.nodeid, alone=alone)
    yield
    if not alone or nextitem is None or _module(nextitem) != _module(item):
        gate.leave()


def pytest_unconfigure(config):
    gate = config.stash.get(_RUN_ALONE, None)
    if gate is not None:
        gate.close()


@pytest.fixture
async def gemini(tmp_path, monkeypatch):
    """An offline Gemini Live server that google-genai in this process is pointed at."""
    async with OfflineGeminiServer(cert_dir=tmp_path / "gemini-cert") as server:
        for key, value in server.client_env().items():
            monkeypatch.setenv(key, value)
        yield server


@pytest.fixture
def product_settings(monkeypatch, tmp_path):
    """Load the shipped settings with AGENT_* overrides: product_settings(greet=False, ...)."""
    for key in list(os.environ):
        if key.startswith("AGENT_"):
            monkeypatch.delenv(key)

    def load(**overrides: str) -> Settings:
        for key, value in overrides.items():
            monkeypatch.setenv("AGENT_" + key.upper(), str(value))
        return load_settings()

    return load


@pytest.fixture(scope="session")
def speech(tmp_path_factory):
    """speech(text, rate) -> int16 mono samples of espeak-ng saying `text` at `rate`."""
    cache: dict[tuple[str, int], np.ndarray] = {}
    folder = tmp_path_factory.mktemp("speech")

    def make(text: str, rate: int = 48000) -> np.ndarray:
        if (text, rate) not in cache:
            path = speech_wav(text, folder / f"{len(cache)}.wav")
            pcm, native = read_wav(path)
            cache[(text, rate)] = resample(pcm, native, rate)
        return cache[(text, rate)]

    return make


@pytest.fixture
async def conversation(gemini, product_settings):
    """conversation(**setting overrides) -> a running Conversation (closed at teardown)."""
    started: list[Conversation] = []

    async def start(*, mic_rate: int = 48000, **overrides) -> Conversation:
        settings = product_settings(**{"agent__greet": "false", **overrides})
        # a headset: no acoustic echo, so no caller audio is discarded
        session = build_session(settings, echo_warmup_s=None)
        mic, speaker = Microphone(mic_rate), Speaker(24000)
        session.input.audio = mic
        session.output.audio = speaker
        conv = Conversation(session, mic, speaker)
        await session.start(agent=Assistant(settings))
        started.append(conv)
        return conv

    yield start
    for conv in started:
        await conv.session.aclose()
        await conv.speaker.aclose()
