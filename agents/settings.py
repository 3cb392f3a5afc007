"""The agent's settings: `config/agent.yaml`, overridden by environment variables and `.env`.

Precedence (highest first): environment variables, `.env`, the YAML file, defaults.
Environment keys are `AGENT_` + the YAML path joined by `__`, e.g. `AGENT_MODEL__VOICE=Kore`.

Secrets (LIVEKIT_API_SECRET, GOOGLE_API_KEY) are not settings: the agents framework and
the Google plugin read them from the environment themselves, and nothing here logs them.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import typing

import yaml
from pathlib import Path
from typing import Literal

from livekit.plugins.google.realtime.api_proto import Voice

from . import catalogue
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULT_CONFIG_FILE = CONFIG_DIR / "agent.yaml"
ENV_PREFIX = "AGENT_"
ENV_DELIMITER = "__"

VOICES: tuple[str, ...] = typing.get_args(Voice)

DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-12-2025"


class _Section(BaseModel):
    # A misspelt key in YAML must not be silently ignored.
    model_config = ConfigDict(extra="forbid")


class ThinkingSettings(_Section):
    enabled: bool = False
    # Gemini 2.5 models take a token budget, Gemini 3 models a level (config/models.yaml)
    budget_tokens: int | None = Field(default=None, ge=0, le=32768)
    level: Literal["minimal", "low", "medium", "high"] | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _unset(cls, v: object) -> object:
        return None if isinstance(v, str) and v.strip().lower() in ("", "null", "none") else v
    include_thoughts: bool = False


class ContextCompressionSettings(_Section):
    enabled: bool = True
    trigger_tokens: int | None = Field(default=None, ge=1000)
    target_tokens: int | None = Field(default=None, ge=100)

    @model_validator(mode="after")
    def _target_below_trigger(self) -> ContextCompressionSettings:
        if self.trigger_tokens and self.target_tokens and self.target_tokens >= self.trigger_tokens:
            raise ValueError(
                f"target_tokens ({self.target_tokens}) must be below trigger_tokens "
                f"({self.trigger_tokens})"
            )
        return self


class ModelSettings(_Section):
    name: str = DEFAULT_MODEL
    voice: str = "Puck"
    language: str | None = Field(default=None, description="BCP-47 code, e.g. en-US")
    modality: Literal["audio", "text"] = "audio"
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    affective_dialog: bool = False
    proactive_audio: bool = False
    thinking: ThinkingSettings = ThinkingSettings()
    input_transcription: bool = True
    output_transcription: bool = True
    context_compression: ContextCompressionSettings = ContextCompressionSettings()
    session_resumption: bool = True

    @field_validator("name")
    @classmethod
    def _model_name(cls, v: str) -> str:
        v = v.strip().removeprefix("models/")
        if not v or any(c.isspace() for c in v):
            raise ValueError("must be a Gemini Live model name, e.g. " + DEFAULT_MODEL)
        return v

    @field_validator("voice")
    @classmethod
    def _voice(cls, v: str) -> str:
        match = {name.lower(): name for name in VOICES}.get(v.strip().lower())
        if match is None:
            raise ValueError("must be one of the Gemini voices: " + ", ".join(VOICES))
        return match

    @field_validator("language")
    @classmethod
    def _language(cls, v: str | None) -> str | None:
        if v is None or v.strip() == "":
            return None
        parts = v.strip().split("-")
        if not (2 <= len(parts[0]) <= 3 and all(p.isalnum() and 0 < len(p) <= 8 for p in parts)):
            raise ValueError("must be a BCP-47 language code such as en-US or ko-KR")
        return v.strip()

    @property
    def is_half_cascade(self) -> bool:
        f = catalogue.features_for(self.name)
        return f is not None and f.is_half_cascade


class ConnectionSettings(_Section):
    """How a call outlives its Gemini Live connection (agents/gemini/connection.py)."""

    # a connect whose setup is not answered within this counts as a failed attempt
    setup_timeout_s: float = Field(default=10.0, gt=0.0, le=120.0)
    # silence from Gemini while a reply is being generated or was asked for = a stall
    stall_timeout_s: float = Field(default=8.0, gt=0.0, le=120.0)
    # how long reconnecting may take before the caller is told and the call ends
    reconnect_within_s: float = Field(default=30.0, gt=0.0, le=600.0)
    # caller audio kept until Gemini has it (sent again after a reconnect)
    replay_buffer_s: float = Field(default=60.0, ge=5.0, le=600.0)
    # after goAway, rotate at a turn boundary, or this long before the deadline at the latest
    go_away_margin_s: float = Field(default=1.0, ge=0.0, le=30.0)
    # said to the caller when Gemini cannot be reached (also posted in the room's chat)
    apology_text: str = "Sorry, I can't continue this call right now because of a technical problem. Please try again in a moment. Goodbye."
    # the spoken apology (a WAV relative to config/); "" = the chat message only
    apology_audio: str = "apology.wav"


class TurnDetectionSettings(_Section):
    # server_vad: Gemini detects speech. manual: push-to-talk, the client marks turns.
    mode: Literal["server_vad", "manual"] = "server_vad"
    start_sensitivity: Literal["high", "low"] = "high"
    end_sensitivity: Literal["high", "low"] = "high"
    prefix_padding_ms: int = Field(default=20, ge=0, le=2000)
    silence_duration_ms: int = Field(default=500, ge=0, le=10000)
    # Whether the user's speech interrupts the agent (barge-in).
    interruptions: bool = True


class VideoSettings(_Section):
    enabled: bool = False
    # Gemini Live takes at most about 1 frame per second of video: `fps` while the person
    # speaks, `silent_fps` otherwise (the framework's adaptive rate; equal = a fixed rate)
    fps: float = Field(default=1.0, gt=0.0, le=2.0)
    silent_fps: float = Field(default=0.3, ge=0.0, le=2.0)
    # the track sent when the person shares both (agents/video.py)
    prefer: Literal["screen_share", "camera"] = "screen_share"
    # Gemini's media resolution for images (tokens per frame); null = Gemini's default
    media_resolution: Literal["low", "medium", "high"] | None = None

    @field_validator("media_resolution", mode="before")
    @classmethod
    def _unset(cls, v: object) -> object:
        return None if isinstance(v, str) and v.strip().lower() in ("", "null", "none") else v

    @field_validator("silent_fps")
    @classmethod
    def _silent_not_faster(cls, v: float, info: ValidationInfo) -> float:
        fps = info.data.get("fps")
        if fps is not None and v > fps:
            raise ValueError(f"must not exceed fps ({fps:g}): the rate while the person is silent")
        return v


class AudioSettings(_Section):
    # While the agent's first reply plays, the framework can replace the caller's audio
    # with silence so that speaker echo is not taken for barge-in before the caller's echo
    # canceller converges. Only browsers on speakers need it: a phone line (SIP) or a
    # headset has no such echo, and discarding their audio would eat their first words.
    echo_warmup_s: float = Field(default=3.0, ge=0.0, le=10.0)
    echo_warmup_for_sip: bool = False
    # WebRTC's automatic gain control on the caller's audio before it reaches the model
    # (the framework's default): evens out quiet and loud microphones.
    auto_gain_control: bool = True


class LatencySettings(_Section):
    # low: the product's low-latency audio path (agents/audio_path.py). framework: the
    # agents framework's and the Google plugin's own sizes (24 kHz/50 ms input frames,
    # plugin resampler and 50 ms chunks, 50 ms output frames, 200 ms AudioSource queue).
    mode: Literal["low", "framework"] = "low"
    # RoomIO input: 16000 is Gemini's own rate, so the plugin's resampler is bypassed.
    input_sample_rate: Literal[16000, 24000, 48000] = 16000
    input_frame_ms: int = Field(default=10, ge=10, le=100, multiple_of=10)
    # audio per realtime_input message to Gemini (the plugin sends 50 ms)
    input_chunk_ms: int = Field(default=20, ge=10, le=100, multiple_of=10)
    # the agent's audio: frame size, and the WebRTC AudioSource queue ahead of the sender
    output_frame_ms: int = Field(default=10, ge=10, le=100, multiple_of=10)
    output_queue_ms: int = Field(default=100, ge=10, le=1000, multiple_of=10)
    # measurement hook for bench/: write per-frame timestamps to <trace_file>.<pid>.<room>.jsonl
    trace_file: str = ""


class AgentIdentitySettings(_Section):
    # Explicit dispatch name; "" means automatic dispatch to every new room.
    name: str = "gemini-agent"
    instructions_file: str = "instructions.md"
    # Speak first when a participant joins.
    greet: bool = True
    greeting_instructions: str = "Greet the user briefly and ask how you can help."

    @field_validator("name")
    @classmethod
    def _dispatch_name(cls, v: str) -> str:
        v = v.strip()
        if len(v) > 128 or any(c.isspace() or c in "/\\" for c in v):
            raise ValueError("must be at most 128 characters with no spaces or slashes")
        return v


class WorkerSettings(_Section):
    # The worker's health/metrics HTTP port; 0 = any free port (several workers per host).
    http_port: int = Field(default=8081, ge=0, le=65535)
    # Job processes kept started and prewarmed, so a new call does not wait for one.
    num_idle_processes: int = Field(default=3, ge=0, le=64)
    # Above this CPU load (0-1) the worker tells LiveKit it is full; LiveKit then
    # dispatches new rooms to other workers.
    load_threshold: float = Field(default=0.7, gt=0.0, le=1.0)
    # What "load" is: 0 = the host's CPU use (the framework's default); N > 0 = calls in
    # progress / N, for a worker sized to N calls (docs/scaling.md) on a host it shares.
    max_calls: int = Field(default=0, ge=0, le=1000)
    # Reconnection attempts when the LiveKit connection drops (2 s apart, growing to 10 s;
    # 16 = the framework's ~2 minutes); then the worker exits 1 for its supervisor to restart.
    connect_retries: int = Field(default=16, ge=0, le=1000)
    # How each call (job) runs: "process" = its own process (a crash or a leak stays in
    # that call; memory limits apply), "thread" = a thread of the worker process (shared
    # memory, far fewer MB per call; one job's crash or blocking code hits every call).
    # See config/agent.yaml and bench/capacity.py for the measurement behind the default.
    job_executor: Literal["process", "thread"] = "process"
    # Job processes whose memory (PSS: shared pages divided among their sharers) exceeds
    # this are logged; 0 = never. Process executor only.
    job_memory_warn_mb: float = Field(default=1000, ge=0)
    # Job processes above this memory (PSS) are killed, ending that call; 0 = no limit.
    job_memory_limit_mb: float = Field(default=0, ge=0)

    @field_validator("job_memory_limit_mb")
    @classmethod
    def _memory_limit(cls, v: float, info: ValidationInfo) -> float:
        if v > 0:
            if info.data.get("job_executor") != "process":
                raise ValueError(
                    "needs job_executor: process (threads share the worker's memory, so no "
                    "single call can be measured or killed); set 0 or use job_executor: process"
                )
            warn = info.data.get("job_memory_warn_mb", 0)
            if warn > v:
                raise ValueError(f"must be at least job_memory_warn_mb ({warn:g}), or 0 for no limit")
        return v


class WebSettings(_Section):
    # The product's HTTP server: the browser client and its token endpoint.
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    token_ttl_s: int = Field(default=600, ge=30, le=86400)
    # Origins (scheme://host[:port]) besides the server's own that may call /api/token.
    allowed_origins: list[str] = []
    rate_limit_per_minute: int = Field(default=30, ge=1, le=10000)
    # POST /api/gemini-token (direct mode), per client address: each token opens a Gemini session
    gemini_token_rate_limit_per_minute: int = Field(default=10, ge=1, le=10000)
    # The LiveKit URL handed to browsers when it differs from LIVEKIT_URL (which the agent
    # worker uses), e.g. a public wss:// address in front of an internal one. "" = LIVEKIT_URL.
    livekit_public_url: str = ""
    # Take the client address for rate limiting from the last X-Forwarded-For entry; only
    # behind a reverse proxy that sets it, or every client could pick its own address.
    trust_forwarded_for: bool = False
    # Meeting invite links: how long one admits people to its room (each join hands out a
    # fresh one), and how long the page waits for the agent before saying it has not joined.
    invite_ttl_s: int = Field(default=14400, ge=60, le=7 * 86400)
    agent_join_timeout_s: float = Field(default=15.0, ge=1.0, le=300.0)

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, v: list[str]) -> list[str]:
        out = []
        for origin in v:
            o = origin.strip().rstrip("/").lower()
            m = re.fullmatch(r"(https?)://([a-z0-9.-]+|\[[0-9a-f:.]+\])(:[0-9]{1,5})?", o)
            if not m:
                raise ValueError(
                    f"{origin!r} is not an origin; write scheme://host[:port], e.g. "
                    "https://app.example.com (no path, no wildcard)"
                )
            out.append(o)
        return out

    @field_validator("livekit_public_url")
    @classmethod
    def _public_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if v and not re.fullmatch(r"(wss?|https?)://[^\s/?#]+(/[^\s?#]*)?", v):
            raise ValueError("must be a ws://, wss://, http:// or https:// URL, or empty")
        return v


NoiseSuppressor = Literal["off", "webrtc", "livekit_nc", "livekit_bvc", "livekit_bvc_telephony"]


class NoiseSettings(_Section):
    # Noise suppression on the caller's audio, per kind of caller (agents/noise.py):
    # webrtc = WebRTC's suppressor (livekit-rtc, runs anywhere); livekit_* = LiveKit
    # Cloud's noise cancellation (livekit-plugins-noise-cancellation, LiveKit Cloud only).
    browser: NoiseSuppressor = "webrtc"
    phone: NoiseSuppressor = "off"
    sdk: NoiseSuppressor = "off"

    @field_validator("browser", "phone", "sdk", mode="before")
    @classmethod
    def _unquoted_off(cls, v: object) -> object:
        return "off" if v is False else v  # YAML reads a bare `off` as false

    @field_validator("browser", "phone", "sdk")
    @classmethod
    def _cloud_plugin_installed(cls, v: str) -> str:
        if v.startswith("livekit_") and importlib.util.find_spec("livekit.plugins.noise_cancellation") is None:
            raise ValueError(
                "needs LiveKit Cloud's plugin: pip install livekit-plugins-noise-cancellation "
                "(and a LiveKit Cloud project); or use webrtc, which runs anywhere"
            )
        return v


class DirectSettings(_Section):
    # Client-to-server mode: the web server mints Gemini ephemeral tokens (agents/web/
    # gemini_token.py) so a browser talks to the Live API itself; the API key stays here.
    enabled: bool = False
    token_uses: int = Field(default=1, ge=1, le=10)  # sessions one token may open
    token_ttl_s: int = Field(default=600, ge=30, le=72000)  # the token and its sessions expire
    new_session_s: int = Field(default=60, ge=10, le=3600)  # time to open the session with it


class ObservabilitySettings(_Section):
    # Prometheus /metrics of the worker (the framework's and the product's, every job
    # process included); null = off, 0 = any free port (several workers on one host).
    metrics_port: int | None = Field(default=8082, ge=0, le=65535)
    # OpenTelemetry traces of every call (the agents framework's spans) sent over OTLP/HTTP,
    # e.g. http://otel-collector:4318/v1/traces; "" = tracing off.
    tracing_otlp_endpoint: str = ""
    # Put conversation text (transcripts, tool arguments) in the spans; off keeps only timings.
    tracing_include_content: bool = False

    @field_validator("tracing_otlp_endpoint")
    @classmethod
    def _otlp_endpoint(cls, v: str) -> str:
        v = v.strip()
        if v and not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", v):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP), or empty")
        return v
class MeetingSettings(_Section):
    # Several people in one room (agents/meeting.py). One person: the one-to-one path.
    enabled: bool = True
    # always: answer every turn. addressed: only when called by name (or asked directly),
    # with Gemini's proactive audio on. auto: always with one person, addressed with more.
    reply_policy: Literal["auto", "always", "addressed"] = "auto"
    # what people call the agent in the room, and other names it answers to
    name: str = Field(default="Gemini", min_length=1, max_length=64)
    aliases: list[str] = []
    # a short welcome when someone joins a meeting already under way
    greet_late_joiners: bool = False
    # the local speech detector that decides who holds the floor (per person, 10 ms frames)
    speech_threshold_dbfs: float = Field(default=-45.0, ge=-90.0, le=0.0)
    # audio kept from before a person's speech was detected, so their first words survive
    preroll_ms: int = Field(default=300, ge=0, le=2000)
    # longest a person queued behind another speaker waits for the agent's answer
    queue_wait_s: float = Field(default=8.0, gt=0.0, le=60.0)

    @field_validator("name", "aliases")
    @classmethod
    def _names(cls, v):
        names = [v] if isinstance(v, str) else v
        for n in names:
            if not n.strip() or len(n) > 64:
                raise ValueError("names must be 1-64 characters, not blank")
        return v.strip() if isinstance(v, str) else [n.strip() for n in v]
class PhoneSettings(_Section):
    # Phone calls over SIP (agents/phone.py); trunks, rules and transfer destinations are
    # in the telephony file (config/sip.yaml, provisioned with `python agent.py sip provision`).
    telephony_file: str = "sip.yaml"
    greeting_instructions: str = (
        "You are on a phone call. Greet the caller briefly, say who you are and ask how you can help."
    )
    # Tell the model the caller's number (LiveKit's hide_phone_number hides it anyway).
    share_caller_number: bool = True
    # Hang up after this long (a short notice first); 0 = no limit.
    max_call_duration_s: float = Field(default=1800, ge=0)
    # Hang up when nobody has spoken for this long (a short notice first); 0 = never.
    silence_timeout_s: float = Field(default=60, ge=0)
    limit_notice: str = "Tell the caller in one short sentence that the call has to end now, and say goodbye."


class Settings(BaseSettings):
    """Everything that shapes the agent, validated before any connection is made."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=ENV_DELIMITER,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",  # .env also holds LIVEKIT_* / GOOGLE_* keys that are not ours
        yaml_file=str(DEFAULT_CONFIG_FILE),
    )

    agent: AgentIdentitySettings = AgentIdentitySettings()
    model: ModelSettings = ModelSettings()
    connection: ConnectionSettings = ConnectionSettings()
    turn_detection: TurnDetectionSettings = TurnDetectionSettings()
    video: VideoSettings = VideoSettings()
    audio: AudioSettings = AudioSettings()
    latency: LatencySettings = LatencySettings()
    worker: WorkerSettings = WorkerSettings()
    web: WebSettings = WebSettings()
    direct: DirectSettings = DirectSettings()
    noise: NoiseSettings = NoiseSettings()
    observability: ObservabilitySettings = ObservabilitySettings()
    meeting: MeetingSettings = MeetingSettings()
    phone: PhoneSettings = PhoneSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings, YamlConfigSettingsSource(settings_cls))

    def instructions(self) -> str:
        path = CONFIG_DIR / self.agent.instructions_file
        try:
            text = path.read_text(encoding="utf-8").strip()
        except OSError as e:
            raise SettingsError(
                f"agent.instructions_file = {self.agent.instructions_file!r}: cannot read "
                f"{path} ({e.strerror})"
            ) from None
        if not text:
            raise SettingsError(f"agent.instructions_file = {self.agent.instructions_file!r}: {path} is empty")
        return text


class SettingsError(Exception):
    """A setting has a bad value; the message names the key, the value and what is allowed."""


def load_settings(config_file: str | os.PathLike[str] | None = None) -> Settings:
    """Load and validate the settings; raise SettingsError with one readable message."""
    path = Path(config_file or os.environ.get("AGENT_CONFIG_FILE") or DEFAULT_CONFIG_FILE)
    if not path.is_file():
        raise SettingsError(f"config file {path} does not exist")
    cls = type("Settings", (Settings,), {"model_config": {**Settings.model_config, "yaml_file": str(path)}})
    try:
        settings = cls()
        settings.instructions()  # fail at start-up, not at the first call
        _check_model(settings, path)
    except ValidationError as e:
        raise SettingsError(_describe(e, path)) from None
    except catalogue.CatalogueError as e:
        raise SettingsError(str(e)) from None
    except (ValueError, TypeError, yaml.YAMLError) as e:  # malformed YAML and the like
        raise SettingsError(f"config file {path}: {e}") from None
    return settings


def _source(loc: list[str], path: Path) -> str:
    env_key = ENV_PREFIX + ENV_DELIMITER.join(loc).upper()
    return f"from {env_key}" if env_key in os.environ else f"in {path.name}"


def _check_model(settings: Settings, path: Path) -> None:
    """What the chosen model lacks (config/models.yaml) stops start-up; an unknown model
    only gets a warning."""
    refused = catalogue.refusals(settings.model)
    if refused:
        raise SettingsError("invalid settings: " + "; ".join(
            f"{r.key} = {r.value!r} ({_source(r.key.split('.'), path)}): {r.reason}" for r in refused
        ))
    for warning in catalogue.warnings(settings.model):
        logging.getLogger("gemini-agent").warning(warning)


def _describe(error: ValidationError, path: Path) -> str:
    lines = []
    for err in error.errors():
        loc = [str(p) for p in err["loc"]]
        key = ".".join(loc) or "(top level)"
        source = _source(loc, path)
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(f"unknown setting {key} ({source})")
        else:
            lines.append(f"{key} = {err.get('input')!r} ({source}): {msg}")
    return "invalid settings: " + "; ".join(lines)
