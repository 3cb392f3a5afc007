"""Settings: defaults, overrides, and the one clear message a bad value produces."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from google.genai import types

from agents.gemini.build import build_realtime_model, realtime_input_config
from agents.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for key in list(__import__("os").environ):
        if key.startswith("AGENT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)  # no stray .env from the checkout


def write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "agent.yaml"
    path.write_text(text)
    return path


def test_shipped_config_loads_with_documented_defaults():
    s = load_settings()
    assert s.agent.name == "gemini-agent"
    assert "native-audio" in s.model.name
    assert s.model.modality == "audio"
    assert s.turn_detection.mode == "server_vad"
    assert s.video.enabled is False
    assert "voice assistant" in s.instructions()


def test_environment_overrides_yaml(monkeypatch):
    monkeypatch.setenv("AGENT_MODEL__VOICE", "kore")
    monkeypatch.setenv("AGENT_TURN_DETECTION__SILENCE_DURATION_MS", "800")
    monkeypatch.setenv("AGENT_AGENT__NAME", "")
    s = load_settings()
    assert s.model.voice == "Kore"  # case-insensitive, normalised
    assert s.turn_detection.silence_duration_ms == 800
    assert s.agent.name == ""  # automatic dispatch


def test_dotenv_overrides_yaml(tmp_path):
    (tmp_path / ".env").write_text("AGENT_MODEL__MODALITY=text\nGOOGLE_API_KEY=not-a-setting\n")
    assert load_settings().model.modality == "text"


def test_bad_env_value_names_key_value_source_and_allowed(monkeypatch):
    monkeypatch.setenv("AGENT_MODEL__TEMPERATURE", "3.5")
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    assert "model.temperature = '3.5'" in msg
    assert "AGENT_MODEL__TEMPERATURE" in msg
    assert "less than or equal to 2" in msg


def test_unknown_voice_lists_the_voices(monkeypatch):
    monkeypatch.setenv("AGENT_MODEL__VOICE", "Robot")
    with pytest.raises(SettingsError, match=r"model.voice = 'Robot'.*Puck.*Zephyr"):
        load_settings()


def test_misspelt_yaml_key_is_reported(tmp_path):
    path = write_config(tmp_path, "model:\n  voise: Kore\n")
    with pytest.raises(SettingsError, match=r"unknown setting model.voise \(in agent.yaml\)"):
        load_settings(path)


def test_native_audio_features_on_half_cascade_model(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")
    path = write_config(tmp_path, "model:\n  name: gemini-live-2.5-flash\n  affective_dialog: true\n")
    with pytest.raises(SettingsError, match=r"model.affective_dialog = True \(in agent.yaml\): "
                       r"gemini-live-2.5-flash \(a half-cascade model\) does not support affective dialog"):
        load_settings(path)


def test_half_cascade_model_is_selectable(tmp_path, monkeypatch):
    monkeypatch.setenv("GOOGLE_GENAI_USE_VERTEXAI", "true")  # the half-cascade model left is Vertex AI's
    path = write_config(tmp_path, "model:\n  name: models/gemini-live-2.5-flash\n")
    s = load_settings(path)
    assert s.model.name == "gemini-live-2.5-flash" and s.model.is_half_cascade


@pytest.mark.parametrize(
    "yaml_text, match",
    [
        ("turn_detection:\n  mode: sometimes\n", r"turn_detection.mode = 'sometimes'.*'server_vad' or 'manual'"),
        ("video:\n  fps: 30\n", r"video.fps = 30.*less than or equal to 2"),
        ("model:\n  language: english please\n", r"model.language = 'english please'.*BCP-47"),
        ("agent:\n  name: my agent\n", r"agent.name = 'my agent'.*no spaces"),
        ("agent:\n  instructions_file: missing.md\n", r"agent.instructions_file = 'missing.md': cannot read"),
        ("model:\n  context_compression:\n    trigger_tokens: 5000\n    target_tokens: 9000\n",
         r"target_tokens \(9000\) must be below trigger_tokens \(5000\)"),
        ("model: [1, 2\n", r"agent.yaml"),
    ],
)
def test_bad_yaml_values(tmp_path, yaml_text, match):
    with pytest.raises(SettingsError, match=match):
        load_settings(write_config(tmp_path, yaml_text))


def test_missing_config_file(tmp_path):
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")


def test_turn_detection_maps_to_realtime_input_config(tmp_path):
    s = load_settings(write_config(tmp_path, (
        "turn_detection:\n  start_sensitivity: low\n  end_sensitivity: low\n"
        "  prefix_padding_ms: 100\n  silence_duration_ms: 700\n  interruptions: false\n")))
    cfg = realtime_input_config(s.turn_detection)
    aad = cfg.automatic_activity_detection
    assert aad.start_of_speech_sensitivity == types.StartSensitivity.START_SENSITIVITY_LOW
    assert aad.end_of_speech_sensitivity == types.EndSensitivity.END_SENSITIVITY_LOW
    assert (aad.prefix_padding_ms, aad.silence_duration_ms) == (100, 700)
    assert cfg.activity_handling == types.ActivityHandling.NO_INTERRUPTION
    manual = load_settings(write_config(tmp_path, "turn_detection:\n  mode: manual\n"))
    assert realtime_input_config(manual.turn_detection).automatic_activity_detection.disabled


def test_start_up_stops_with_one_clear_message_and_no_secret(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "AGENT_VIDEO__FPS": "-1",
           "GOOGLE_API_KEY": "sk-secret-value", "LIVEKIT_API_SECRET": "lk-secret-value"}
    proc = subprocess.run([sys.executable, str(ROOT / "agent.py"), "start"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "video.fps = '-1' (from AGENT_VIDEO__FPS): Input should be greater than 0" in proc.stderr
    assert "secret-value" not in proc.stdout + proc.stderr


def test_start_up_without_google_key_says_so(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "agent.py"), "start"], cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "GOOGLE_API_KEY is not set" in proc.stderr


def test_model_is_built_from_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    s = load_settings(write_config(tmp_path, (
        "model:\n  voice: Kore\n  modality: text\n  temperature: 0.3\n  proactive_audio: true\n"
        "  input_transcription: false\n")))
    model = build_realtime_model(s, "be brief")
    opts = model._opts
    assert opts.voice == "Kore" and opts.temperature == 0.3 and opts.proactivity is True
    assert opts.response_modalities == [types.Modality.TEXT]
    assert opts.input_audio_transcription is None
    assert model.capabilities.audio_output is False


def test_worker_job_executor_and_memory_limits(monkeypatch):
    s = load_settings()
    assert s.worker.job_executor == "process"
    assert s.worker.job_memory_limit_mb == 0
    monkeypatch.setenv("AGENT_WORKER__JOB_EXECUTOR", "thread")
    assert load_settings().worker.job_executor == "thread"

    # a memory limit cannot apply to calls that share the worker's process
    monkeypatch.setenv("AGENT_WORKER__JOB_MEMORY_LIMIT_MB", "300")
    with pytest.raises(SettingsError) as e:
        load_settings()
    msg = str(e.value)
    assert "worker.job_memory_limit_mb = '300'" in msg
    assert "AGENT_WORKER__JOB_MEMORY_LIMIT_MB" in msg
    assert "needs job_executor: process" in msg

    # with processes, the limit must not sit below the warning threshold
    monkeypatch.setenv("AGENT_WORKER__JOB_EXECUTOR", "process")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "must be at least job_memory_warn_mb (1000)" in str(e.value)
    monkeypatch.setenv("AGENT_WORKER__JOB_MEMORY_WARN_MB", "250")
    assert load_settings().worker.job_memory_limit_mb == 300

    monkeypatch.setenv("AGENT_WORKER__JOB_EXECUTOR", "fork")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "worker.job_executor = 'fork'" in str(e.value) and "'process' or 'thread'" in str(e.value)


def test_connection_bounds_are_checked_with_the_key_named(monkeypatch, product_settings):
    monkeypatch.setenv("AGENT_CONNECTION__RECONNECT_WITHIN_S", "0")
    with pytest.raises(SettingsError) as e:
        load_settings()
    assert "connection.reconnect_within_s = '0' (from AGENT_CONNECTION__RECONNECT_WITHIN_S)" in str(e.value)


def test_the_apology_audio_ships_and_plays_for_seconds(product_settings):
    from agents.call_failure import load_apology

    frame = load_apology(product_settings().connection)
    assert frame is not None and frame.duration > 3.0
