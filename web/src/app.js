// Browser client for the voice agent: joins a LiveKit room with a token from /api/token,
// publishes the microphone (and optionally camera / screen), plays the agent, and shows the
// agent's state, a live transcript of both sides, a chat box and audio level meters.
//
// Protocol details follow livekit-agents' room_io:
//   - agent state:    participant attribute `lk.agent.state` (initializing, listening, thinking, speaking, idle)
//   - transcripts:    text streams on topic `lk.transcription`; attributes `lk.segment_id`,
//                     `lk.transcription_final`, `lk.transcribed_track_id`
//   - chat:           text streams on topic `lk.chat` (the agent's room text input)
import {
  ConnectionState,
  DisconnectReason,
  MediaDeviceFailure,
  ParticipantKind,
  Room,
  RoomEvent,
  Track,
} from 'livekit-client';

const TOPIC_TRANSCRIPTION = 'lk.transcription';
const TOPIC_CHAT = 'lk.chat';
const ATTR_AGENT_STATE = 'lk.agent.state';
const ATTR_SEGMENT_ID = 'lk.segment_id';
const ATTR_FINAL = 'lk.transcription_final';
const ATTR_TRACK_ID = 'lk.transcribed_track_id';

const STATE_LABELS = {
  initializing: 'getting ready…',
  idle: 'idle',
  listening: 'listening',
  thinking: 'thinking…',
  speaking: 'speaking',
};

const $ = (id) => document.getElementById(id);
const ui = {
  connection: $('connection'),
  alert: $('alert'),
  joinPanel: $('join-panel'),
  joinForm: $('join-form'),
  room: $('room'),
  name: $('name'),
  join: $('join'),
  callPanel: $('call-panel'),
  mic: $('mic'),
  camera: $('camera'),
  screen: $('screen'),
  startAudio: $('start-audio'),
  leave: $('leave'),
  agentState: $('agent-state'),
  micLevel: $('mic-level'),
  agentLevel: $('agent-level'),
  videos: $('videos'),
  audioSinks: $('audio-sinks'),
  transcript: $('transcript'),
  chatForm: $('chat-form'),
  chatInput: $('chat-input'),
};

/** @type {Room | null} */
let room = null;
let audioCtx = null;
const meters = new Map(); // meter element -> {source, analyser, trackId}
const segments = new Map(); // segment id -> <li>
let meterTimer = null;

// ---------------------------------------------------------------------------- messages

function setConnection(text, state) {
  ui.connection.textContent = text;
  ui.connection.dataset.state = state;
}

function showAlert(text) {
  ui.alert.textContent = text;
  ui.alert.hidden = false;
}

function clearAlert() {
  ui.alert.textContent = '';
  ui.alert.hidden = true;
}

function describeMediaError(error, device) {
  switch (MediaDeviceFailure.getFailure(error)) {
    case MediaDeviceFailure.PermissionDenied:
      return `${device} access was refused. Allow it in your browser's site settings and try again` +
        (device === 'Microphone' ? '; you can still type to the agent.' : '.');
    case MediaDeviceFailure.NotFound:
      return `No ${device.toLowerCase()} was found.` + (device === 'Microphone' ? ' You can still type to the agent.' : '');
    case MediaDeviceFailure.DeviceInUse:
      return `The ${device.toLowerCase()} is in use by another application.`;
    default:
      return `Could not start the ${device.toLowerCase()}: ${error?.message || error}`;
  }
}

function describeDisconnect(reason) {
  switch (reason) {
    case DisconnectReason.CLIENT_INITIATED:
      return null;
    case DisconnectReason.DUPLICATE_IDENTITY:
      return 'You were disconnected because someone joined with the same identity.';
    case DisconnectReason.PARTICIPANT_REMOVED:
      return 'You were removed from the room.';
    case DisconnectReason.ROOM_DELETED:
    case DisconnectReason.ROOM_CLOSED:
      return 'The conversation has ended: the room was closed.';
    case DisconnectReason.SERVER_SHUTDOWN:
      return 'The connection dropped: the server shut down. Join again to reconnect.';
    default:
      return 'The connection dropped. Check your network and join again.';
  }
}

// ------------------------------------------------------------------------- level meters

function ensureAudioContext() {
  if (!audioCtx) {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    audioCtx = new Ctx();
  }
  if (audioCtx.state === 'suspended') audioCtx.resume().catch(() => {});
  return audioCtx;
}

function attachMeter(meter, mediaStreamTrack) {
  detachMeter(meter);
  const ctx = ensureAudioContext();
  const source = ctx.createMediaStreamSource(new MediaStream([mediaStreamTrack]));
  const analyser = ctx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  meters.set(meter, { source, analyser, trackId: mediaStreamTrack.id, buf: new Float32Array(analyser.fftSize) });
  if (!meterTimer) meterTimer = setInterval(updateMeters, 100);
}

function detachMeter(meter, trackId) {
  const m = meters.get(meter);
  if (!m || (trackId && m.trackId !== trackId)) return;
  m.source.disconnect();
  meters.delete(meter);
  meter.value = 0;
  if (meters.size === 0 && meterTimer) {
    clearInterval(meterTimer);
    meterTimer = null;
  }
}

function updateMeters() {
  for (const [meter, m] of meters) {
    m.analyser.getFloatTimeDomainData(m.buf);
    let sum = 0;
    for (const v of m.buf) sum += v * v;
    const rms = Math.sqrt(sum / m.buf.length);
    // -60 dBFS .. 0 dBFS onto 0 .. 1
    const level = rms > 0 ? Math.min(1, Math.max(0, (20 * Math.log10(rms) + 60) / 60)) : 0;
    meter.value = level;
    meter.textContent = `${Math.round(level * 100)}%`;
  }
}

// ---------------------------------------------------------------------------- the agent

function isAgent(participant) {
  return (
    participant.kind === ParticipantKind.AGENT ||
    ATTR_AGENT_STATE in (participant.attributes || {})
  );
}

function findAgent() {
  if (!room) return null;
  for (const p of room.remoteParticipants.values()) if (isAgent(p)) return p;
  return null;
}

function renderAgentState() {
  const agent = findAgent();
  let state = 'absent';
  let label = 'waiting to join…';
  if (agent) {
    state = agent.attributes?.[ATTR_AGENT_STATE] || 'initializing';
    label = STATE_LABELS[state] || state;
  }
  ui.agentState.dataset.state = state;
  ui.agentState.textContent = label;
}

// ---------------------------------------------------------------------------- transcript

function speakerOf(identity, transcribedTrackId) {
  const local = room?.localParticipant;
  if (!local) return 'agent';
  if (identity === local.identity) return 'user';
  // The agent publishes the user's transcription on the user's behalf; the transcribed
  // track id tells whose speech it is even if the server stamps the agent as sender.
  if (transcribedTrackId) {
    for (const pub of local.trackPublications.values()) if (pub.trackSid === transcribedTrackId) return 'user';
  }
  const p = room.remoteParticipants.get(identity);
  return p && !isAgent(p) ? 'other' : 'agent';
}

function speakerLabel(speaker, identity) {
  if (speaker === 'user') return 'You';
  if (speaker === 'agent') return 'Agent';
  const p = room?.remoteParticipants.get(identity);
  return p?.name || identity;
}

function transcriptEntry(key, speaker, identity, kind) {
  let li = segments.get(key);
  if (!li) {
    li = document.createElement('li');
    li.dataset.speaker = speaker;
    li.dataset.kind = kind;
    li.dataset.segmentId = key;
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = speakerLabel(speaker, identity) + ':';
    const text = document.createElement('span');
    text.className = 'text';
    li.append(who, text);
    if (kind === 'chat') {
      const k = document.createElement('span');
      k.className = 'kind';
      k.textContent = '(typed)';
      li.append(k);
    }
    segments.set(key, li);
    const atBottom = ui.transcript.scrollHeight - ui.transcript.scrollTop - ui.transcript.clientHeight < 40;
    ui.transcript.append(li);
    if (atBottom) ui.transcript.scrollTop = ui.transcript.scrollHeight;
  }
  return li;
}

function setEntryText(li, text, final) {
  li.querySelector('.text').textContent = text;
  li.dataset.final = final ? 'true' : 'false';
}

async function onTranscription(reader, participantInfo) {
  const attrs = reader.info.attributes || {};
  const key = attrs[ATTR_SEGMENT_ID] || reader.info.id;
  const speaker = speakerOf(participantInfo.identity, attrs[ATTR_TRACK_ID]);
  const li = transcriptEntry(key, speaker, participantInfo.identity, 'speech');
  // One stream carries either the whole segment so far (user) or its deltas (agent):
  // either way, the text read from this stream is the segment's text.
  let text = '';
  try {
    for await (const chunk of reader) {
      text += chunk;
      setEntryText(li, text, false);
    }
  } catch (e) {
    console.warn('transcription stream ended abnormally', e);
  }
  // The final flag arrives with the stream's trailer, merged into its attributes.
  setEntryText(li, text, reader.info.attributes?.[ATTR_FINAL] === 'true');
}

let chatCounter = 0;

async function sendChat(text) {
  const li = transcriptEntry(`chat-${++chatCounter}`, 'user', room.localParticipant.identity, 'chat');
  setEntryText(li, text, true);
  try {
    await room.localParticipant.sendText(text, { topic: TOPIC_CHAT });
  } catch (e) {
    li.dataset.failed = 'true';
    showAlert(`Your message could not be sent: ${e?.message || e}`);
  }
}

// ------------------------------------------------------------------------------- media

function renderToggles() {
  const lp = room?.localParticipant;
  for (const [button, on, label] of [
    [ui.mic, lp?.isMicrophoneEnabled, 'Microphone'],
    [ui.camera, lp?.isCameraEnabled, 'Camera'],
    [ui.screen, lp?.isScreenShareEnabled, 'Share screen'],
  ]) {
    button.setAttribute('aria-pressed', on ? 'true' : 'false');
    button.textContent = `${label}: ${on ? 'on' : 'off'}`;
  }
  renderLocalVideos();
}

// Previews of what this page sends: shown while the track is published and not muted
// (turning the camera off mutes its track rather than unpublishing it).
function renderLocalVideos() {
  const lp = room?.localParticipant;
  for (const [source, caption] of [
    [Track.Source.Camera, 'Your camera'],
    [Track.Source.ScreenShare, 'Your screen'],
  ]) {
    const pub = lp?.getTrackPublication(source);
    const id = `local-${source}`;
    const live = pub?.track && !pub.isMuted;
    if (live && !document.getElementById(id)) addVideo(pub.track, id, caption);
    if (!live) removeVideo(id);
  }
}

async function toggle(kind) {
  if (!room) return;
  const lp = room.localParticipant;
  clearAlert();
  try {
    if (kind === 'mic') await lp.setMicrophoneEnabled(!lp.isMicrophoneEnabled);
    if (kind === 'camera') await lp.setCameraEnabled(!lp.isCameraEnabled);
    if (kind === 'screen') await lp.setScreenShareEnabled(!lp.isScreenShareEnabled, { audio: true });
  } catch (e) {
    if (kind === 'screen' && e?.name === 'NotAllowedError') showAlert('Screen sharing was cancelled or refused.');
    else showAlert(describeMediaError(e, { mic: 'Microphone', camera: 'Camera', screen: 'Screen' }[kind]));
  }
  renderToggles();
}

function addVideo(track, id, caption) {
  removeVideo(id);
  const figure = document.createElement('figure');
  figure.id = id;
  const video = track.attach();
  video.muted = true;
  video.setAttribute('aria-label', caption);
  const fc = document.createElement('figcaption');
  fc.textContent = caption;
  figure.append(video, fc);
  ui.videos.append(figure);
}

function removeVideo(id) {
  const el = document.getElementById(id);
  if (el) {
    for (const v of el.querySelectorAll('video')) v.srcObject = null;
    el.remove();
  }
}

// ------------------------------------------------------------------------- connecting

async function fetchToken(roomName, name) {
  const body = { room: roomName };
  if (name) body.name = name;
  let resp;
  try {
    resp = await fetch('/api/token', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch (e) {
    throw new Error('The server could not be reached. Check your connection and try again.');
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    /* not JSON */
  }
  if (!resp.ok) {
    if (resp.status === 429) {
      const wait = resp.headers.get('Retry-After');
      throw new Error(`Too many attempts. Try again in ${wait || 'a few'} seconds.`);
    }
    throw new Error(data?.error ? `Cannot join: ${data.error}.` : `Cannot join (HTTP ${resp.status}).`);
  }
  return data;
}

function wireRoom(r) {
  r.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, info) => {
    onTranscription(reader, info);
  });
  r.on(RoomEvent.ParticipantConnected, renderAgentState)
    .on(RoomEvent.ParticipantDisconnected, renderAgentState)
    .on(RoomEvent.ParticipantAttributesChanged, renderAgentState)
    .on(RoomEvent.TrackSubscribed, (track, pub, participant) => {
      if (track.kind === Track.Kind.Audio) {
        const el = track.attach();
        el.dataset.participant = participant.identity;
        ui.audioSinks.append(el);
        if (isAgent(participant)) attachMeter(ui.agentLevel, track.mediaStreamTrack);
      } else if (track.kind === Track.Kind.Video) {
        addVideo(track, `video-${track.sid}`, `${speakerLabel(speakerOf(participant.identity), participant.identity)} — ${pub.source}`);
      }
    })
    .on(RoomEvent.TrackUnsubscribed, (track) => {
      track.detach().forEach((el) => el.remove());
      if (track.kind === Track.Kind.Audio) detachMeter(ui.agentLevel, track.mediaStreamTrack?.id);
      removeVideo(`video-${track.sid}`);
    })
    .on(RoomEvent.LocalTrackPublished, (pub) => {
      if (pub.source === Track.Source.Microphone && pub.track) attachMeter(ui.micLevel, pub.track.mediaStreamTrack);
      renderToggles();
    })
    .on(RoomEvent.LocalTrackUnpublished, (pub) => {
      if (pub.source === Track.Source.Microphone) detachMeter(ui.micLevel);
      renderToggles();
    })
    .on(RoomEvent.TrackMuted, renderToggles)
    .on(RoomEvent.TrackUnmuted, renderToggles)
    .on(RoomEvent.MediaDevicesError, (e) => showAlert(describeMediaError(e, 'Microphone')))
    .on(RoomEvent.AudioPlaybackStatusChanged, () => {
      ui.startAudio.hidden = r.canPlaybackAudio;
    })
    .on(RoomEvent.Reconnecting, () => setConnection('Connection lost — reconnecting…', 'reconnecting'))
    .on(RoomEvent.Reconnected, () => {
      setConnection(`Connected to room ${r.name}`, 'connected');
      clearAlert();
    })
    .on(RoomEvent.Disconnected, (reason) => {
      const message = describeDisconnect(reason);
      if (message) showAlert(message);
      teardown(message ? 'Disconnected' : 'You left the conversation');
    });
}

function teardown(statusText) {
  for (const meter of [...meters.keys()]) detachMeter(meter);
  ui.audioSinks.replaceChildren();
  ui.videos.replaceChildren();
  room = null;
  setConnection(statusText, 'disconnected');
  ui.callPanel.hidden = true;
  ui.joinPanel.hidden = false;
  ui.join.disabled = false;
  // Keep the transcript readable after leaving, but not the call controls.
  if (ui.transcript.childElementCount) {
    ui.callPanel.hidden = false;
    for (const el of [ui.mic, ui.camera, ui.screen, ui.leave, ui.chatInput, ui.chatForm.querySelector('button')]) el.disabled = true;
  }
  ui.agentState.dataset.state = 'absent';
  ui.agentState.textContent = 'not connected';
}

async function join(event) {
  event.preventDefault();
  if (room) return;
  clearAlert();
  if (!ui.joinForm.reportValidity()) return;
  ui.join.disabled = true;
  ensureAudioContext(); // created inside the click, so playback and meters may start
  setConnection('Connecting…', 'connecting');

  const started = performance.now();
  let r = null;
  try {
    const grant = await fetchToken(ui.room.value.trim(), ui.name.value.trim());
    r = new Room({ adaptiveStream: true, dynacast: true });
    room = r;
    wireRoom(r);
    segments.clear();
    ui.transcript.replaceChildren();
    await r.connect(grant.server_url, grant.participant_token);
  } catch (e) {
    room = null;
    if (r) await r.disconnect().catch(() => {});
    setConnection('Not connected', 'disconnected');
    showAlert(e?.message?.startsWith('Cannot join') || e?.message?.startsWith('Too many') || e?.message?.startsWith('The server')
      ? e.message
      : `Could not connect to the voice service: ${e?.message || e}`);
    ui.join.disabled = false;
    return;
  }
  const connectMs = Math.round(performance.now() - started);
  ui.connection.dataset.connectMs = String(connectMs);
  setConnection(`Connected to room ${r.name} (${connectMs} ms)`, 'connected');
  ui.joinPanel.hidden = true;
  ui.callPanel.hidden = false;
  for (const el of [ui.mic, ui.camera, ui.screen, ui.leave, ui.chatInput, ui.chatForm.querySelector('button')]) el.disabled = false;
  r.startAudio().catch(() => {});
  ui.startAudio.hidden = r.canPlaybackAudio;
  renderAgentState();
  renderToggles();

  try {
    await r.localParticipant.setMicrophoneEnabled(true);
  } catch (e) {
    showAlert(describeMediaError(e, 'Microphone'));
  }
  renderToggles();
  ui.chatInput.focus();
}

// ------------------------------------------------------------------------------ wiring

ui.room.value = `web-${Math.random().toString(36).slice(2, 10)}`;
ui.joinForm.addEventListener('submit', join);
ui.mic.addEventListener('click', () => toggle('mic'));
ui.camera.addEventListener('click', () => toggle('camera'));
ui.screen.addEventListener('click', () => toggle('screen'));
ui.startAudio.addEventListener('click', async () => {
  ensureAudioContext();
  await room?.startAudio();
  ui.startAudio.hidden = !!room?.canPlaybackAudio;
});
ui.leave.addEventListener('click', async () => {
  if (room) await room.disconnect();
});
ui.chatForm.addEventListener('submit', (e) => {
  e.preventDefault();
  const text = ui.chatInput.value.trim();
  if (!text || !room || room.state !== ConnectionState.Connected) return;
  ui.chatInput.value = '';
  sendChat(text);
});
window.addEventListener('pagehide', () => {
  room?.disconnect();
});
