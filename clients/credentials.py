"""LiveKit server URL and API key/secret, and the least-privilege token of a caller."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path

import yaml
from dotenv import find_dotenv, load_dotenv
from livekit import api


class CredentialsError(Exception):
    """Something needed to reach LiveKit is missing or unusable; the message says what."""


@dataclass(frozen=True)
class LiveKitCredentials:
    url: str
    api_key: str
    api_secret: str


def load_env_files() -> None:
    """Load ``.env`` from the working directory (or a parent), then the project's own.

    Variables already set in the environment win over both files."""
    here = find_dotenv(usecwd=True)
    if here:
        load_dotenv(here, override=False)
    project = Path(__file__).resolve().parents[1] / ".env"
    if project.is_file():
        load_dotenv(project, override=False)


def signal_url(url: str) -> str:
    """The SDK wants ws(s)://; accept http(s):// and bare host:port too."""
    url = url.strip().rstrip("/")
    if url.startswith("http://"):
        return "ws://" + url[len("http://") :]
    if url.startswith("https://"):
        return "wss://" + url[len("https://") :]
    if "://" not in url:
        return "ws://" + url
    if not url.startswith(("ws://", "wss://")):
        raise CredentialsError(f"unsupported LiveKit URL scheme in {url!r}: use ws://, wss://, http:// or https://")
    return url


LIVEKIT_YAML = Path(__file__).resolve().parents[1] / "livekit.yaml"


def local_server() -> LiveKitCredentials | None:
    """The server `python agent.py local` starts, as livekit.yaml describes it."""
    try:
        config = yaml.safe_load(LIVEKIT_YAML.read_text()) or {}
        key, secret = next(iter((config.get("keys") or {}).items()))
        return LiveKitCredentials(f"ws://127.0.0.1:{int(config.get('port', 7880))}", str(key), str(secret))
    except (OSError, StopIteration, ValueError, AttributeError, yaml.YAMLError):
        return None


def resolve(url: str | None = None) -> LiveKitCredentials:
    """Credentials from arguments, the environment and .env files, or a clear error.

    With none of LIVEKIT_URL / LIVEKIT_API_KEY / LIVEKIT_API_SECRET set anywhere, the
    local server of `python agent.py local` (livekit.yaml) is used."""
    load_env_files()
    names = ("LIVEKIT_URL", "LIVEKIT_API_KEY", "LIVEKIT_API_SECRET")
    if not url and not any(os.environ.get(n) for n in names) and (local := local_server()):
        return local
    url = url or os.environ.get("LIVEKIT_URL", "")
    key = os.environ.get("LIVEKIT_API_KEY", "")
    secret = os.environ.get("LIVEKIT_API_SECRET", "")
    missing = [
        name
        for name, value in (
            ("LIVEKIT_URL (or --url)", url),
            ("LIVEKIT_API_KEY", key),
            ("LIVEKIT_API_SECRET", secret),
        )
        if not value
    ]
    if missing:
        raise CredentialsError(
            "missing LiveKit credentials: " + ", ".join(missing)
            + " (set them in the environment or in .env)"
        )
    return LiveKitCredentials(signal_url(url), key, secret)


def caller_token(
    creds: LiveKitCredentials,
    *,
    room: str,
    identity: str,
    agent_name: str | None,
    ttl: datetime.timedelta = datetime.timedelta(minutes=15),
) -> str:
    """A token to join one room, publish a microphone and subscribe — nothing else.

    A non-empty ``agent_name`` dispatches that agent through the token's room
    configuration (explicit dispatch); an empty one leaves dispatch to workers
    registered without a name (automatic dispatch)."""
    grants = api.VideoGrants(
        room_join=True,
        room=room,
        can_publish=True,
        can_publish_sources=["microphone"],
        can_subscribe=True,
        can_publish_data=False,
        can_update_own_metadata=False,
    )
    tok = (
        api.AccessToken(creds.api_key, creds.api_secret)
        .with_identity(identity)
        .with_name(identity)
        .with_grants(grants)
        .with_ttl(ttl)
    )
    if agent_name:
        tok = tok.with_room_config(
            api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name=agent_name)])
        )
    return tok.to_jwt()
