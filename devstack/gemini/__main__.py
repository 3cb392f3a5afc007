"""Run the offline Gemini Live server standalone.

    python -m devstack.gemini --host 127.0.0.1 --port 8443 --cert /tmp/offline-gemini.pem

Prints one line once ready; clients then need GOOGLE_API_KEY (any value),
GOOGLE_GEMINI_BASE_URL=<url> and SSL_CERT_FILE=<ca_bundle>.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from .server import DEFAULT_API_KEY, OfflineGeminiServer


async def _main(args: argparse.Namespace) -> None:
    server = OfflineGeminiServer(
        host=args.host, port=args.port, cert_path=args.cert, ca_bundle_path=args.ca_bundle,
        api_key=args.api_key, chunk_ms=args.chunk_ms, lead_ms=args.lead_ms,
    )
    await server.start()
    print(f"offline-gemini ready {server.base_url} cert={server.cert_path} ca_bundle={server.ca_bundle}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m devstack.gemini", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument("--cert", required=True, help="where to write the self-signed certificate (PEM)")
    ap.add_argument("--ca-bundle", default=None, help="where to write certifi roots + our cert (default: next to --cert)")
    ap.add_argument("--api-key", default=DEFAULT_API_KEY, help="the key client_env() advertises; any key is accepted")
    ap.add_argument("--chunk-ms", type=int, default=40)
    ap.add_argument("--lead-ms", type=int, default=120)
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
