"""The Gemini Live model catalogue (`config/models.yaml`): what each model supports, and the
settings a model cannot honour, found before anything connects.

Google adds Live models often, so a name missing from the catalogue is allowed (with a
warning); a listed model asked for something it lacks stops start-up with one message.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

if TYPE_CHECKING:
    from google.genai import types

    from .settings import ModelSettings

CATALOGUE_FILE = Path(__file__).resolve().parent.parent / "config" / "models.yaml"

Api = Literal["gemini_api", "vertex"]
API_NAMES = {"gemini_api": "the Gemini API", "vertex": "Vertex AI"}


class ModelFeatures(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    apis: tuple[Api, ...]
    architecture: Literal["native_audio", "half_cascade"]
    input: tuple[Literal["audio", "text", "image", "video"], ...]
    response_modalities: tuple[Literal["AUDIO", "TEXT"], ...]
    affective_dialog: bool
    proactive_audio: Literal["optional", "always", False]
    thinking: Literal["none", "budget", "level", "built_in"]
    thinking_levels: tuple[str, ...] = ()
    status: Literal["preview", "stable", "shut_down"]
    shut_down_on: str | None = None
    replacement: str | None = None

    @property
    def is_half_cascade(self) -> bool:
        return self.architecture == "half_cascade"


class _Catalogue(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, ModelFeatures]


class CatalogueError(Exception):
    """config/models.yaml is malformed; the message names the file and the entry."""


@functools.lru_cache(maxsize=4)
def load(path: str | os.PathLike[str] = CATALOGUE_FILE) -> dict[str, ModelFeatures]:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return _Catalogue.model_validate(raw).models
    except OSError as e:
        raise CatalogueError(f"model catalogue {path}: {e.strerror}") from None
    except yaml.YAMLError as e:
        raise CatalogueError(f"model catalogue {path}: {e}") from None
    except ValidationError as e:
        where = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
        raise CatalogueError(f"model catalogue {path}: {where}") from None


def features_for(name: str) -> ModelFeatures | None:
    """The catalogue's entry for a model name (with or without `models/`), None if unknown."""
    return load().get(name.strip().removeprefix("models/"))


def api_in_use(environ: dict[str, str] | os._Environ = os.environ) -> Api:
    """Which service the plugin will talk to (google-genai's own switch)."""
    vertex = environ.get("GOOGLE_GENAI_USE_VERTEXAI", "").strip().lower() in ("1", "true")
    return "vertex" if vertex else "gemini_api"


@dataclass(frozen=True)
class Refusal:
    """A setting the chosen model cannot honour."""

    key: str  # dotted settings path, e.g. "model.affective_dialog"
    value: Any
    reason: str


def refusals(m: ModelSettings, *, api: Api | None = None) -> list[Refusal]:
    """Every setting in `m` that its model lacks (empty for an unknown model)."""
    f = features_for(m.name)
    if f is None:
        return []
    api = api or api_in_use()
    name = m.name
    out: list[Refusal] = []

    def refuse(key: str, value: Any, reason: str) -> None:
        out.append(Refusal(f"model.{key}", value, reason))

    if f.status == "shut_down":
        when = f" on {f.shut_down_on}" if f.shut_down_on else ""
        instead = f"; use {f.replacement}" if f.replacement else ""
        refuse("name", name, f"{name} was shut down{when}{instead}")
        return out
    if api not in f.apis:
        served = " and ".join(API_NAMES[a] for a in f.apis)
        others = sorted(n for n, g in load().items() if api in g.apis and g.status != "shut_down")
        refuse("name", name, f"{name} is served on {served} only, not {API_NAMES[api]} "
               f"(GOOGLE_GENAI_USE_VERTEXAI={'true' if api == 'vertex' else 'unset'}); "
               f"models there: {', '.join(others)}")
    kind = "a half-cascade model" if f.is_half_cascade else "this model"
    wanted = m.modality.upper()
    if wanted not in f.response_modalities:
        refuse("modality", m.modality, f"{name} replies only with "
               f"{' or '.join(f.response_modalities).lower()}"
               + ("; the reply's text comes from output_transcription" if wanted == "TEXT" else ""))
    if m.affective_dialog and not f.affective_dialog:
        refuse("affective_dialog", True, f"{name} ({kind}) does not support affective dialog")
    if m.proactive_audio and f.proactive_audio is False:
        refuse("proactive_audio", True, f"{name} ({kind}) does not support proactive audio")
    t = m.thinking
    if t.enabled:
        if f.thinking == "none":
            refuse("thinking.enabled", True, f"{name} ({kind}) does not think; set thinking.enabled: false")
        elif f.thinking == "built_in":
            refuse("thinking.enabled", True, f"{name} reasons on its own and takes no thinking "
                   "settings; set thinking.enabled: false")
        elif f.thinking == "budget" and t.level is not None:
            refuse("thinking.level", t.level, f"{name} takes a thinking budget "
                   "(thinking.budget_tokens), not a thinking level")
        elif f.thinking == "level":
            if t.budget_tokens is not None:
                refuse("thinking.budget_tokens", t.budget_tokens, f"{name} takes a thinking level "
                       f"(thinking.level: {' | '.join(f.thinking_levels)}), not a token budget")
            if t.level is not None and t.level not in f.thinking_levels:
                refuse("thinking.level", t.level,
                       f"{name} takes one of {', '.join(f.thinking_levels)}")
    return out


def warnings(m: ModelSettings) -> list[str]:
    """Things worth a line in the log, not worth refusing."""
    if features_for(m.name) is None:
        return [f"model.name = {m.name!r} is not in the model catalogue ({CATALOGUE_FILE.name}): "
                "its features cannot be checked before Gemini sees the setup"]
    return []


def thinking_config(m: ModelSettings) -> types.ThinkingConfig | None:
    """The ThinkingConfig to send for `m.thinking` (None: send none). A level goes out as
    thinking_level, a budget as thinking_budget; refusals() has already ruled out the
    kind the model does not take."""
    from google.genai import types

    t = m.thinking
    if not t.enabled:
        return None
    level = types.ThinkingLevel[t.level.upper()] if t.level else None
    return types.ThinkingConfig(
        thinking_budget=t.budget_tokens, thinking_level=level, include_thoughts=t.include_thoughts
    )
