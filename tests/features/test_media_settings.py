"""The `video:`, `noise:` and `direct:` settings: defaults, refusals with a named reason, and
what reaches Gemini (the real plugin against the offline server)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from livekit import rtc
from livekit.plugins.google import realtime

from agents import noise, video
from agents.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith("AGENT_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def test_defaults_documented_in_agent_yaml():
    s = load_settings()
    assert (s.video.prefer, s.video.fps, s.video.silent_fps, s.video.media_resolution) == ("screen_share", 1.0, 0.3, None)
    assert (s.noise.browser, s.noise.phone, s.noise.sdk) == ("webrtc", "off", "off")
    assert s.direct.enabled is False and s.direct.token_uses == 1


def test_a_bare_off_in_yaml_means_off(tmp_path):
    path = tmp_path / "agent.yaml"
    path.write_text("noise:\n  browser: off\n  phone: webrtc\n")
    s = load_settings(path)
    assert (s.noise.browser, s.noise.phone) == ("off", "webrtc")


@pytest.mark.parametrize("env, match", [
    ({"AGENT_NOISE__PHONE": "livekit_bvc_telephony"},
     r"noise.phone = 'livekit_bvc_telephony' \(from AGENT_NOISE__PHONE\): needs LiveKit Cloud's plugin: "
     r"pip install livekit-plugins-noise-cancellation"),
    ({"AGENT_NOISE__BROWSER": "krisp"}, r"noise.browser = 'krisp'.*'off', 'webrtc', 'livekit_nc'"),
    ({"AGENT_VIDEO__FPS": "1", "AGENT_VIDEO__SILENT_FPS": "1.5"},
     r"video.silent_fps = '1.5' \(from AGENT_VIDEO__SILENT_FPS\): must not exceed fps \(1\)"),
    ({"AGENT_VIDEO__PREFER": "window"}, r"video.prefer = 'window'.*'screen_share' or 'camera'"),
    ({"AGENT_VIDEO__MEDIA_RESOLUTION": "ultra"}, r"video.media_resolution = 'ultra'.*'low', 'medium' or 'high'"),
    ({"AGENT_DIRECT__TOKEN_USES": "0"}, r"direct.token_uses = '0'.*greater than or equal to 1"),
])
def test_bad_values_are_refused_naming_key_and_reason(monkeypatch, env, match):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SettingsError, match=match):
        load_settings()


def test_noise_settings_give_the_framework_a_selector_only_when_used(monkeypatch):
    from livekit.agents import room_io

    base = room_io.AudioInputOptions(sample_rate=16000, frame_size_ms=10, auto_gain_control=True)
    monkeypatch.setenv("AGENT_NOISE__BROWSER", "off")
    assert noise.with_noise_suppression(base, load_settings().noise) is base
    monkeypatch.setenv("AGENT_NOISE__BROWSER", "webrtc")
    opts = noise.with_noise_suppression(base, load_settings().noise)
    assert callable(opts.noise_cancellation) and opts.auto_gain_control is True  # explicit, as the framework asks


def test_the_suppressor_lowers_noise_and_keeps_a_tone_in_frames_of_any_10ms_multiple():
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 3) / 16000
    tone = 6000 * np.sin(2 * np.pi * 300 * t) * (t > 2.0)  # silence... then a tone in the last second
    mixed = np.clip(tone + rng.normal(0, 900, len(t)), -32768, 32767).astype(np.int16)
    for step in (160, 800):  # latency.mode low (10 ms) and framework (50 ms) frames
        ns = noise.WebRTCNoiseSuppressor()
        out = np.concatenate([
            np.frombuffer(ns._process(rtc.AudioFrame(mixed[i:i + step].tobytes(), 16000, 1, step)).data, np.int16)
            for i in range(0, len(mixed) - step + 1, step)])
        ns._close()
        noise_in, noise_out = mixed[16000:32000].std(), out[16000:32000].std()
        tone_out = out[-8000:].std()
        assert noise_out < noise_in / 3, (step, noise_in, noise_out)  # ~10 dB less noise
        assert tone_out > 0.7 * tone[-8000:].std(), (step, tone_out)  # the signal stays


async def test_media_resolution_reaches_gemini_through_the_plugin(gemini, monkeypatch):
    monkeypatch.setenv("AGENT_VIDEO__ENABLED", "true")
    monkeypatch.setenv("AGENT_VIDEO__MEDIA_RESOLUTION", "low")
    options = video.model_options(load_settings().video)
    model = realtime.RealtimeModel(instructions="be brief", **options)
    session = model.session()
    try:
        setup = (await gemini.wait_for_session(1)).setup
        assert setup["generation_config"]["media_resolution"] == "MEDIA_RESOLUTION_LOW"
    finally:
        await session.aclose()
        await model.aclose()
    monkeypatch.setenv("AGENT_VIDEO__MEDIA_RESOLUTION", "")
    assert video.model_options(load_settings().video) == {}
