"""`python -m devstack.livekit --config livekit.yaml [--port N] [--node-ip IP] [--sip-port N]`

With --sip-port, the local SIP gateway (devstack/sip) too, in the same process (0 = any
free port); the ready line then ends with `sip=<host:port>`.

Prints exactly one line once ready (never the secret), then serves until
interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .config import load_config
from .server import LocalLiveKitServer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m devstack.livekit", description=__doc__)
    ap.add_argument("--config", default="livekit.yaml", help="livekit-server config file")
    ap.add_argument("--port", type=int, default=None, help="override `port` (0 = any free port)")
    ap.add_argument("--node-ip", default=None, help="override rtc.node_ip (address for ICE)")
    ap.add_argument("--sip-port", type=int, default=None, help="also serve SIP on this UDP port (0 = any free)")
    args = ap.parse_args(argv)

    overrides: dict = {}
    if args.port is not None:
        overrides["port"] = args.port
    if args.node_ip:
        overrides["rtc"] = {"node_ip": args.node_ip}
    config = load_config(args.config, **overrides)
    level = getattr(logging, config.logging.level.upper(), logging.INFO)
    # logs go to stderr; stdout carries only the ready line
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("aioice").setLevel(max(level, logging.WARNING))
    logging.getLogger("aiortc").setLevel(max(level, logging.WARNING))

    async def run() -> None:
        server = LocalLiveKitServer(config)
        await server.start()
        gateway = None
        if args.sip_port is not None:
            from ..sip import start_gateway

            gateway = await start_gateway(server, port=args.sip_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sip = f" sip={gateway.address}" if gateway is not None else ""
        print(f"local-livekit ready {server.url} api_key={server.api_key}{sip}", flush=True)
        try:
            await stop.wait()
        finally:
            if gateway is not None:
                await gateway.stop()
            await server.stop()

    asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
