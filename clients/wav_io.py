"""WAV files in and out of LiveKit audio frames.

Reading accepts the WAV files people actually have: integer PCM of 8/16/24/32 bits,
32/64-bit IEEE float, plain or WAVE_FORMAT_EXTENSIBLE headers, any sample rate and
channel count. Everything is turned into 16-bit mono at the rate LiveKit publishes
(48 kHz) with ``rtc.AudioResampler``, then cut into 10 ms ``rtc.AudioFrame``s.
Writing produces 16-bit mono PCM WAV.
"""

from __future__ import annotations

import struct
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from livekit import rtc

PUBLISH_RATE = 48000
FRAME_MS = 10

_FORMAT_PCM = 0x0001
_FORMAT_FLOAT = 0x0003
_FORMAT_EXTENSIBLE = 0xFFFE


class WavInputError(Exception):
    """The input file cannot be used; the message names the file and the problem."""


@dataclass
class WavAudio:
    sample_rate: int
    num_channels: int
    samples: np.ndarray  # int16, shape (frames, channels)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate if self.sample_rate else 0.0


def read_wav(path: str | Path) -> WavAudio:
    """Read a WAV file into 16-bit samples, keeping its rate and channels."""
    p = Path(path)
    if not p.exists():
        raise WavInputError(f"input file not found: {p}")
    if p.is_dir():
        raise WavInputError(f"input path is a directory, not a WAV file: {p}")
    data = p.read_bytes()
    if len(data) < 12 or data[:4] not in (b"RIFF", b"RF64") or data[8:12] != b"WAVE":
        raise WavInputError(f"{p} is not a WAV file (no RIFF/WAVE header)")

    fmt: bytes | None = None
    pcm: bytes | None = None
    pos = 12
    while pos + 8 <= len(data):
        cid = data[pos : pos + 4]
        (size,) = struct.unpack_from("<I", data, pos + 4)
        body = data[pos + 8 : pos + 8 + size]
        if cid == b"fmt ":
            fmt = body
        elif cid == b"data":
            pcm = body  # a truncated last chunk is read as far as it goes
            if fmt is not None:
                break
        pos += 8 + size + (size & 1)
    if fmt is None or len(fmt) < 16:
        raise WavInputError(f"{p} is not a valid WAV file (missing 'fmt ' chunk)")
    if pcm is None:
        raise WavInputError(f"{p} is not a valid WAV file (missing 'data' chunk)")

    tag, channels, rate, _, block_align, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == _FORMAT_EXTENSIBLE and len(fmt) >= 26:
        (tag,) = struct.unpack_from("<H", fmt, 24)  # first two bytes of the sub-format GUID
    if channels < 1:
        raise WavInputError(f"{p}: WAV header declares {channels} channels")
    if rate < 1000 or rate > 768000:
        raise WavInputError(f"{p}: unsupported sample rate {rate} Hz")
    width = bits // 8
    if bits % 8 or width < 1 or block_align != width * channels:
        raise WavInputError(
            f"{p}: unsupported sample layout ({bits} bits, block align {block_align}, "
            f"{channels} channels)"
        )
    usable = len(pcm) - len(pcm) % block_align
    raw = pcm[:usable]

    if tag == _FORMAT_PCM:
        if width == 1:
            x = (np.frombuffer(raw, np.uint8).astype(np.int16) - 128) << 8
        elif width == 2:
            x = np.frombuffer(raw, "<i2").astype(np.int16)
        elif width == 3:
            b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
            x = (b[:, 1].astype(np.int16) | (b[:, 2].astype(np.int16) << 8)).astype(np.int16)
        elif width == 4:
            x = (np.frombuffer(raw, "<i4") >> 16).astype(np.int16)
        else:
            raise WavInputError(f"{p}: unsupported PCM sample width of {bits} bits")
    elif tag == _FORMAT_FLOAT and width in (4, 8):
        f = np.frombuffer(raw, "<f4" if width == 4 else "<f8")
        x = (np.clip(np.nan_to_num(f), -1.0, 1.0) * 32767.0).astype(np.int16)
    else:
        raise WavInputError(
            f"{p}: unsupported WAV encoding (format tag 0x{tag:04x}, {bits} bits); "
            "use PCM or IEEE float"
        )
    samples = x.reshape(-1, channels)
    if len(samples) == 0:
        raise WavInputError(f"{p} contains no audio samples")
    return WavAudio(rate, channels, samples)


def to_mono(audio: WavAudio) -> np.ndarray:
    """Average all channels into one int16 channel."""
    if audio.num_channels == 1:
        return audio.samples[:, 0].copy()
    return audio.samples.astype(np.int32).mean(axis=1).round().astype(np.int16)


def resample_mono(samples: np.ndarray, input_rate: int, output_rate: int) -> np.ndarray:
    """Resample int16 mono samples with LiveKit's resampler (sox)."""
    if input_rate == output_rate:
        return samples.astype(np.int16, copy=True)
    resampler = rtc.AudioResampler(input_rate, output_rate, num_channels=1)
    out: list[np.ndarray] = []
    chunk = max(input_rate // 10, 1)  # feed 100 ms at a time
    for i in range(0, len(samples), chunk):
        part = bytearray(samples[i : i + chunk].astype("<i2").tobytes())
        out.extend(np.frombuffer(f.data, np.int16).copy() for f in resampler.push(part))
    out.extend(np.frombuffer(f.data, np.int16).copy() for f in resampler.flush())
    return np.concatenate(out) if out else np.zeros(0, np.int16)


def load_for_publish(path: str | Path, rate: int = PUBLISH_RATE) -> np.ndarray:
    """Read any WAV file and return int16 mono samples at ``rate``."""
    audio = read_wav(path)
    return resample_mono(to_mono(audio), audio.sample_rate, rate)


def iter_frames(
    samples: np.ndarray, sample_rate: int = PUBLISH_RATE, frame_ms: int = FRAME_MS
) -> Iterator[rtc.AudioFrame]:
    """Cut int16 mono samples into frames of ``frame_ms``; the last is zero-padded."""
    n = sample_rate * frame_ms // 1000
    for i in range(0, len(samples), n):
        chunk = samples[i : i + n]
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros(n - len(chunk), np.int16)])
        yield rtc.AudioFrame(chunk.astype("<i2").tobytes(), sample_rate, 1, n)


def silence_frames(
    seconds: float, sample_rate: int = PUBLISH_RATE, frame_ms: int = FRAME_MS
) -> Iterator[rtc.AudioFrame]:
    n = sample_rate * frame_ms // 1000
    for _ in range(int(round(seconds * 1000 / frame_ms))):
        yield rtc.AudioFrame(bytes(2 * n), sample_rate, 1, n)


def peak(frame: rtc.AudioFrame) -> int:
    """Largest absolute sample value in a 16-bit frame."""
    a = np.frombuffer(frame.data, np.int16)
    return int(np.abs(a.astype(np.int32)).max()) if a.size else 0


class WavWriter:
    """Append 16-bit mono frames to a WAV file (header fixed up on close)."""

    def __init__(self, path: str | Path, sample_rate: int) -> None:
        self.path = Path(path)
        self.sample_rate = sample_rate
        self.frames_written = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._w = wave.open(str(self.path), "wb")
        self._w.setnchannels(1)
        self._w.setsampwidth(2)
        self._w.setframerate(sample_rate)

    def write(self, samples: np.ndarray | bytes | memoryview) -> None:
        b = samples.astype("<i2").tobytes() if isinstance(samples, np.ndarray) else bytes(samples)
        self._w.writeframes(b)
        self.frames_written += len(b) // 2

    @property
    def duration(self) -> float:
        return self.frames_written / self.sample_rate

    def close(self) -> None:
        self._w.close()
