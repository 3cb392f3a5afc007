"""`python -m devstack.sip --livekit URL --api-key K --api-secret S [--port N]`

The local SIP gateway in a process of its own, beside a local LiveKit server in another
(`python -m devstack.livekit`), whose trunks and dispatch rules it reads over LiveKit's SIP
API before each new call. Calls in only: dialling out and transfers go through the LiveKit
server's SIP service, which reaches a gateway only in its own process (`--sip-port`).

Prints exactly one line once ready (`local-sip ready sip=<host:port>`), then serves until
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .gateway import SipGateway
from .remote_store import RemoteSipStore


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.sip", description=__doc__)
    ap.add_argument("--livekit", required=True, help="the LiveKit server's URL (ws:// or http://)")
    ap.add_argument("--api-key", required=True)
    ap.add_argument("--api-secret", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=5060, help="UDP port for SIP (0 = any free)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    http_url = args.livekit.replace("ws", "http", 1) if args.livekit.startswith("ws") else args.livekit

    async def run() -> None:
        store = RemoteSipStore(http_url, args.api_key, args.api_secret)
        gw = SipGateway(store, livekit_url=args.livekit, api_key=args.api_key, api_secret=args.api_secret,
                        host=args.host, port=args.port)
        gw.before_invite = store.refresh
        await gw.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"local-sip ready sip={gw.address}", flush=True)
        try:
            await stop.wait()
        finally:
            await gw.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
