"""Entry point of the Gemini Live voice agent.

    python agent.py dev|start|console|connect ...   the agents framework's CLI (worker)
    python agent.py local                            everything on this machine: a local
                                                     LiveKit server and offline Gemini unless
                                                     LIVEKIT_URL / GOOGLE_API_KEY are set,
                                                     the worker and the web client
    python agent.py call --input in.wav --output reply.wav
                                                     talk to the agent from a WAV file
    python agent.py sip provision [--dry-run] | sip list
                                                     LiveKit SIP trunks and rules from config/sip.yaml
    python agent.py dial <number>                    call a phone; the agent talks once it answers
"""

from __future__ import annotations

import os
import sys

from dotenv import load_dotenv

from agents.settings import SettingsError, load_settings


def _require_google_credentials() -> None:
    if os.environ.get("GOOGLE_API_KEY"):
        return
    if os.environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in ("1", "true"):
        return
    raise SettingsError(
        "GOOGLE_API_KEY is not set: put it in the environment or in .env "
        "(or set GOOGLE_GENAI_USE_VERTEXAI=true with Google Cloud credentials); "
        "`python agent.py local` runs without it on the offline Gemini server"
    )


def main(argv: list[str]) -> int:
    # .env first, so LIVEKIT_* / GOOGLE_* / AGENT_* reach the framework, the plugin and
    # the settings alike; variables already in the environment win.
    load_dotenv(override=False)
    command = argv[1] if len(argv) > 1 else ""

    if command == "local":
        from devstack.run_local import main as run_local

        return run_local(argv[2:])
    if command == "call":
        from clients.wav_call import main as wav_call

        return wav_call(argv[2:])
    if command in ("sip", "dial"):
        from agents.telephony.cli import main as telephony

        return telephony(argv[1:])

    try:
        settings = load_settings()
        if command not in ("", "--help", "-h", "download-files"):
            _require_google_credentials()
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from livekit.agents import cli

    from agents.server import create_server

    cli.run_app(create_server(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
