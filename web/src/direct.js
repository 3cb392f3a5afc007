// "Direct to Gemini" mode (client-to-server): the page talks to the Gemini Live API itself
// through Google's own SDK, with an ephemeral token from POST /api/gemini-token (the API
// key stays on the server). The token is locked to the agent's model and setup (voice,
// instructions, transcription, turn detection), so the page sends only the model name and
// the response modality it was told; everything else comes from the token.
//
// Microphone: an AudioWorklet in a 16 kHz AudioContext → 50 ms chunks of 16-bit PCM.
// Reply: Gemini's 24 kHz PCM, scheduled gap-free in Web Audio and played through an
// <audio> element (so the speaker picker and the page's meters work as in LiveKit mode).
// Loaded on demand (a separate bundle), so LiveKit-only visitors never download the SDK.
import { GoogleGenAI, Modality } from '@google/genai';

const INPUT_RATE = 16000;
const OUTPUT_RATE = 24000;
const WORKLET_URL = '/static/pcm-recorder.js';

function toBase64(bytes) {
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

function fromBase64(data) {
  // the service may use the URL-safe alphabet
  const s = atob(data.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** One conversation with Gemini Live from this page. Events (all optional):
 *  onState(state)                      'listening' | 'speaking'
 *  onTranscript(speaker, turn, text, final)   speaker 'user' | 'agent'; text is the turn's text so far
 *  onAudioTrack(mediaStreamTrack)      the reply's audio, once
 *  onClose(reason)                     the session ended ('' when this page ended it)
 */
export class DirectCall {
  constructor(grant, { playbackContext, audioElement, ...events }) {
    this.grant = grant;
    this.events = events;
    this.ctx = playbackContext;
    this.audioElement = audioElement;
    this.turn = 1;
    this.text = { user: '', agent: '' };
    this.playing = new Set();
    this.playUntil = 0;
    this.state = 'connecting';
    this.closed = false;
  }

  async connect() {
    const g = this.grant;
    const ai = new GoogleGenAI({ apiKey: g.token, httpOptions: { apiVersion: g.api_version, baseUrl: g.base_url } });
    this.out = this.ctx.createMediaStreamDestination();
    this.audioElement.srcObject = this.out.stream;
    this.audioElement.play().catch(() => {});
    this.events.onAudioTrack?.(this.out.stream.getAudioTracks()[0]);
    this.session = await ai.live.connect({
      model: g.model,
      config: { responseModalities: [g.response_modality === 'text' ? Modality.TEXT : Modality.AUDIO] },
      callbacks: {
        onmessage: (msg) => this.onMessage(msg),
        onerror: (e) => console.warn('Gemini Live error', e),
        onclose: (e) => this.onClose(e),
      },
    });
    this.connected = true;
    this.setState('listening');
    this.stateTimer = setInterval(() => this.setState(this.ctx.currentTime < this.playUntil ? 'speaking' : 'listening'), 50);
  }

  /** Stream the microphone (a MediaStream) to Gemini. */
  async startMic(stream) {
    this.micCtx = new AudioContext({ sampleRate: INPUT_RATE });
    await this.micCtx.audioWorklet.addModule(WORKLET_URL);
    const node = new AudioWorkletNode(this.micCtx, 'pcm-recorder', { numberOfInputs: 1, numberOfOutputs: 0 });
    node.port.onmessage = ({ data }) => {
      if (this.closed) return;
      this.session.sendRealtimeInput({ audio: { data: toBase64(new Uint8Array(data)), mimeType: `audio/pcm;rate=${INPUT_RATE}` } });
    };
    this.micCtx.createMediaStreamSource(stream).connect(node);
    this.micStream = stream;
  }

  setMicEnabled(on) {
    for (const t of this.micStream?.getAudioTracks() || []) t.enabled = on; // off: Gemini hears silence
  }

  get micOn() {
    return !!this.micStream?.getAudioTracks().some((t) => t.enabled && t.readyState === 'live');
  }

  sendText(text) {
    this.session.sendClientContent({ turns: [{ role: 'user', parts: [{ text }] }], turnComplete: true });
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.stopPlayback();
    clearInterval(this.stateTimer);
    this.micCtx?.close().catch(() => {});
    this.micStream?.getTracks().forEach((t) => t.stop());
    this.audioElement.srcObject = null;
    this.session?.close();
  }

  // ------------------------------------------------------------------------ internals

  setState(state) {
    if (state === this.state || this.closed) return;
    this.state = state;
    this.events.onState?.(state);
  }

  say(speaker, piece, final = false) {
    if (piece) this.text[speaker] += piece;
    if (this.text[speaker] || final) this.events.onTranscript?.(speaker, this.turn, this.text[speaker], final);
  }

  onMessage(msg) {
    const sc = msg.serverContent;
    if (!sc) return;
    if (sc.inputTranscription?.text) this.say('user', sc.inputTranscription.text);
    for (const part of sc.modelTurn?.parts || []) {
      if (part.inlineData?.data) this.play(fromBase64(part.inlineData.data));
      if (part.text && !part.thought) this.say('agent', part.text);
    }
    if (sc.outputTranscription?.text) this.say('agent', sc.outputTranscription.text);
    if (sc.interrupted) this.stopPlayback();
    if (sc.turnComplete) {
      if (this.text.user) this.say('user', '', true);
      if (this.text.agent) this.say('agent', '', true);
      this.turn += 1;
      this.text = { user: '', agent: '' };
    }
  }

  play(bytes) {
    const pcm = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
    if (!pcm.length) return;
    const buf = this.ctx.createBuffer(1, pcm.length, OUTPUT_RATE);
    const ch = buf.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buf;
    src.connect(this.out);
    // back to back; after a gap, start now (a little ahead, so the first chunk is not cut)
    const at = Math.max(this.playUntil, this.ctx.currentTime + 0.02);
    src.start(at);
    this.playUntil = at + buf.duration;
    this.playing.add(src);
    src.onended = () => this.playing.delete(src);
    this.setState('speaking');
  }

  stopPlayback() {
    for (const src of this.playing) src.stop();
    this.playing.clear();
    this.playUntil = 0;
  }

  onClose(e) {
    const mine = this.closed || !this.connected; // before setup, connect() itself fails
    this.close();
    const why = e?.reason ? `Gemini closed the session (${e.code}: ${e.reason}).` : `Gemini closed the session (${e?.code ?? 'no code'}).`;
    this.events.onClose?.(mine ? '' : why);
  }
}
