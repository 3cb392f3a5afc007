"""The offline Gemini Live server: TLS, routing, authentication, session bookkeeping."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from . import tls
from .auth_tokens import EphemeralTokens
from .script import Script
from .session import Conversation, LiveSession

log = logging.getLogger("devstack.gemini")

# Any API version, with or without a path prefix (and the `//ws` a trailing slash in
# base_url produces).
_PATH_RE = re.compile(
    r"(?:/[^/]+)*/+ws/google\.ai\.generativelanguage\.(?P<version>[A-Za-z0-9_]+)"
    r"\.GenerativeService\.(?P<method>BidiGenerateContent(?:Constrained)?)"
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
    """In-process Gemini Live stand-in. Use as `async with OfflineGeminiServer(...) as s`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, cert_dir: str | Path | None = None,
                 cert_path: str | Path | None = None, ca_bundle_path: str | Path | None = None,
                 api_key: str = DEFAULT_API_KEY, accepted_keys: set[str] | None = None,
                 extra_models: set[str] | None = None, chunk_ms: int = 40, lead_ms: int = 120) -> None:
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
        self.script = Script()
        self.sessions: list[LiveSession] = []
        self.refused: list[Refusal] = []
        self._handles: dict[str, Conversation] = {}
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

    # ---- resumption -----------------------------------------------------------------
    def _issue_handle(self, conv: Conversation) -> str:
        handle = f"offline-resume-{uuid.uuid4().hex}"
        self._handles[handle] = conv.copy()
        return handle

    def _resume(self, handle: str) -> Conversation | None:
        conv = self._handles.get(handle)
        return conv.copy() if conv else None

    # ---- HTTP -----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        m = _PATH_RE.fullmatch(request.path)
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
