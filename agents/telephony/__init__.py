"""Telephony as data: config/sip.yaml (LiveKit SIP trunks, dispatch rules, transfer
destinations), its provisioning through livekit-api, and the `sip` / `dial` commands."""
