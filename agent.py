"""Entry point of the Gemini Live voice agent: the product's commands in front of the
agents framework's CLI. `python agent.py --help` lists both."""

from __future__ import annotations

import importlib
import os
import sys

from dotenv import load_dotenv

# The product's commands: name -> (module, function(argv) -> exit status, one line of help).
PRODUCT_COMMANDS: dict[str, tuple[str, str, str]] = {
    "local": ("devstack.run_local", "main",
              "everything on this machine: local LiveKit and offline Gemini unless configured, "
              "a worker and the web client"),
    "call": ("clients.wav_call", "main", "talk to the agent from a WAV file and record its reply"),
    "sip": ("agents.telephony.cli", "sip_main", "set up phone calls: LiveKit SIP trunks and dispatch rules"),
    "dial": ("agents.telephony.cli", "dial_main", "have the agent call a phone number"),
}
# The agents framework's commands (livekit-agents 1.8.9), run by its own CLI.
FRAMEWORK_COMMANDS: dict[str, str] = {
    "start": "run the agent worker against LIVEKIT_URL (production; also for development)",
    "connect": "run the agent in one given room (--room), without dispatch",
    "console": "the framework's console mode (needs the LiveKit CLI, `lk agent console`)",
    "download-files": "download the plugins' model files (none are needed by this agent)",
    "dev": "deprecated by livekit-agents: use `start` (or the LiveKit CLI's `lk agent dev`)",
}
# Commands that run a worker against LiveKit: checked before the framework gets them.
_WORKER_COMMANDS = ("start", "dev", "connect")
_HELP = ("-h", "--help")


def usage() -> str:
    width = max(map(len, [*PRODUCT_COMMANDS, *FRAMEWORK_COMMANDS]))
    lines = ["usage: python agent.py COMMAND [OPTIONS]   (python agent.py COMMAND --help: its options)",
             "", "The product's commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in PRODUCT_COMMANDS.items()]
    lines += ["", "The agents framework's commands (livekit-agents):"]
    lines += [f"  {name:<{width}}  {text}" for name, text in FRAMEWORK_COMMANDS.items()]
    lines += ["", "Settings: config/agent.yaml, each overridable as AGENT_<SECTION>__<KEY> (README.md).",
              "Secrets: LIVEKIT_URL, LIVEKIT_API_KEY, LIVEKIT_API_SECRET, GOOGLE_API_KEY, "
              "from the environment or .env."]
    return "\n".join(lines)


def run_product_command(name: str, argv: list[str]) -> int:
    module, function, _ = PRODUCT_COMMANDS[name]
    try:
        target = getattr(importlib.import_module(module), function)
    except ModuleNotFoundError as e:
        if e.name is None or not module.startswith(e.name):
            raise  # a dependency of the module is missing: that is a real error
        print(f"error: `{name}` is not available in this build ({module} is not installed)", file=sys.stderr)
        return 2
    except AttributeError:
        print(f"error: `{name}` is not available in this build ({module} has no {function})", file=sys.stderr)
        return 2
    return int(target(argv) or 0)


def _require_google_credentials() -> None:
    from agents.settings import SettingsError

    if os.environ.get("GOOGLE_API_KEY"):
        return
    if os.environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").lower() in ("1", "true"):
        return
    raise SettingsError(
        "GOOGLE_API_KEY is not set: put it in the environment or in .env "
        "(or set GOOGLE_GENAI_USE_VERTEXAI=true with Google Cloud credentials); "
        "`python agent.py local` runs without it on the offline Gemini server"
    )


def _port_settings(settings) -> dict:
    return {
        settings.worker.http_port: "worker.http_port (AGENT_WORKER__HTTP_PORT)",
        settings.observability.metrics_port: "observability.metrics_port (AGENT_OBSERVABILITY__METRICS_PORT)",
    }


def describe_failure(error: BaseException, settings) -> str:
    """The worker stopped after it started: say why and what to do, in one line."""
    from agents import preflight

    if isinstance(error, OSError) and error.errno in (98, 48):  # EADDRINUSE (Linux, macOS)
        for port, setting in _port_settings(settings).items():
            if port and preflight.port_in_use(port):
                return (f"port {port} is already in use: set {setting} to a free port, "
                        "or 0 for any free port")
        return f"a port the worker needs is in use ({error})"
    if isinstance(error, RuntimeError) and "failed to connect to livekit" in str(error):
        return (f"lost the connection to LiveKit at {os.environ.get('LIVEKIT_URL', '?')} and could not "
                f"reconnect ({error}): check that the server is running and reachable (LIVEKIT_URL)")
    return f"the worker stopped: {type(error).__name__}: {error}"


def run_framework_command(argv: list[str]) -> int:
    command = argv[1] if len(argv) > 1 else ""
    wants_help = any(a in _HELP for a in argv[2:])
    if command in ("start", "dev") and not wants_help:
        # job processes' metrics reach the worker's /metrics (before prometheus_client loads)
        from agents.observability import multiproc

        multiproc.prepare()

    from agents import preflight
    from agents.settings import Settings, SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError as e:
        if not wants_help:
            print(f"error: {e}", file=sys.stderr)
            return 2
        settings = Settings.model_construct()  # help needs no valid settings
    if command in _WORKER_COMMANDS and not wants_help:
        try:
            _require_google_credentials()
            target = preflight.livekit_target(argv[2:])
            preflight.check_ports(_port_settings(settings))
            preflight.check_livekit_sync(target)
        except SettingsError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        except preflight.PreflightError as e:
            print(f"error: {e}", file=sys.stderr)
            return e.code

    from livekit.agents import cli

    from agents.server import create_server

    server = create_server(settings)
    sys.argv = argv  # the framework's CLI reads its arguments from sys.argv
    try:
        cli.run_app(server)
        status = 0
    except SystemExit as e:
        status = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    if server.failure is not None:
        print(f"error: {describe_failure(server.failure, settings)}", file=sys.stderr)
        return 1
    return status


def main(argv: list[str]) -> int:
    # .env first, so LIVEKIT_* / GOOGLE_* / AGENT_* reach the framework, the plugin and
    # the settings alike; variables already in the environment win.
    load_dotenv(override=False)
    command = argv[1] if len(argv) > 1 else ""
    if command in ("", *_HELP):
        print(usage())
        return 0
    if command == "help":  # `help` or `help COMMAND`
        if len(argv) < 3:
            print(usage())
            return 0
        return main([argv[0], argv[2], "--help"])
    if command in PRODUCT_COMMANDS:
        return run_product_command(command, argv[2:])
    if command in FRAMEWORK_COMMANDS:
        return run_framework_command(argv)
    print(f"error: unknown command {command!r}; `python agent.py --help` lists the commands", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
