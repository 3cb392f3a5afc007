"""The offline Gemini Live server: TLS, routing, authentication, session bookkeeping."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import dataclasses
import itertools
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from aiohttp import web

from . import tls
from .faults import KINDS, FaultEvent, RandomFaults
from .records import ConversationLog
from .resumption import HandleStore
from .auth_tokens import EphemeralTokens
from .script import Script
from .session import LiveSession

log = logging.getLogger("devstack.gemini")

# Any API version, with or without a path prefix (and the `//ws` a trailing slash in
# base_url produces).
_PATH_RE = re.compile(
    r"(?:/[^/]+)*/+ws/google\.ai\.generativelanguage\.(?P<version>[A-Za-z0-9_]+)"
    r"\.GenerativeService\.(?P<method>BidiGenerateContent(?:Constrained)?)"
)
# Vertex AI (express mode: an API key, `genai.Client(vertexai=True, api_key=...)`), the
# only mode in which google-genai lets a client ask for transparent resumption.
_VERTEX_PATH_RE = re.compile(
    r"(?:/[^/]+)*/+ws/google\.cloud\.aiplatform\.(?P<version>[A-Za-z0-9_]+)"
    r"\.LlmBidiService/(?P<method>BidiGenerateContent)"
)

DEFAULT_API_KEY = "offline-gemini-test-key"


@dataclass
class Refusal:
    status: int
    path: str
    reason: str
    at: float


def _error_body(status: int, message: str, code: str) -> str:
    return json.dumps({"error": {"code": status, "message": message, "status": code}})


class OfflineGeminiServer:
    """In-process Gemini Live stand-in. Use as `async with OfflineGeminiServer(...) as s`.

    Connection lifetime like the service's (about 10 minutes there; None here: unlimited):
    `connection_lifetime_s` after setupComplete the server closes the connection
    (`deadline_close`), announced by goAway{timeLeft} `go_away_lead_s` before.
    Resumption handles stay valid `handle_ttl_s` after their connection ended (2 h
    documented); transparent sessions get a fresh handle every
    `resumption_update_interval_s` while idle. All are plain attributes, read when used.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, cert_dir: str | Path | None = None,
                 cert_path: str | Path | None = None, ca_bundle_path: str | Path | None = None,
                 api_key: str = DEFAULT_API_KEY, accepted_keys: set[str] | None = None,
                 extra_models: set[str] | None = None, chunk_ms: int = 40, lead_ms: int = 120,
                 connection_lifetime_s: float | None = None, go_away_lead_s: float = 10.0,
                 handle_ttl_s: float = 7200.0, resumption_update_interval_s: float = 1.0) -> None:
        self.host = host
        self.port = port
        base = Path(cert_dir) if cert_dir else Path(tempfile.mkdtemp(prefix="offline-gemini-"))
        self.cert_path = Path(cert_path) if cert_path else base / "offline-gemini-cert.pem"
        self.key_path = self.cert_path.with_name(self.cert_path.stem + "-key.pem")
        self.ca_bundle = str(ca_bundle_path or self.cert_path.with_name(self.cert_path.stem + "-ca-bundle.pem"))
        self.api_key = api_key
        # None: any non-empty key is accepted; a set restricts (others get HTTP 403).
        self.accepted_keys = accepted_keys
        self.extra_models: set[str] = set(extra_models or ())
        self.chunk_ms = chunk_ms  # audio per outgoing inlineData message
        self.lead_ms = lead_ms  # how far ahead of real time replies may run
        self.connection_lifetime_s = connection_lifetime_s
        self.go_away_lead_s = go_away_lead_s
        self.resumption_update_interval_s = resumption_update_interval_s
        # how the server closes a connection at a goAway's deadline (the Vertex AI
        # troubleshooting page lists 1000 or 1006 for a connection that timed out)
        self.deadline_close: tuple[int, str] = (1000, "Session is going away.")
        self.script = Script()
        self.sessions: list[LiveSession] = []
        self.refused: list[Refusal] = []
        self.handles = HandleStore(handle_ttl_s)
        self.fault_log: list[FaultEvent] = []  # every fault fired: scripted, random, lifetime
        self.fault_log_path: Path | None = None  # also appended there as JSON lines, when set
        self.conversations: dict[str, ConversationLog] = {}
        self.random: RandomFaults | None = None
        self._conversation_ids = itertools.count(1)
        self.tokens = EphemeralTokens(lambda key: self.accepted_keys is None or key in self.accepted_keys)
        self._runner: web.AppRunner | None = None
        self._sessions_changed: asyncio.Condition | None = None

    # ---- lifecycle ------------------------------------------------------------------
    async def start(self) -> "OfflineGeminiServer":
        files = tls.generate(self.cert_path, self.key_path, Path(self.ca_bundle), extra_hosts=(self.host,))
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        app.router.add_route("POST", "/{tail:.*}", self.tokens.handle_create)  # auth_tokens.create
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=tls.server_context(files))
        await site.start()
        self.port = self._runner.addresses[0][1]
        self._sessions_changed = asyncio.Condition()
        return self

    async def stop(self) -> None:
        for s in self.sessions:
            if not s.closed.is_set():
                try:
                    await asyncio.wait_for(s.close(1001, "Server shutting down."), 2)
                except (asyncio.TimeoutError, ConnectionError):
                    pass
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "OfflineGeminiServer":
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- addresses ------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        host = self.host
        if host in ("", "0.0.0.0", "::"):
            host = "127.0.0.1"
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        return f"https://{host}:{self.port}"

    def client_env(self) -> dict[str, str]:
        """Environment that points an unmodified google-genai client here.

        SSL_CERT_FILE is read when a genai Client is built: set it before building one.
        """
        return {
            "GOOGLE_API_KEY": self.api_key,
            "GOOGLE_GEMINI_BASE_URL": self.base_url,
            "SSL_CERT_FILE": self.ca_bundle,
        }

    # ---- test helpers ---------------------------------------------------------------
    async def wait_for_session(self, n: int = 1, timeout: float = 10.0) -> LiveSession:
        """The n-th (1-based) accepted connection, once its setup has been handled."""
        assert self._sessions_changed is not None, "server not started"

        async def wait() -> LiveSession:
            async with self._sessions_changed:
                await self._sessions_changed.wait_for(lambda: len(self.sessions) >= n)
            session = self.sessions[n - 1]
            await session.setup_done.wait()
            return session

        return await asyncio.wait_for(wait(), timeout)

    @property
    def active_sessions(self) -> list[LiveSession]:
        return [s for s in self.sessions if not s.closed.is_set()]

    async def go_away_all(self, time_left: str = "10s") -> None:
        for s in self.active_sessions:
            await s.send_go_away(time_left)

    async def close_all(self, code: int = 1011, reason: str = "Internal error encountered.") -> None:
        for s in self.active_sessions:
            await s.close(code, reason)

    # ---- resumption and conversations ------------------------------------------------
    @property
    def handle_ttl_s(self) -> float:
        return self.handles.ttl_s

    @handle_ttl_s.setter
    def handle_ttl_s(self, value: float) -> None:
        self.handles.ttl_s = value

    def _new_conversation_id(self) -> str:
        return f"conv-{next(self._conversation_ids)}"

    def conversation(self, conversation_id: str) -> ConversationLog:
        """The record of one conversation across its connections (created on first use)."""
        return self.conversations.setdefault(conversation_id, ConversationLog(conversation_id))

    def _fault_fired(self, event: FaultEvent) -> None:
        self.fault_log.append(event)
        if self.fault_log_path is not None:
            with open(self.fault_log_path, "a") as f:
                f.write(json.dumps(dataclasses.asdict(event)) + "\n")

    async def wait_for_faults(self, n: int = 1, timeout: float = 10.0) -> list[FaultEvent]:
        """Once at least n faults have fired: the fault log."""
        async def poll() -> None:
            while len(self.fault_log) < n:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), timeout)
        return self.fault_log

    def summary(self) -> dict:
        """JSON-able records: faults fired, refusals, and every conversation's turns."""
        return {"faults": [dataclasses.asdict(e) for e in self.fault_log],
                "refused": [dataclasses.asdict(r) for r in self.refused],
                "conversations": [c.summary() for c in self.conversations.values()]}

    # ---- random faults ----------------------------------------------------------------
    def random_faults(self, seed: int = 1, mean_interval_s: float = 5.0, kinds: Iterable[str] = KINDS,
                      moments: Iterable[str] = ("reply", "after_turn", "setup"), close_codes: Iterable[int] = (1011,),
                      time_left_s: tuple[float, float] = (1.0, 5.0), max_after_s: float = 2.0,
                      patience_s: float | None = None) -> RandomFaults:
        """Inject faults of `kinds` at random `moments` across all sessions (faults.RandomFaults).

        Every fault fired lands in `fault_log` with source "random". Stop with
        `server.random.stop()` or `server.random = None`."""
        self.random = RandomFaults(seed=seed, mean_interval_s=mean_interval_s, kinds=kinds, moments=moments,
                                   close_codes=close_codes, time_left_s=time_left_s, max_after_s=max_after_s,
                                   patience_s=patience_s)
        self.random.start()
        return self.random

    # ---- HTTP -----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = _PATH_RE.fullmatch(request.path) or _VERTEX_PATH_RE.fullmatch(request.path)
        if not m:
            return web.Response(status=404, content_type="application/json",
                                text=_error_body(404, f"Method not found: {request.path}", "NOT_FOUND"))
        constrained = m.group("method").endswith("Constrained")
        key = request.headers.get("x-goog-api-key") or request.query.get("key") or ""
        auth = request.headers.get("Authorization", "")
        token = auth[len("Token "):].strip() if auth.startswith("Token ") else request.query.get("access_token", "")
        credential = token if constrained else key
        if constrained and not credential:
            return self._refuse(request, 401, "Ephemeral token required: 'Authorization: Token auth_tokens/...'.", "UNAUTHENTICATED")
        if not credential:
            return self._refuse(request, 401, "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", "UNAUTHENTICATED")
        if constrained and (denied := self.tokens.admit(credential)):
            return self._refuse(request, *denied, "UNAUTHENTICATED")
        if not constrained and self.accepted_keys is not None and credential not in self.accepted_keys:
            return self._refuse(request, 403, "API key not valid. Please pass a valid API key.", "PERMISSION_DENIED")
        refusal = self.script.take_refusal()
        if refusal is not None:
            status, message = refusal
            return self._refuse(request, status, message, "UNAVAILABLE" if status == 503 else "ERROR")

        ws = web.WebSocketResponse(max_msg_size=64 * 1024 * 1024, autoping=True)
        if not ws.can_prepare(request).ok:
            return web.Response(status=400, text=_error_body(400, "Expected a WebSocket upgrade.", "INVALID_ARGUMENT"),
                                content_type="application/json")
        await ws.prepare(request)
        session = LiveSession(self, ws, request, len(self.sessions) + 1, m.group("version"), constrained)
        session.token = credential if constrained else None  # its locked setup applies (auth_tokens.py)
        self.sessions.append(session)
        assert self._sessions_changed is not None
        async with self._sessions_changed:
            self._sessions_changed.notify_all()
        await session.run()
        return ws

    def _refuse(self, request: web.Request, status: int, message: str, code: str) -> web.Response:
        self.refused.append(Refusal(status, request.path, message, time.monotonic()))
        return web.Response(status=status, content_type="application/json", text=_error_body(status, message, code))
