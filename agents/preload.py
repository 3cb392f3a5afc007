"""Warm-up that every job process shares: imported once in the agents framework's forkserver
(`AgentServer(preload_modules=...)`), so job processes inherit it copy-on-write instead of
each importing google-genai's HTTP stack and completing its pydantic classes privately
(~20 MB and ~600 ms of CPU per process). Under the thread executor it runs once in the
worker, on the first job's setup.

Fork-safe by construction: settings, the instructions text, a TLS context and class-level
caches; no threads, no event loop, no connection."""

from __future__ import annotations

import logging

from .session import prewarm
from .settings import SettingsError, load_settings

logger = logging.getLogger("gemini-agent")

try:
    SETTINGS = load_settings()
    WARM: dict = prewarm(SETTINGS)
except SettingsError as e:  # agent.py refused to start on bad settings already; be safe
    logger.warning("preload skipped: %s", e)
    SETTINGS, WARM = None, {}
