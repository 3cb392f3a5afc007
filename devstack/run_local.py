"""`python agent.py local`: the whole product on this machine, no accounts needed.

Starts what is not configured for real — the local LiveKit server (unless LIVEKIT_URL is
set) and the offline Gemini Live server (unless GOOGLE_API_KEY is set) — then one agent
worker (`python agent.py start`, exactly as deployed) and the web client, and says how
to join. Ctrl-C stops everything.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

from agents.preflight import port_in_use
from agents.settings import SettingsError, load_settings
from agents.telephony.config import SipConfigError

from .livekit import load_config
from .stack import ROOT, LocalStack


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python agent.py local", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--livekit-config", default=str(ROOT / "livekit.yaml"),
                    help="livekit-server config for the local server (default: livekit.yaml)")
    ap.add_argument("--livekit-port", type=int, default=None,
                    help="port of the local LiveKit server (default: `port` in the config)")
    ap.add_argument("--web-port", type=int, default=None,
                    help="port of the web client (default: web.port in config/agent.yaml)")
    ap.add_argument("--workers", type=int, default=1, help="agent worker processes (default 1)")
    ap.add_argument("--keep-logs", action="store_true",
                    help="keep the logs folder when stopping (default: removed on exit)")
    ap.add_argument("--sip-port", type=int, default=5060,
                    help="UDP port of the local SIP gateway (default 5060; 0 = any free port)")
    return ap.parse_args(argv)


def check_ports(args: argparse.Namespace, settings) -> None:
    """A second `agent.py local` (or anything else on these ports) stops here, saying which
    port is taken and which flag moves it, before anything starts."""
    web_port = settings.web.port if args.web_port is None else args.web_port
    taken = [(web_port, "the web client", "--web-port N (or web.port / AGENT_WEB__PORT)")]
    if not os.environ.get("LIVEKIT_URL"):
        lk_port = args.livekit_port
        if lk_port is None:
            lk_port = load_config(Path(args.livekit_config)).port
        taken.insert(0, (lk_port, "the local LiveKit server", f"--livekit-port N (or `port` in {args.livekit_config})"))
    for port, what, flag in taken:
        if port and port_in_use(port):
            raise OSError(f"port {port} for {what} is already in use (is `agent.py local` already "
                          f"running?): stop that, or pass {flag}; 0 picks any free port")


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    check_ports(args, settings)
    workdir = Path(tempfile.mkdtemp(prefix="gemini-agent-local-"))
    try:
        return await _run(args, settings, workdir)
    finally:
        if args.keep_logs:
            print(f"logs kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _run(args: argparse.Namespace, settings, workdir: Path) -> int:
    from agents.web.server import WebServer
    from agents.web.token_service import LiveKitCredentials

    stack = LocalStack(workdir=workdir, livekit_config=Path(args.livekit_config),
                       livekit_port=args.livekit_port, sip_port=args.sip_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with stack:
        env = stack.env()
        creds = LiveKitCredentials(env["LIVEKIT_URL"], env["LIVEKIT_API_KEY"], env["LIVEKIT_API_SECRET"])
        for _ in range(args.workers):
            await stack.start_worker()
        phone_line = await _phone_line(stack, settings)
        async with WebServer(settings, creds, port=args.web_port) as web:
            lines = [
                "",
                "Gemini Live agent is running.",
                f"  LiveKit  {creds.url}  "
                + ("(yours, from LIVEKIT_URL)" if stack.real_livekit
                   else "(local stand-in; set LIVEKIT_URL and keys to use a real server)"),
                "  Gemini   " + ("Gemini Live (GOOGLE_API_KEY)" if stack.real_gemini
                                 else "offline stand-in: it answers with your own words "
                                      "(set GOOGLE_API_KEY for real Gemini)"),
                f"  Agent    '{settings.agent.name or '(automatic dispatch)'}', "
                f"{len(stack.workers)} worker(s), logs in {workdir}"
                + (" (kept)" if args.keep_logs else " (removed on exit; --keep-logs keeps them)"),
                "",
                f"Talk to it in a browser:  {web.url}",
                "Or from a WAV file:       python agent.py call --input question.wav --output reply.wav",
                *phone_line,
                "Ctrl-C stops everything.",
                "",
            ]
            print("\n".join(lines), flush=True)
            watch = [asyncio.create_task(w.proc.wait()) for w in stack.workers]
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([stopped, *watch], return_when=asyncio.FIRST_COMPLETED)
            for t in [stopped, *watch]:
                t.cancel()
            if stopped not in done:
                dead = next(w for w in stack.workers if w.proc.returncode is not None)
                print(f"error: the agent worker exited ({dead.proc.returncode}):\n{dead.log_tail()}",
                      file=sys.stderr)
                return 1
    print("stopped.")
    return 0


async def _phone_line(stack: LocalStack, settings) -> list[str]:
    """The local SIP gateway's trunks and rules from the telephony file; where to call."""
    if stack.sip is None:
        return []
    from livekit import api

    from agents.telephony.config import load_telephony, telephony_path
    from agents.telephony.provision import Provisioner

    config = load_telephony(telephony_path(settings))
    lk = stack.livekit
    async with api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret) as lkapi:
        await Provisioner(lkapi, config).run(dry_run=False)
    numbers = [n for t in config.inbound_trunks for n in t.numbers] or ["+15550100"]
    return [f"Or call it from a softphone on this machine:  sip:{numbers[0]}@{stack.sip.address}"
            f"  (UDP, G.711; {telephony_path(settings).name} routes it)"]


def _check_livekit_env() -> None:
    """A real LiveKit server needs all three of its variables; the local one needs none."""
    names = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    given = [n for n in names if os.environ.get(n)]
    if given and len(given) < len(names):
        missing = [n for n in names if n not in given]
        raise SettingsError(
            f"{', '.join(given)} set but {', '.join(missing)} not: set all three to use your "
            "LiveKit server, or none to use the local one")


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        load_settings()  # a bad setting stops us before anything starts
        _check_livekit_env()
        return asyncio.run(run(args))
    except (SettingsError, SipConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # e.g. the worker did not register
        print(f"error: {e}", file=sys.stderr)
        return 1
