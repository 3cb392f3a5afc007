"""Checks before the worker starts, each failing with one line that names the problem and
the fix: LiveKit's variables, ports already taken, LiveKit unreachable or refusing the keys.

The framework would otherwise retry an unreachable server for ~2 minutes and exit 0, or log
a traceback inside a JSON line; these checks use the same endpoint and token the worker
uses (`/agent`, a JWT with the agent grant), once, with a short timeout.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlparse

import aiohttp
from livekit import api


class PreflightError(Exception):
    """Why the worker cannot start, in one line naming the fix. `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class LiveKitTarget:
    url: str
    api_key: str
    api_secret: str


def livekit_target(cli_args: list[str]) -> LiveKitTarget:
    """LIVEKIT_URL / _API_KEY / _API_SECRET, or the CLI's --url / --api-key / --api-secret."""
    given = {"url": _option(cli_args, "--url"), "api_key": _option(cli_args, "--api-key"),
             "api_secret": _option(cli_args, "--api-secret")}
    env = {"url": "LIVEKIT_URL", "api_key": "LIVEKIT_API_KEY", "api_secret": "LIVEKIT_API_SECRET"}
    values = {k: given[k] or os.environ.get(env[k], "") for k in env}
    missing = [env[k] for k, v in values.items() if not v]
    if missing:
        raise PreflightError(
            f"{', '.join(missing)} not set: put your LiveKit server's URL and API key pair in the "
            "environment or .env (or pass --url/--api-key/--api-secret); `python agent.py local` "
            "runs a local LiveKit server instead", code=2)
    url = values["url"]
    if urlparse(url).scheme not in ("ws", "wss", "http", "https") or not urlparse(url).netloc:
        raise PreflightError(f"LIVEKIT_URL = {url!r} is not a ws://, wss://, http:// or https:// URL", code=2)
    return LiveKitTarget(url, values["api_key"], values["api_secret"])


def _option(args: list[str], name: str) -> str:
    for i, a in enumerate(args):
        if a == name and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(name + "="):
            return a.split("=", 1)[1]
    return ""


def port_in_use(port: int, host: str = "") -> bool:
    """Whether a listening socket holds `port` (bound the way aiohttp binds: SO_REUSEADDR,
    so a port in TIME_WAIT counts as free)."""
    if port == 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            return e.errno in (errno.EADDRINUSE, errno.EACCES)
    return False


def check_ports(ports: dict[int | None, str]) -> None:
    """ports: {port: 'the setting and variable that move it'}; None/0 are skipped."""
    for port, setting in ports.items():
        if port and port_in_use(port):
            raise PreflightError(
                f"port {port} is already in use (another worker on this host?): "
                f"set {setting} to a free port, or 0 for any free port")


def agent_endpoint(url: str) -> str:
    """The worker's `/agent` WebSocket URL, built as the framework builds it."""
    parse = urlparse(url)
    scheme = parse.scheme.replace("http", "ws") if parse.scheme.startswith("http") else parse.scheme
    return urljoin(f"{scheme}://{parse.netloc}{parse.path}".rstrip("/") + "/", "agent")


async def check_livekit(target: LiveKitTarget, timeout: float = 10.0) -> None:
    """Open the worker's WebSocket once: refused, unresolvable, silent or 401 → PreflightError."""
    token = api.AccessToken(target.api_key, target.api_secret).with_grants(
        api.VideoGrants(agent=True)).to_jwt()
    where = f"LiveKit at {target.url}"
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(
            agent_endpoint(target.url), headers={"Authorization": f"Bearer {token}"},
            timeout=aiohttp.ClientWSTimeout(ws_close=2), autoping=False,
        ) as ws:
            await ws.close()
    except aiohttp.WSServerHandshakeError as e:
        if e.status in (401, 403):
            raise PreflightError(
                f"{where} refused the API key ({e.status} {e.message or 'unauthorized'}): check "
                "LIVEKIT_API_KEY and LIVEKIT_API_SECRET (a key pair from that server's keys)") from None
        raise PreflightError(
            f"{where} answered the agent endpoint with {e.status} {e.message}: check that "
            "LIVEKIT_URL is the LiveKit server itself, not a page or proxy in front of it") from None
    except aiohttp.ClientConnectorDNSError:
        raise PreflightError(f"cannot resolve the host of {target.url}: check LIVEKIT_URL") from None
    except aiohttp.ClientConnectorCertificateError as e:
        raise PreflightError(f"{where}: TLS certificate not trusted ({e.certificate_error}): "
                             "check LIVEKIT_URL (wss:// needs a valid certificate)") from None
    except aiohttp.ClientConnectorError as e:
        reason = ("connection refused" if isinstance(e.os_error, ConnectionRefusedError)
                  else getattr(e.os_error, "strerror", None) or str(e))
        raise PreflightError(f"cannot reach {where} ({reason}): check LIVEKIT_URL and that the "
                             "server is running and reachable from here") from None
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
        raise PreflightError(f"{where} did not answer within {timeout:.0f} s: check LIVEKIT_URL "
                             "and the network (firewall, proxy)") from None
    except aiohttp.ClientError as e:
        raise PreflightError(f"cannot reach {where} ({e}): check LIVEKIT_URL") from None


def check_livekit_sync(target: LiveKitTarget, timeout: float = 10.0) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(check_livekit(target, timeout), timeout)

    try:
        asyncio.run(bounded())
    except asyncio.TimeoutError:
        raise PreflightError(f"LiveKit at {target.url} did not answer within {timeout:.0f} s: check "
                             "LIVEKIT_URL and the network (firewall, proxy)") from None
