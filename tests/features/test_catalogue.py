"""The model catalogue (config/models.yaml): every model accepted with what it supports,
refused with a named reason for what it lacks, at start-up and by the offline server (with
the real google-genai client), as the service refuses it."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
import pytest_asyncio
from google import genai
from google.genai import errors, types

from agents import catalogue
from agents.settings import SettingsError, load_settings
from devstack.gemini import OfflineGeminiServer

MODELS = catalogue.load()
LIVE = {name: f for name, f in MODELS.items() if f.status != "shut_down"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AGENT_") or key == "GOOGLE_GENAI_USE_VERTEXAI":
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout


def everything_supported(name: str) -> dict[str, str]:
    """AGENT_* settings asking `name` for every feature the catalogue gives it."""
    f = MODELS[name]
    env = {"AGENT_MODEL__NAME": name,
           "AGENT_MODEL__MODALITY": "text" if "TEXT" in f.response_modalities else "audio"}
    if f.affective_dialog:
        env["AGENT_MODEL__AFFECTIVE_DIALOG"] = "true"
    if f.proactive_audio:
        env["AGENT_MODEL__PROACTIVE_AUDIO"] = "true"
    if f.thinking == "budget":
        env |= {"AGENT_MODEL__THINKING__ENABLED": "true", "AGENT_MODEL__THINKING__BUDGET_TOKENS": "512"}
    if f.thinking == "level":
        env |= {"AGENT_MODEL__THINKING__ENABLED": "true",
                "AGENT_MODEL__THINKING__LEVEL": f.thinking_levels[-1]}
    if f.apis == ("vertex",):
        env["GOOGLE_GENAI_USE_VERTEXAI"] = "true"
    return env


def lacking(name: str) -> list[tuple[dict[str, str], str, str]]:
    """(settings, refused key, words of the reason) for each feature `name` lacks."""
    f = MODELS[name]
    base = {"AGENT_MODEL__NAME": name}
    if f.apis == ("vertex",):
        base["GOOGLE_GENAI_USE_VERTEXAI"] = "true"
    out = []
    if not f.affective_dialog:
        out.append(({"AGENT_MODEL__AFFECTIVE_DIALOG": "true"}, "model.affective_dialog",
                    "does not support affective dialog"))
    if f.proactive_audio is False:
        out.append(({"AGENT_MODEL__PROACTIVE_AUDIO": "true"}, "model.proactive_audio",
                    "does not support proactive audio"))
    if "TEXT" not in f.response_modalities:
        out.append(({"AGENT_MODEL__MODALITY": "text"}, "model.modality", "replies only with audio"))
    thinking_on = {"AGENT_MODEL__THINKING__ENABLED": "true"}
    if f.thinking == "none":
        out.append((thinking_on, "model.thinking.enabled", "does not think"))
    elif f.thinking == "built_in":
        out.append((thinking_on, "model.thinking.enabled", "reasons on its own"))
    elif f.thinking == "budget":
        out.append((thinking_on | {"AGENT_MODEL__THINKING__LEVEL": "low"}, "model.thinking.level",
                    "takes a thinking budget"))
    elif f.thinking == "level":
        out.append((thinking_on | {"AGENT_MODEL__THINKING__BUDGET_TOKENS": "512"},
                    "model.thinking.budget_tokens", "takes a thinking level"))
    other_api = "vertex" if "vertex" not in f.apis else ("gemini_api" if "gemini_api" not in f.apis else None)
    if other_api == "vertex":
        out.append(({"GOOGLE_GENAI_USE_VERTEXAI": "true"}, "model.name", "only, not Vertex AI"))
    elif other_api == "gemini_api":
        out.append(({"GOOGLE_GENAI_USE_VERTEXAI": ""}, "model.name", "only, not the Gemini API"))
    return [(base | env, key, words) for env, key, words in out]


def load_with(monkeypatch, env: dict[str, str]):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings()


@pytest.mark.parametrize("name", sorted(LIVE))
def test_every_model_is_accepted_with_every_feature_it_has(monkeypatch, name):
    s = load_with(monkeypatch, everything_supported(name))
    f = MODELS[name]
    assert s.model.name == name
    assert s.model.is_half_cascade == (f.architecture == "half_cascade")
    assert s.model.affective_dialog == f.affective_dialog
    thinking = catalogue.thinking_config(s.model)
    if f.thinking == "level":
        assert thinking.thinking_level == types.ThinkingLevel[f.thinking_levels[-1].upper()]
        assert thinking.thinking_budget is None
    elif f.thinking == "budget":
        assert thinking.thinking_budget == 512 and thinking.thinking_level is None
    else:
        assert thinking is None


@pytest.mark.parametrize("name, env, key, words", [
    (name, env, key, words) for name in sorted(LIVE) for env, key, words in lacking(name)
])
def test_a_feature_the_model_lacks_stops_start_up_naming_it(monkeypatch, name, env, key, words):
    with pytest.raises(SettingsError) as e:
        load_with(monkeypatch, env)
    msg = str(e.value)
    assert msg.startswith("invalid settings: " + key + " = ")
    assert name in msg and words in msg
    env_key = "AGENT_" + key.upper().replace(".", "__")
    if env_key in env:  # it says where the value came from
        assert f"(from {env_key})" in msg


def test_every_model_lacks_something_or_has_everything():
    """The refusal table above covers each feature for at least one model."""
    keys = {key for name in LIVE for _, key, _ in lacking(name)}
    assert {"model.affective_dialog", "model.proactive_audio", "model.modality", "model.name",
            "model.thinking.enabled", "model.thinking.level", "model.thinking.budget_tokens"} <= keys


def test_a_shut_down_model_names_its_replacement(monkeypatch):
    with pytest.raises(SettingsError, match=r"model.name = 'gemini-2.0-flash-live-001' \(from "
                       r"AGENT_MODEL__NAME\): gemini-2.0-flash-live-001 was shut down on 2025-12-09; "
                       r"use gemini-2.5-flash-native-audio-preview-12-2025"):
        load_with(monkeypatch, {"AGENT_MODEL__NAME": "models/gemini-2.0-flash-live-001"})


def test_an_unknown_model_is_allowed_with_a_warning(monkeypatch, caplog):
    with caplog.at_level(logging.WARNING, logger="gemini-agent"):
        s = load_with(monkeypatch, {"AGENT_MODEL__NAME": "gemini-9.9-live-next",
                                    "AGENT_MODEL__AFFECTIVE_DIALOG": "true"})
    assert s.model.name == "gemini-9.9-live-next" and s.model.affective_dialog
    assert "'gemini-9.9-live-next' is not in the model catalogue" in caplog.text


def test_several_refusals_in_one_message(monkeypatch, tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("model:\n  name: gemini-3.8-live\n  affective_dialog: true\n"
                    "  thinking:\n    enabled: true\n")
    with pytest.raises(SettingsError) as e:
        load_settings(path)
    msg = str(e.value)
    assert "model.affective_dialog = True (in agent.yaml): gemini-3.8-live" in msg
    assert "; model.thinking.enabled = True (in agent.yaml): gemini-3.8-live reasons on its own" in msg


def test_a_malformed_catalogue_is_one_clear_error(tmp_path):
    bad = tmp_path / "models.yaml"
    bad.write_text("models:\n  gemini-x:\n    apis: [gemini_api]\n    architecture: hybrid\n")
    with pytest.raises(catalogue.CatalogueError, match=r"models.yaml: models.gemini-x.architecture"):
        catalogue.load(bad)


# ---- the offline server refuses what the service refuses ---------------------------------

@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server(tmp_path_factory):
    async with OfflineGeminiServer(cert_dir=tmp_path_factory.mktemp("gemini")) as srv:
        yield srv


@pytest.fixture
def client(server, monkeypatch):
    for var in ("GEMINI_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(var, raising=False)
    for key, value in server.client_env().items():
        monkeypatch.setenv(key, value)

    def make(api_version: str | None = None) -> genai.Client:
        opts = types.HttpOptions(api_version=api_version) if api_version else None
        return genai.Client(http_options=opts)  # SSL_CERT_FILE is read here

    return make


def connect_config(name: str, env: dict[str, str], monkeypatch) -> tuple[types.LiveConnectConfig, str | None]:
    """The setup the product sends for these settings (the plugin's v1alpha switch included)."""
    s = load_with(monkeypatch, {k: v for k, v in env.items() if k.startswith("AGENT_")})
    m = s.model
    cfg = types.LiveConnectConfig(
        response_modalities=[types.Modality.TEXT if m.modality == "text" else types.Modality.AUDIO],
        enable_affective_dialog=m.affective_dialog or None,
        proactivity=types.ProactivityConfig(proactive_audio=True) if m.proactive_audio else None,
        thinking_config=catalogue.thinking_config(m),
    )
    alpha = "v1alpha" if (m.affective_dialog or m.proactive_audio) else None
    return cfg, alpha


GEMINI_API = sorted(n for n, f in LIVE.items() if "gemini_api" in f.apis)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", GEMINI_API)
async def test_offline_server_serves_each_model_with_its_features(client, monkeypatch, name):
    cfg, version = connect_config(name, everything_supported(name), monkeypatch)
    async with client(version).aio.live.connect(model=name, config=cfg) as session:
        await session.send_realtime_input(text="hello")
        async for msg in session.receive():
            if msg.server_content and msg.server_content.turn_complete:
                break


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name, setup, reason", [
    ("gemini-3.8-live", {"enable_affective_dialog": True}, "affective dialog is not supported by models/gemini-3.8-live"),
    ("gemini-3.1-flash-live-preview", {"proactivity": {"proactive_audio": True}}, "proactive audio is not supported"),
    ("gemini-3.8-live", {"proactivity": {"proactive_audio": False}}, "proactive audio cannot be disabled"),
    ("gemini-3.8-live", {"thinking_config": {"thinking_level": "LOW"}}, "thinking_config is not supported by models/gemini-3.8-live"),
    ("gemini-3.1-flash-live-preview", {"thinking_config": {"thinking_budget": 256}}, "thinking_budget is not supported"),
    ("gemini-2.5-flash-native-audio-preview-12-2025", {"thinking_config": {"thinking_level": "LOW"}}, "thinking_level is not supported"),
    ("gemini-3.8-live-extended-thinking", {"response_modalities": ["TEXT"]}, "response modality TEXT is not supported"),
])
async def test_offline_server_refuses_what_the_model_lacks(client, name, setup, reason):
    with pytest.raises(errors.APIError) as info:
        async with client("v1alpha").aio.live.connect(model=name, config=setup):
            pass
    assert info.value.code == 1007
    assert reason in str(info.value)


@pytest.mark.asyncio(loop_scope="module")
async def test_offline_server_wants_v1alpha_for_affective_dialog(client):
    with pytest.raises(errors.APIError) as info:
        async with client("v1").aio.live.connect(
            model="gemini-2.5-flash-native-audio-preview-12-2025", config={"enable_affective_dialog": True}
        ):
            pass
    assert info.value.code == 1007 and "v1alpha" in str(info.value)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("name", ["gemini-2.0-flash-live-001", "gemini-live-2.5-flash-native-audio"])
async def test_offline_server_does_not_find_shut_down_or_vertex_only_models(client, name):
    with pytest.raises(errors.APIError) as info:
        async with client().aio.live.connect(model=name, config={"response_modalities": ["AUDIO"]}):
            pass
    assert info.value.code == 1008 and f"models/{name} is not found" in str(info.value)
