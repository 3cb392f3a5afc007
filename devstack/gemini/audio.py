"""PCM helpers: 16-bit little-endian mono <-> float, resampling, synthetic speech.

The echo reply must correlate >= 0.9 with the user's audio after resampling, so the
resampler is a proper polyphase windowed-sinc filter rather than linear interpolation.
"""

from __future__ import annotations

import functools
import math
import re
import zlib
from fractions import Fraction

import numpy as np

INPUT_RATE = 16_000
OUTPUT_RATE = 24_000

_RATE_RE = re.compile(r"rate\s*=\s*(\d+)")


def pcm_rate(mime_type: str, default: int = INPUT_RATE) -> int:
    m = _RATE_RE.search(mime_type or "")
    return int(m.group(1)) if m else default


def pcm_to_float(data: bytes) -> np.ndarray:
    n = len(data) // 2
    return np.frombuffer(data[: n * 2], dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm(x: np.ndarray) -> bytes:
    return (np.clip(x, -1.0, 32767 / 32768) * 32768.0).round().astype("<i2").tobytes()


@functools.lru_cache(maxsize=16)
def _filter(up: int, down: int, half_taps: int = 24, beta: float = 8.6) -> np.ndarray:
    # Low-pass at the lower of the two Nyquist frequencies, on the upsampled grid.
    fc = 0.5 / max(up, down)
    n = np.arange(-half_taps * max(up, down), half_taps * max(up, down) + 1)
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(len(n), beta)
    return h * up  # gain `up` restores the level lost to zero-stuffing


def resample(x: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """Band-limited rational resampling of a float signal (zero-phase, same duration).

    Polyphase: each output sample only touches the filter taps of its phase, so odd
    ratios (22050 -> 16000 is 320/441) cost the same as simple ones.
    """
    x = np.asarray(x, dtype=np.float64)
    if src_rate == dst_rate or len(x) == 0:
        return x.astype(np.float32)
    ratio = Fraction(dst_rate, src_rate)
    up, down = ratio.numerator, ratio.denominator
    h = _filter(up, down)
    c = (len(h) - 1) // 2  # filter centre: zero phase
    taps = -(-len(h) // up)
    h = np.concatenate([h, np.zeros(taps * up - len(h))])
    pad = taps + 1
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    out_len = int(math.ceil(len(x) * up / down))
    k = np.arange(taps)
    out = np.empty(out_len, dtype=np.float64)
    for start in range(0, out_len, 32768):  # blocks bound the gather matrices' size
        m = np.arange(start, min(out_len, start + 32768), dtype=np.int64) * down + c
        phase = m % up
        base = m // up
        out[start : start + len(m)] = np.sum(
            h[phase[:, None] + up * k[None, :]] * xp[base[:, None] - k[None, :] + pad], axis=1
        )
    return out.astype(np.float32)


def resample_pcm(data: bytes, src_rate: int, dst_rate: int) -> bytes:
    if src_rate == dst_rate:
        return data
    return float_to_pcm(resample(pcm_to_float(data), src_rate, dst_rate))


def duration_s(data: bytes, rate: int) -> float:
    return len(data) / 2 / rate


def synth_speech(text: str, rate: int = OUTPUT_RATE) -> bytes:
    """Deterministic voice-like audio whose length follows the text.

    Each word becomes a harmonic tone (pitch derived from the word) lasting ~70 ms per
    character, with short pauses between words. It carries no meaning; it only gives
    tests and the pipeline real audio of a plausible length for a text reply.
    """
    words = text.split() or ["."]
    pieces: list[np.ndarray] = []
    gap = np.zeros(int(0.06 * rate), dtype=np.float32)
    total = 0.0
    for word in words:
        dur = min(0.07 * max(len(word), 2), 0.8)
        if total + dur > 20.0:  # cap very long replies at ~20 s
            break
        total += dur + 0.06
        f0 = 110 + (zlib.crc32(word.lower().encode()) % 120)
        t = np.arange(int(dur * rate)) / rate
        tone = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in (1, 2, 3, 4))
        env = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.015)  # 15 ms ramps avoid clicks
        pieces.append((0.25 * tone * env).astype(np.float32))
        pieces.append(gap)
    return float_to_pcm(np.concatenate(pieces))


def rms_dbfs(x: np.ndarray) -> float:
    if len(x) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return 20 * math.log10(max(rms, 1e-6))


def load_wav(path: str, rate: int = OUTPUT_RATE) -> bytes:
    """A WAV file as mono 16-bit PCM at `rate` (e.g. for Script.reply(audio=...))."""
    import wave

    with wave.open(str(path)) as w:
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        if w.getsampwidth() != 2:
            raise ValueError("only 16-bit WAV files are supported")
        if w.getnchannels() > 1:
            data = data.reshape(-1, w.getnchannels()).mean(axis=1)
        return float_to_pcm(resample(data, w.getframerate(), rate))
