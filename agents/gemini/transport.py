"""How the Live WebSocket is opened: TLS, compression and close timing."""

from __future__ import annotations

import os
import ssl

import certifi
from google.genai import types


def tls_context() -> ssl.SSLContext:
    """The TLS context google-genai builds for its Live WebSocket (SSL_CERT_FILE, else
    certifi's roots; SSL_CERT_DIR). Left to itself, google-genai loads the trust store three
    times per client (httpx, aiohttp, websockets), ~20 ms each: built once per job process
    (prewarm) and shared, it costs nothing per call."""
    return ssl.create_default_context(
        cafile=os.environ.get("SSL_CERT_FILE", certifi.where()),
        capath=os.environ.get("SSL_CERT_DIR"),
    )


def http_options(ssl_context: ssl.SSLContext | None, *, connect_timeout_s: float) -> types.HttpOptions:
    """google-genai hands these `async_client_args` to websockets' connect() only (it drops
    what connect() does not take before building its httpx and aiohttp clients):

    - no permessage-deflate: the messages are base64 PCM and JPEG, which hardly compress,
      so deflating ~50 messages a second each way only costs CPU (~4 % of a call's busy
      Python time, py-spy);
    - a short close handshake: a stalled server never answers the close frame, and the
      reconnect must not wait websockets' default 10 s for it;
    - the shared TLS context (see tls_context)."""
    args: dict = {"compression": None, "close_timeout": 1.0}
    if ssl_context is not None:
        args.update(ssl=ssl_context, verify=ssl_context)
    return types.HttpOptions(timeout=int(connect_timeout_s * 1000), async_client_args=args)
