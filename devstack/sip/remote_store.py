"""The trunks and dispatch rules of a LiveKit server that runs in another process, read
over LiveKit's SIP Twirp API (livekit-api) before each new call, as livekit-sip asks
livekit-server for them. For a gateway in a process of its own (`python -m devstack.sip`)."""

from __future__ import annotations

import aiohttp
from livekit import api

from .routing import SipStore


class RemoteSipStore(SipStore):
    def __init__(self, url: str, api_key: str, api_secret: str) -> None:
        super().__init__()
        self._api = (url, api_key, api_secret)

    async def refresh(self) -> None:
        async with api.LiveKitAPI(*self._api, timeout=aiohttp.ClientTimeout(total=5)) as lk:
            inbound = (await lk.sip.list_inbound_trunk(api.ListSIPInboundTrunkRequest())).items
            outbound = (await lk.sip.list_outbound_trunk(api.ListSIPOutboundTrunkRequest())).items
            rules = (await lk.sip.list_dispatch_rule(api.ListSIPDispatchRuleRequest())).items
        self.inbound = {t.sip_trunk_id: t for t in inbound}
        self.outbound = {t.sip_trunk_id: t for t in outbound}
        self.rules = {r.sip_dispatch_rule_id: r for r in rules}
