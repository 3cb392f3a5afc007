"""Audio helpers for tests: real speech from espeak-ng, resampling with the SDK's own
resampler, and the measurements the tests assert on (correlation, frequency, level)."""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
from livekit import rtc


def speech_wav(text: str, path: Path, *, voice: str = "en", speed: int = 160) -> Path:
    """Speak `text` into a WAV file with espeak-ng (22.05 kHz mono 16-bit)."""
    if shutil.which("espeak-ng") is None:
        raise RuntimeError("espeak-ng is not installed (apt-get install espeak-ng)")
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", str(speed), "-w", str(path), text],
        check=True,
        capture_output=True,
    )
    return path


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """Mono int16 samples and the sample rate of a 16-bit WAV file."""
    with wave.open(str(path), "rb") as w:
        if w.getsampwidth() != 2:
            raise ValueError(f"{path}: expected 16-bit PCM")
        data = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
        channels, rate = w.getnchannels(), w.getframerate()
    if channels > 1:
        data = data.reshape(-1, channels).mean(axis=1).astype(np.int16)
    return data, rate


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> Path:
    """Mono int16 samples as a 16-bit WAV file."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype(np.int16).tobytes())
    return path


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    if from_rate == to_rate:
        return pcm.astype(np.int16)
    rs = rtc.AudioResampler(from_rate, to_rate, num_channels=1)
    out = []
    step = from_rate // 100
    for i in range(0, len(pcm), step):
        chunk = np.ascontiguousarray(pcm[i : i + step], dtype=np.int16)
        out += [np.frombuffer(f.data, dtype=np.int16) for f in rs.push(
            rtc.AudioFrame(chunk.tobytes(), from_rate, 1, len(chunk)))]
    out += [np.frombuffer(f.data, dtype=np.int16) for f in rs.flush()]
    return np.concatenate(out) if out else np.zeros(0, np.int16)


def frames_to_pcm(frames: list[rtc.AudioFrame]) -> tuple[np.ndarray, int]:
    """Concatenate frames (mono or mixed down) into int16 samples at their common rate."""
    if not frames:
        return np.zeros(0, np.int16), 0
    rate = frames[0].sample_rate
    parts = []
    for f in frames:
        if f.sample_rate != rate:
            raise ValueError("frames with different sample rates")
        a = np.frombuffer(f.data, dtype=np.int16)
        if f.num_channels > 1:
            a = a.reshape(-1, f.num_channels).mean(axis=1).astype(np.int16)
        parts.append(a)
    return np.concatenate(parts), rate


def trim_silence(pcm: np.ndarray, rate: int, *, threshold: float = 0.02) -> np.ndarray:
    """Cut leading and trailing stretches quieter than `threshold` of full scale (10 ms windows)."""
    win = max(1, rate // 100)
    n = len(pcm) // win
    if n == 0:
        return pcm
    rms = np.sqrt((pcm[: n * win].astype(np.float64).reshape(n, win) ** 2).mean(axis=1)) / 32768
    loud = np.nonzero(rms > threshold)[0]
    if len(loud) == 0:
        return pcm[:0]
    return pcm[loud[0] * win : (loud[-1] + 1) * win]


def best_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Peak normalised cross-correlation of two signals over all lags (1.0 = same shape)."""
    a = a.astype(np.float64) - a.mean()
    b = b.astype(np.float64) - b.mean()
    if not len(a) or not len(b) or not a.any() or not b.any():
        return 0.0
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    xc = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)
    return float(np.max(np.abs(xc)) / (np.linalg.norm(a) * np.linalg.norm(b)))


def dominant_frequency(pcm: np.ndarray, rate: int) -> float:
    x = pcm.astype(np.float64) * np.hanning(len(pcm))
    spectrum = np.abs(np.fft.rfft(x))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum[1:]) + 1])


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) / 32768) if len(pcm) else 0.0



def _mel_bands(pcm: np.ndarray, rate: int, n_bands: int = 32) -> np.ndarray:
    """Log energy in mel-spaced bands, 25 ms windows every 10 ms."""
    win, hop = int(rate * 0.025), int(rate * 0.01)
    x = pcm.astype(np.float64) / 32768
    n = 1 + max(0, (len(x) - win) // hop)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop][:n] * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = 2595 * np.log10(1 + np.fft.rfftfreq(win, 1 / rate) / 700)
    band = np.clip(np.digitize(mel, np.linspace(mel[1], mel[-1], n_bands + 1)) - 1, 0, n_bands - 1)
    energies = np.stack([power[:, band == k].sum(axis=1) for k in range(n_bands)], axis=1)
    return np.log10(energies + 1e-6)



def speech_similarity(a: np.ndarray, b: np.ndarray, rate: int, band: float = 0.2) -> float:
    """How alike two recordings of speech sound, from 0 to 1: the mean cosine similarity
    of their mel spectra along the best time alignment (dynamic time warping).

    Waveform correlation cannot survive WebRTC: Opus changes the phase and the receiver's
    jitter buffer speeds audio up or slows it down by a few percent. This measure does:
    the same espeak-ng sentence scores about 0.9 after a round trip through a room, a
    similar sentence about 0.86, a different one 0.6-0.75.
    """
    sa, sb = _mel_bands(a, rate), _mel_bands(b, rate)
    if len(sa) < 10 or len(sb) < 10:
        return 0.0
    # compare spectral shape, not level: gain control and codecs change the level
    sa = sa - sa.mean(axis=1, keepdims=True)
    sb = sb - sb.mean(axis=1, keepdims=True)
    sa /= np.linalg.norm(sa, axis=1, keepdims=True) + 1e-9
    sb /= np.linalg.norm(sb, axis=1, keepdims=True) + 1e-9
    cost_of = 1.0 - sa @ sb.T
    n, m = cost_of.shape
    width = max(int(band * max(n, m)), abs(n - m) + 1)
    cost = np.full((n + 1, m + 1), np.inf)
    steps = np.zeros((n + 1, m + 1))
    cost[0, 0] = 0.0
    for i in range(1, n + 1):
        centre = i * m // n
        for j in range(max(1, centre - width), min(m, centre + width) + 1):
            options = ((cost[i - 1, j - 1], steps[i - 1, j - 1]),
                       (cost[i - 1, j], steps[i - 1, j]),
                       (cost[i, j - 1], steps[i, j - 1]))
            best_cost, best_steps = min(options)
            cost[i, j] = best_cost + cost_of[i - 1, j - 1]
            steps[i, j] = best_steps + 1
    return float(1.0 - cost[n, m] / steps[n, m])


def band_limit(pcm: np.ndarray, rate: int, low: float = 300.0, high: float = 3400.0) -> np.ndarray:
    """Keep only the telephone band (FFT brick-wall), as float."""
    spec = np.fft.rfft(pcm.astype(np.float64))
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    spec[(freqs < low) | (freqs > high)] = 0
    return np.fft.irfft(spec, len(pcm))


def envelope(pcm: np.ndarray, rate: int, window_s: float = 0.01) -> np.ndarray:
    """RMS per 10 ms window."""
    win = max(1, int(rate * window_s))
    n = len(pcm) // win
    return np.sqrt((pcm[: n * win].astype(np.float64).reshape(n, win) ** 2).mean(axis=1))


def envelope_correlation(said: np.ndarray, heard: np.ndarray, rate: int, *, max_drift: float = 0.06) -> float:
    """How well `said` shows up somewhere in `heard`: the best Pearson correlation of their
    phone-band loudness envelopes (10 ms RMS, smoothed over 50 ms) over every alignment and
    over playback rates within +-max_drift: a phone's media clock runs at its own pace (a
    busy machine slows pjsua's), and its jitter buffer drops frames to catch up, so what
    it records of a reply is a few percent shorter or longer than what was sent."""
    smooth = np.hanning(7)[1:-1]
    smooth /= smooth.sum()
    a = np.convolve(envelope(band_limit(said, rate), rate), smooth, "same")
    b = np.convolve(envelope(band_limit(heard, rate), rate), smooth, "same")
    best = 0.0
    for scale in np.arange(1 - max_drift, 1 + max_drift + 1e-9, 0.005):
        n = int(len(a) * scale)
        if n < 10 or len(b) < n:
            continue
        x = np.interp(np.linspace(0, len(a) - 1, n), np.arange(len(a)), a)
        windows = np.lib.stride_tricks.sliding_window_view(b, n)
        x0 = (x - x.mean()) / (x.std() + 1e-9)
        w0 = (windows - windows.mean(axis=1, keepdims=True)) / (windows.std(axis=1, keepdims=True) + 1e-9)
        best = max(best, float(np.max(w0 @ x0) / n))
    return best


def heard_intact(heard: np.ndarray, said: np.ndarray, rate: int, *, window_s: float = 0.5,
                 slack_s: float = 0.5) -> float:
    """The share of `said`'s half-second windows that `heard` holds sample for sample
    (normalised correlation >= 0.9 at some lag within `slack_s` of the window's own place).
    Window by window, so that one jitter-buffer gap on a busy machine does not hide that the
    rest arrived intact."""
    n, slack = int(window_s * rate), int(slack_s * rate)
    a = heard.astype(np.float64)
    shares = []
    for i in range(0, len(said) - n + 1, n):
        w = said[i:i + n].astype(np.float64)
        if np.abs(w).max() < 500:
            continue
        seg = a[max(0, i - slack): i + n + slack]
        if len(seg) < n:
            shares.append(False)
            continue
        size = 1 << int(np.ceil(np.log2(len(seg) + n)))
        xc = np.fft.irfft(np.fft.rfft(seg, size) * np.conj(np.fft.rfft(w, size)), size)[: len(seg) - n + 1]
        energy = np.convolve(seg ** 2, np.ones(n), mode="valid")
        shares.append(float(np.max(xc / (np.sqrt(energy) * np.linalg.norm(w) + 1e-9))) >= 0.9)
    return sum(shares) / len(shares) if shares else 0.0
