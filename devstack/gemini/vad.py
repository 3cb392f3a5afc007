"""Server-side activity detection on 16 kHz PCM, energy based.

Mirrors the knobs of `realtimeInputConfig.automaticActivityDetection`:
- startOfSpeechSensitivity HIGH/LOW: the loudness that counts as speech.
- prefixPaddingMs: how long speech must last before its start is committed.
- endOfSpeechSensitivity HIGH/LOW and silenceDurationMs: how long a silence ends it.
- disabled: no detection; the client marks turns with activityStart/activityEnd.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .audio import INPUT_RATE, rms_dbfs

FRAME_MS = 20
_FRAME = INPUT_RATE * FRAME_MS // 1000
_PREROLL_MS = 100  # audio kept before the first voiced frame so the onset is not cut
_MAX_UTTERANCE_S = 60.0


@dataclass
class VadConfig:
    disabled: bool = False
    start_threshold_dbfs: float = -45.0
    prefix_padding_ms: int = 40
    silence_duration_ms: int = 500

    @classmethod
    def from_setup(cls, realtime_input_config: dict | None) -> "VadConfig":
        aad = (realtime_input_config or {}).get("automatic_activity_detection") or {}
        start = str(aad.get("start_of_speech_sensitivity") or "")
        end = str(aad.get("end_of_speech_sensitivity") or "")
        low_start = start.endswith("LOW")
        low_end = end.endswith("LOW")
        cfg = cls(
            disabled=bool(aad.get("disabled", False)),
            # LOW start sensitivity needs louder input; unspecified behaves as HIGH.
            start_threshold_dbfs=-35.0 if low_start else -45.0,
            prefix_padding_ms=80 if low_start else 40,
            # LOW end sensitivity waits longer before ending the turn.
            silence_duration_ms=900 if low_end else 500,
        )
        if aad.get("prefix_padding_ms") is not None:
            cfg.prefix_padding_ms = max(0, int(aad["prefix_padding_ms"]))
        if aad.get("silence_duration_ms") is not None:
            cfg.silence_duration_ms = max(FRAME_MS, int(aad["silence_duration_ms"]))
        return cfg


@dataclass
class VadEvent:
    kind: str  # "start" | "end"
    utterance: np.ndarray | None = None  # float samples at 16 kHz, on "end"


_STATE = ("_pending", "_history", "_utt", "_voiced_run", "_silent_run", "_last_voiced_len", "in_speech")


class EnergyVad:
    """Judges turns by audio time: every decision counts 20 ms frames of samples, never
    the wall clock, so audio replayed in a burst is cut into the same turns as live."""

    def __init__(self, config: VadConfig) -> None:
        self.config = config
        self._pending = np.zeros(0, dtype=np.float32)
        self._history: list[np.ndarray] = []  # recent frames while idle (pre-roll)
        self._utt: list[np.ndarray] = []
        self._voiced_run = 0
        self._silent_run = 0
        self._last_voiced_len = 0  # frames in _utt up to the last voiced one
        self.in_speech = False

    def _voiced(self, frame: np.ndarray) -> bool:
        level = rms_dbfs(frame)
        # Once speaking, a lower threshold keeps quiet syllables inside the turn.
        threshold = self.config.start_threshold_dbfs - (8.0 if self.in_speech else 0.0)
        return level >= threshold

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        events: list[VadEvent] = []
        buf = np.concatenate([self._pending, samples])
        n_frames = len(buf) // _FRAME
        self._pending = buf[n_frames * _FRAME :]
        prefix_frames = max(1, -(-self.config.prefix_padding_ms // FRAME_MS))
        silence_frames = max(1, -(-self.config.silence_duration_ms // FRAME_MS))
        preroll_frames = _PREROLL_MS // FRAME_MS
        for i in range(n_frames):
            frame = buf[i * _FRAME : (i + 1) * _FRAME]
            voiced = self._voiced(frame)
            if not self.in_speech:
                self._history.append(frame)
                self._voiced_run = self._voiced_run + 1 if voiced else 0
                keep = preroll_frames + prefix_frames + 1
                if len(self._history) > keep:
                    del self._history[: len(self._history) - keep]
                if self._voiced_run >= prefix_frames:
                    self.in_speech = True
                    self._utt = list(self._history[-(self._voiced_run + preroll_frames) :])
                    self._last_voiced_len = len(self._utt)
                    self._silent_run = 0
                    self._history = []
                    events.append(VadEvent("start"))
                continue
            self._utt.append(frame)
            if voiced:
                self._silent_run = 0
                self._last_voiced_len = len(self._utt)
            else:
                self._silent_run += 1
            too_long = len(self._utt) * FRAME_MS / 1000 >= _MAX_UTTERANCE_S
            if self._silent_run >= silence_frames or too_long:
                events.append(VadEvent("end", self._finish()))
        return events

    def snapshot(self) -> dict:
        """The detector's state (audio held back, a turn in progress), for a resumption handle."""
        return copy.deepcopy({k: getattr(self, k) for k in _STATE})

    def restore(self, state: dict) -> None:
        for k, v in copy.deepcopy(state).items():
            setattr(self, k, v)

    def flush(self) -> VadEvent | None:
        """End a turn in progress (audioStreamEnd)."""
        if self.in_speech:
            return VadEvent("end", self._finish())
        return None

    def _finish(self) -> np.ndarray:
        tail = 3  # 60 ms after the last voiced frame: the decay of the last sound
        frames = self._utt[: self._last_voiced_len + tail]
        self._utt = []
        self._voiced_run = 0
        self._silent_run = 0
        self.in_speech = False
        return np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
