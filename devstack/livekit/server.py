"""aiohttp app assembly and the in-process server handle.

    async with LocalLiveKitServer(load_config("livekit.yaml", port=0)) as lk:
        lk.url, lk.http_url, lk.api_key, lk.api_secret, lk.rooms
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
import socket
from typing import Awaitable, Callable

from aiohttp import web

from . import agent_workers, media, signal, sip_service
from .config import ServerConfig
from .rooms import RoomManager, new_id

logger = logging.getLogger("devstack.livekit")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CORS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "GET, POST, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Requested-With",
    "Access-Control-Max-Age": "86400",
}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """CORS headers on every response, 404s included: livekit-client in a page
    from another origin reads /rtc/v1/validate's 404 before falling back to /rtc."""
    if request.method == "OPTIONS":
        return web.Response(status=200, headers=_CORS)
    try:
        resp = await handler(request)
    except web.HTTPException as exc:
        resp = web.Response(status=exc.status, text=exc.text or exc.reason, headers=exc.headers)
    if not resp.prepared:
        for k, v in _CORS.items():
            resp.headers.setdefault(k, v)
    return resp


class LocalLiveKitServer:
    """A LiveKit-compatible server on aiohttp + aiortc; one node, in-memory state."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.node_id = new_id("ND_")
        self.node_ip = config.resolve_node_ip()
        self.manager = RoomManager(config)
        self.workers = agent_workers.WorkerRegistry(self)
        self.manager.agent_dispatcher = self.workers
        self.sessions: set[signal.SignalSession] = set()
        self.app = web.Application(middlewares=[cors_middleware])
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._build_app()

    # ------------------------------------------------------------- routes ---
    def _build_app(self) -> None:
        async def health(_: web.Request) -> web.Response:
            return web.Response(text="OK")

        self.app.router.add_get("/", health)
        signal.setup(self.app, self)
        agent_workers.setup(self.app, self)
        # LiveKit's SIP service (trunks, rules, dial-out, transfer); a gateway attaches to it
        self.sip = sip_service.setup(self.app, self)
        # RoomService / AgentDispatchService (Twirp), when that module exists
        if importlib.util.find_spec(f"{__package__}.twirp") is not None:
            importlib.import_module(f"{__package__}.twirp").setup(self.app, self.manager, self.config)

    def register_route(self, method: str, path: str, handler: Handler) -> None:
        """Extra HTTP routes (must be called before start())."""
        self.app.router.add_route(method, path, handler)

    # ------------------------------------------------------------ handles ---
    @property
    def rooms(self) -> RoomManager:
        return self.manager

    @property
    def api_key(self) -> str:
        return self.config.api_key

    @property
    def api_secret(self) -> str:
        return self.config.api_secret

    @property
    def url(self) -> str:
        return f"ws://{self.config.url_host()}:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.config.url_host()}:{self.port}"

    async def drop_signal(self, room: str, identity: str) -> bool:
        """Test hook: cut a participant's signal connection as a network failure would (no
        leave message), so its SDK starts reconnecting. False if no such connection."""
        for s in list(self.sessions):
            if s.room.name == room and s.p.identity == identity and not s.closed:
                await s.ws.close()
                return True
        return False

    # ---------------------------------------------------------- lifecycle ---
    async def start(self) -> "LocalLiveKitServer":
        media.install_ice_address_filter()
        self._runner = web.AppRunner(self.app, handle_signals=False, access_log=None)
        await self._runner.setup()
        port = self.config.port
        for host in self.config.bind_hosts():
            # port 0: the first bind picks a free port, the others reuse it
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            site = web.SockSite(self._runner, sock)
            await site.start()
        self.port = port
        return self

    async def stop(self) -> None:
        await self.manager.close()
        await self.workers.close()
        for s in list(self.sessions):
            await s.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> "LocalLiveKitServer":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
