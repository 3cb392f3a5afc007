"""A local stand-in for LiveKit's SIP service (development and test infrastructure).

`start_gateway(livekit_server, port=5060)` serves SIP over UDP on 127.0.0.1 and attaches
to the local LiveKit server's SIP Twirp service (devstack/livekit/sip_service.py), whose
trunks and dispatch rules route its calls.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .gateway import SipGateway

if TYPE_CHECKING:
    from ..livekit import LocalLiveKitServer


async def start_gateway(server: "LocalLiveKitServer", *, host: str = "127.0.0.1", port: int = 5060) -> SipGateway:
    gw = SipGateway(server.sip.store, livekit_url=server.url, api_key=server.api_key,
                    api_secret=server.api_secret, host=host, port=port)
    await gw.start()
    server.sip.gateway = gw
    return gw


__all__ = ["SipGateway", "start_gateway"]
