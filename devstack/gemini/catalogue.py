"""What the service refuses in a setup, per model, read from the product's model catalogue
(`config/models.yaml`, the data Google documents) so the stand-in and the product agree.

Names the catalogue does not list are left to `models.py` (accepted if known there).
"""

from __future__ import annotations

import functools
from pathlib import Path

import yaml

from . import protocol as p

CATALOGUE_FILE = Path(__file__).resolve().parents[2] / "config" / "models.yaml"


@functools.lru_cache(maxsize=1)
def entries() -> dict[str, dict]:
    return (yaml.safe_load(CATALOGUE_FILE.read_text(encoding="utf-8")) or {}).get("models") or {}


def _not_found(name: str, version: str) -> p.ProtocolError:
    return p.ProtocolError(
        p.CLOSE_POLICY,
        f"models/{name} is not found for API version {version}, or is not supported for "
        "bidiGenerateContent. Call ListModels to see the list of available models.",
    )


def _invalid(what: str) -> p.ProtocolError:
    return p.ProtocolError(p.CLOSE_INVALID, f"Request contains an invalid argument: {what}")


def check_setup(name: str, setup: dict, version: str) -> None:
    """Raise the service's close (ProtocolError) for a setup this model cannot serve.

    `setup` is normalised (snake_case keys). This server is the Gemini API endpoint."""
    f = entries().get(name)
    if f is None:
        return
    if f.get("status") == "shut_down" or "gemini_api" not in (f.get("apis") or ()):
        raise _not_found(name, version)
    gc = setup.get("generation_config") or {}
    alpha = version.endswith("alpha")

    if gc.get("enable_affective_dialog"):
        if not alpha:
            raise _invalid(f"Unknown name \"enable_affective_dialog\": v1alpha only, not {version}.")
        if not f.get("affective_dialog"):
            raise _invalid(f"affective dialog is not supported by models/{name}.")

    proactivity = setup.get("proactivity")
    if proactivity is not None:
        if not alpha:
            raise _invalid(f"Unknown name \"proactivity\": v1alpha only, not {version}.")
        wants = bool(proactivity.get("proactive_audio"))
        offered = f.get("proactive_audio")
        if wants and offered is False:
            raise _invalid(f"proactive audio is not supported by models/{name}.")
        if not wants and offered == "always":
            raise _invalid(f"proactive audio cannot be disabled for models/{name}.")

    modalities = [str(m).upper() for m in (gc.get("response_modalities") or ["AUDIO"])]
    for m in modalities:
        if m not in f.get("response_modalities", ["AUDIO"]):
            raise _invalid(f"response modality {m} is not supported by models/{name}.")

    thinking = gc.get("thinking_config")
    if thinking:
        kind = f.get("thinking", "none")
        level = thinking.get("thinking_level")
        budget = thinking.get("thinking_budget")
        if kind in ("none", "built_in"):
            raise _invalid(f"thinking_config is not supported by models/{name}.")
        if level is not None and kind != "level":
            raise _invalid(f"thinking_level is not supported by models/{name}; use thinking_budget.")
        if budget is not None and kind != "budget":
            raise _invalid(f"thinking_budget is not supported by models/{name}; use thinking_level.")
        if level is not None and str(level).lower() not in f.get("thinking_levels", ()):
            raise _invalid(f"thinking_level {level} is not supported by models/{name}.")
