"""A chat-only person's session asks Gemini for TEXT when the model can give it (the
catalogue says which can); a model that replies only in audio keeps AUDIO, and the agent
drops the audio instead (agents/chat_only.py; the browser test checks what the page gets)."""

from __future__ import annotations

from agents import chat_only
from agents.settings import ModelSettings, Settings


def test_a_model_with_text_replies_is_asked_for_text() -> None:
    settings = Settings()
    text = chat_only.text_settings(settings)
    assert settings.model.modality == "audio" and text.model.modality == "text"
    assert text.model.name == settings.model.name and text.model.voice == settings.model.voice


def test_an_audio_only_model_keeps_audio() -> None:
    settings = Settings(model=ModelSettings(name="gemini-3.8-live"))
    assert chat_only.text_settings(settings) is settings
