// Audio levels measured in the page: one Web Audio analyser per audio track (the agent's
// voice, the person's microphone, other people's voices). They drive the agent's
// visualizer, the microphone meter and the participants' speaking indicators. The local
// LiveKit server sends no active-speaker updates, and a real one sends them ~0.5 s late,
// so the page measures levels itself and also honours the server's `isSpeaking`.

let ctx = null;
const analysers = new Map(); // key -> {source, analyser, trackId, td, fd, level, bands}

export function audioContext() {
  if (!ctx) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    ctx = new Ctx();
  }
  if (ctx.state === 'suspended') ctx.resume().catch(() => {});
  return ctx;
}

/** Measure mediaStreamTrack under key (replacing what was measured there before). */
export function watch(key, mediaStreamTrack) {
  const old = analysers.get(key);
  if (old && old.trackId === mediaStreamTrack.id) return;
  unwatch(key);
  const c = audioContext();
  const source = c.createMediaStreamSource(new MediaStream([mediaStreamTrack]));
  const analyser = c.createAnalyser();
  analyser.fftSize = 1024;
  analyser.smoothingTimeConstant = 0.5;
  source.connect(analyser);
  analysers.set(key, {
    source,
    analyser,
    trackId: mediaStreamTrack.id,
    td: new Float32Array(analyser.fftSize),
    fd: new Uint8Array(analyser.frequencyBinCount),
    level: 0,
    bands: [0, 0, 0, 0, 0],
  });
}

export function unwatch(key) {
  const a = analysers.get(key);
  if (!a) return;
  a.source.disconnect();
  analysers.delete(key);
}

export function unwatchAll() {
  for (const key of [...analysers.keys()]) unwatch(key);
}

/** Update every analyser's level (0..1, -60..0 dBFS) and its five frequency bands. */
export function sample() {
  for (const a of analysers.values()) {
    a.analyser.getFloatTimeDomainData(a.td);
    let sum = 0;
    for (const v of a.td) sum += v * v;
    const rms = Math.sqrt(sum / a.td.length);
    a.level = rms > 0 ? Math.min(1, Math.max(0, (20 * Math.log10(rms) + 60) / 60)) : 0;
    a.analyser.getByteFrequencyData(a.fd);
    // speech lives below ~4 kHz: five bands over the first quarter of the spectrum
    const n = Math.floor(a.fd.length / 4 / 5);
    for (let b = 0; b < 5; b++) {
      let s = 0;
      for (let i = b * n; i < (b + 1) * n; i++) s += a.fd[i];
      a.bands[b] = s / n / 255;
    }
  }
}

export function level(key) {
  return analysers.get(key)?.level ?? 0;
}

export function bands(key) {
  return analysers.get(key)?.bands ?? null;
}
