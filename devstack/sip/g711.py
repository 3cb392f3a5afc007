"""G.711 μ-law and A-law with numpy lookup tables (the classic Sun reference algorithms,
the ones audioop implements; audioop is deprecated on 3.11 and gone on 3.13)."""

from __future__ import annotations

import numpy as np

_BIAS = 0x84


def _build_ulaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int64) >> 2  # 14-bit, floor as in C
    mask = np.where(pcm < 0, 0x7F, 0xFF)
    val = np.minimum(np.abs(pcm), 8159) + (_BIAS >> 2)
    ends = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
    seg = np.searchsorted(ends, val, side="left")
    uval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | ((val >> (np.minimum(seg, 7) + 1)) & 0x0F))
    return ((uval ^ mask) & 0xFF).astype(np.uint8)


def _build_ulaw_decode() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int64) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    mag = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return np.where(u & 0x80, -mag, mag).astype(np.int16)


def _build_alaw_encode() -> np.ndarray:
    pcm = np.arange(-32768, 32768, dtype=np.int64) >> 3  # 13-bit
    mask = np.where(pcm >= 0, 0xD5, 0x55)
    val = np.where(pcm >= 0, pcm, -pcm - 1)
    ends = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])
    seg = np.searchsorted(ends, val, side="left")
    low = np.where(seg < 2, (val >> 1) & 0x0F, (val >> np.maximum(seg, 1)) & 0x0F)
    aval = np.where(seg >= 8, 0x7F, (np.minimum(seg, 7) << 4) | low)
    return ((aval ^ mask) & 0xFF).astype(np.uint8)


def _build_alaw_decode() -> np.ndarray:
    a = np.arange(256, dtype=np.int64) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, np.where(seg == 1, t + 0x108, (t + 0x108) << np.maximum(seg - 1, 0)))
    return np.where(a & 0x80, t, -t).astype(np.int16)


_ULAW_ENC, _ULAW_DEC = _build_ulaw_encode(), _build_ulaw_decode()
_ALAW_ENC, _ALAW_DEC = _build_alaw_encode(), _build_alaw_decode()

PCMU, PCMA = 0, 8  # static RTP payload types


def encode(pcm: np.ndarray, pt: int) -> bytes:
    """int16 samples -> G.711 bytes for payload type 0 (μ-law) or 8 (A-law)."""
    table = _ULAW_ENC if pt == PCMU else _ALAW_ENC
    return table[pcm.astype(np.int32) + 32768].tobytes()


def decode(payload: bytes, pt: int) -> np.ndarray:
    table = _ULAW_DEC if pt == PCMU else _ALAW_DEC
    return table[np.frombuffer(payload, dtype=np.uint8)]
