"""Run the offline Gemini Live server standalone.

    python -m devstack.gemini --host 127.0.0.1 --port 8443 --cert /tmp/offline-gemini.pem

Prints one line once ready; clients then need GOOGLE_API_KEY (any value),
GOOGLE_GEMINI_BASE_URL=<url> and SSL_CERT_FILE=<ca_bundle>.

Fault soaks: --connection-lifetime-s / --go-away-lead-s shorten connections,
--random-faults SEED injects faults (--fault-* options), --fault-log appends each
fault fired as a JSON line, --records writes every conversation's turns on exit.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys

from .server import DEFAULT_API_KEY, OfflineGeminiServer


async def _main(args: argparse.Namespace) -> None:
    server = OfflineGeminiServer(
        host=args.host, port=args.port, cert_path=args.cert, ca_bundle_path=args.ca_bundle,
        api_key=args.api_key, chunk_ms=args.chunk_ms, lead_ms=args.lead_ms,
        connection_lifetime_s=args.connection_lifetime_s, go_away_lead_s=args.go_away_lead_s,
        handle_ttl_s=args.handle_ttl_s,
    )
    server.fault_log_path = args.fault_log
    await server.start()
    if args.random_faults is not None:
        server.random_faults(seed=args.random_faults, mean_interval_s=args.fault_interval_s,
                             kinds=_csv(args.fault_kinds), moments=_csv(args.fault_moments),
                             close_codes=[int(c) for c in _csv(args.fault_close_codes)])
    print(f"offline-gemini ready {server.base_url} cert={server.cert_path} ca_bundle={server.ca_bundle}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
        if args.records:
            with open(args.records, "w") as f:
                json.dump(server.summary(), f, indent=1)


def _csv(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


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
    ap.add_argument("--connection-lifetime-s", type=float, default=None, help="close each connection after this long")
    ap.add_argument("--go-away-lead-s", type=float, default=10.0, help="goAway this long before the lifetime ends")
    ap.add_argument("--handle-ttl-s", type=float, default=7200.0, help="resumption handles expire this long after their connection")
    ap.add_argument("--random-faults", type=int, default=None, metavar="SEED", help="inject seeded random faults")
    ap.add_argument("--fault-interval-s", type=float, default=5.0, help="mean time between random faults")
    ap.add_argument("--fault-kinds", default="go_away,close,drop,stall")
    ap.add_argument("--fault-moments", default="reply,after_turn,setup")
    ap.add_argument("--fault-close-codes", default="1011")
    ap.add_argument("--fault-log", default=None, help="append each fault fired here (JSON lines)")
    ap.add_argument("--records", default=None, help="write faults and conversations here (JSON) on exit")
    ap.add_argument("--log-level", default="WARNING")
    args = ap.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
