"""The product's HTTP server: the browser client (static files) and `POST /api/token`.

    app = create_app(settings)                  # LiveKit credentials from the environment
    await run_web(settings)                     # serve on settings.web.host:port until cancelled
    async with WebServer(settings) as srv:      # or start it and learn the bound address
        print(srv.url)                          # (port 0 picks a free port)

The client is a prebuilt bundle in agents/web/static/ (source in web/, `npm ci && npm run
build` regenerates it), so serving it needs no Node.js and nothing comes from a CDN.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

from ..settings import Settings
from . import gemini_token
from .token_service import LiveKitCredentials, RateLimiter, TokenService, error_response, rate_limited

logger = logging.getLogger("agents.web")

STATIC_DIR = Path(__file__).resolve().parent / "static"
TOKEN_PATH = "/api/token"

_TOKEN_SERVICE = web.AppKey("token_service", TokenService)
_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _origin_allowed(request: web.Request, origin: str, allowed: list[str]) -> bool:
    origin = origin.rstrip("/").lower()
    if origin in allowed:
        return True
    # Same origin: the page this server served. Compare the host[:port] the browser used
    # (scheme may differ behind a TLS-terminating proxy).
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and parts.netloc == request.host.lower()


def _as_response(e: web.HTTPException) -> web.Response:
    return web.Response(status=e.status, reason=e.reason, body=e.body, headers=e.headers)


def _cors_middleware(settings: Settings) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    allowed = settings.web.allowed_origins

    @web.middleware
    async def cors(request: web.Request, handler: _Handler) -> web.StreamResponse:
        if not request.path.startswith("/api/"):
            return await handler(request)
        origin = request.headers.get("Origin")
        ok = origin is not None and _origin_allowed(request, origin, allowed)
        if request.method == "OPTIONS":
            if not ok:
                # No CORS headers: the browser refuses the cross-origin call.
                return web.Response(status=403)
            response: web.StreamResponse = web.Response(status=204)
            response.headers["Access-Control-Allow-Methods"] = "POST"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
            response.headers["Access-Control-Max-Age"] = "600"
        elif origin is not None and not ok:
            # A page from another site must not mint tokens, even if it cannot read them.
            return error_response(403, "origin", "this origin may not request tokens")
        else:
            try:
                response = await handler(request)
            except web.HTTPException as e:  # 404/405 from the router
                response = _as_response(e)
        if ok and origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Vary"] = "Origin"
        return response

    return cors


def _security_headers_middleware(connect_src: str) -> Callable[[web.Request, _Handler], Awaitable[web.StreamResponse]]:
    csp = (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
        f"media-src 'self' blob: mediastream:; connect-src 'self' {connect_src}; "
        "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )

    @web.middleware
    async def security_headers(request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            response = await handler(request)
        except web.HTTPException as e:
            response = _as_response(e)
        response.headers.setdefault("Content-Security-Policy", csp)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault(
            "Permissions-Policy", "microphone=(self), camera=(self), display-capture=(self)"
        )
        if request.path == "/" or request.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-cache")
        return response

    return security_headers


def _connect_sources(server_url: str) -> str:
    """The LiveKit origins the page talks to: the signal websocket and its HTTP validate call."""
    parts = urlsplit(server_url)
    http = {"ws": "http", "wss": "https"}[parts.scheme]
    return f"{parts.scheme}://{parts.netloc} {http}://{parts.netloc}"


async def _index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _favicon(request: web.Request) -> web.StreamResponse:
    # browsers that ignore the page's <link rel="icon"> still ask for /favicon.ico
    return web.FileResponse(STATIC_DIR / "favicon.svg", headers={"Content-Type": "image/svg+xml"})


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _token(request: web.Request) -> web.Response:
    return await request.app[_TOKEN_SERVICE].handle(request)


def create_app(settings: Settings, credentials: LiveKitCredentials | None = None) -> web.Application:
    """The aiohttp app: `/` (client), `/static/*`, `/favicon.ico`, `POST /api/token`, `GET /healthz`.

    credentials default to LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET; ConfigError
    if they are missing.
    """
    service = TokenService(settings, credentials or LiveKitCredentials.from_env())
    connect_src = _connect_sources(service.server_url)
    if settings.direct.enabled:  # the page opens the Live API's websocket itself
        connect_src += " " + gemini_token.connect_sources()
    app = web.Application(
        middlewares=[_security_headers_middleware(connect_src), _cors_middleware(settings)],
        client_max_size=64 * 1024,
    )
    app[_TOKEN_SERVICE] = service
    app.router.add_get("/", _index)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/favicon.ico", _favicon)
    app.router.add_post(TOKEN_PATH, _token)
    app.router.add_route("OPTIONS", TOKEN_PATH, _token)  # answered by the CORS middleware
    app.router.add_static("/static/", STATIC_DIR, follow_symlinks=False)
    # direct mode (direct.enabled): ephemeral Gemini tokens for the browser
    # (each opens a Gemini session billed to the server's key: limited per client address)
    app.router.add_post(gemini_token.PATH, rate_limited(
        gemini_token.handler(settings), RateLimiter(settings.web.gemini_token_rate_limit_per_minute),
        settings.web.trust_forwarded_for, "Gemini token"))
    return app


class WebServer:
    """Serve create_app(settings) on settings.web.host:port while the context is open."""

    def __init__(
        self,
        settings: Settings,
        credentials: LiveKitCredentials | None = None,
        *,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self._app = create_app(settings, credentials)
        self._host = host if host is not None else settings.web.host
        self._port = port if port is not None else settings.web.port
        self._runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> WebServer:
        self._runner = web.AppRunner(self._app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"
        logger.info("web client at %s", self.url)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def run_web(
    settings: Settings,
    credentials: LiveKitCredentials | None = None,
    *,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve the web client and token endpoint until cancelled; on_ready gets the page's URL."""
    async with WebServer(settings, credentials) as server:
        if on_ready is not None:
            on_ready(server.url)
        await asyncio.Event().wait()
