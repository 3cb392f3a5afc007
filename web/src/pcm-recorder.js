// AudioWorklet: the microphone as 16-bit PCM in 50 ms chunks for Gemini Live's
// `audio/pcm;rate=16000` input. Runs in an AudioContext created at 16 kHz, so the browser
// has already resampled the microphone; this only converts and frames.
const CHUNK = 800; // 50 ms at 16 kHz, what the livekit plugin sends too

class PcmRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.buf = new Int16Array(CHUNK);
    this.n = 0;
  }

  process(inputs) {
    const ch = inputs[0]?.[0];
    if (!ch) return true;
    for (let i = 0; i < ch.length; i++) {
      const s = Math.max(-1, Math.min(1, ch[i]));
      this.buf[this.n++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.n === CHUNK) {
        this.port.postMessage(this.buf.buffer, [this.buf.buffer]);
        this.buf = new Int16Array(CHUNK);
        this.n = 0;
      }
    }
    return true;
  }
}

registerProcessor('pcm-recorder', PcmRecorder);
