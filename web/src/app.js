// Browser client for the voice agent: one click starts a conversation in a fresh room (or
// joins a meeting from an invite link), publishes the microphone, plays the agent and shows
// its state as a large visualizer, a transcript of everyone with names and times, the
// people in the room, chat, push-to-talk when the agent asks for it, and honest states.
//
// Protocol details follow livekit-agents' room_io:
//   - agent state:    participant attribute `lk.agent.state` (initializing, listening, thinking, speaking, idle)
//   - transcripts:    text streams on topic `lk.transcription`; attributes `lk.segment_id`,
//                     `lk.transcription_final`, `lk.transcribed_track_id`
//   - chat:           text streams on topic `lk.chat`, both ways
//   - push-to-talk:   agent attribute `lk.push_to_talk=true`; RPC `start_turn` / `end_turn`
// "Direct to Gemini" (the start screen's option) skips LiveKit: direct.js, loaded on demand,
// talks to the Gemini Live API with an ephemeral token from POST /api/gemini-token.
import {
  ConnectionState,
  DisconnectReason,
  MediaDeviceFailure,
  ParticipantKind,
  Room,
  RoomEvent,
  Track,
  createLocalAudioTrack,
} from 'livekit-client';
import * as levels from './levels.js';
import * as transcript from './transcript.js';
import { initTheme } from './theme.js';

const TOPIC_TRANSCRIPTION = 'lk.transcription';
const TOPIC_CHAT = 'lk.chat';
const ATTR_AGENT_STATE = 'lk.agent.state';
const ATTR_PUSH_TO_TALK = 'lk.push_to_talk';
const ATTR_ECHO_WARMUP = 'lk.echo_warmup_s';
const ATTR_SEGMENT_ID = 'lk.segment_id';
const ATTR_FINAL = 'lk.transcription_final';
const ATTR_TRACK_ID = 'lk.transcribed_track_id';
// livekit-agents' default echo warm-up, used when the agent does not advertise its own
const DEFAULT_ECHO_WARMUP_S = 3;
const SPEAKING_LEVEL = 0.3; // about -42 dBFS
const DIRECT_MODULE = '/static/direct.js'; // a separate bundle: the Gemini SDK, only when chosen
const DIRECT_AGENT = 'gemini'; // the agent's key in the meters and audio sinks in direct mode

const STATE_LABELS = {
  connecting: 'Connecting…',
  waiting: 'Waiting for the agent to join…',
  initializing: 'Getting ready…',
  idle: 'Idle',
  listening: 'Listening',
  thinking: 'Thinking…',
  speaking: 'Speaking',
  left: 'The agent has left',
  ended: 'Call ended',
};

const $ = (id) => document.getElementById(id);
const ui = Object.fromEntries(
  [
    'status', 'invite', 'start', 'start-title', 'start-lead', 'start-error', 'start-new', 'start-form',
    'start-button', 'name', 'call', 'alerts', 'agent', 'viz', 'agent-state', 'hint', 'ptt', 'ptt-help',
    'ended', 'ended-title', 'ended-reason', 'restart', 'videos', 'side', 'participants', 'copy', 'download',
    'transcript', 'chat-form', 'chat-input', 'chat-send', 'controls', 'mic', 'mic-level', 'camera',
    'screen', 'devices', 'chat-toggle', 'end', 'devices-dialog', 'mic-device', 'camera-device',
    'camera-device-label', 'speaker-device', 'speaker-device-label', 'invite-dialog', 'invite-link',
    'invite-copy', 'invite-expiry', 'audio-sinks',
  ].map((id) => [id.replace(/-([a-z])/g, (_, c) => c.toUpperCase()), $(id)]),
);

/** @type {Room | null} */
let room = null;
/** @type {import('./direct.js').DirectCall | null} */
let direct = null;
let mode = 'voice';
let inviteFromLink = readInviteFromLink();
let agentIdentity = null;
let agentEverJoined = false;
let agentTimer = null;
let warmup = { started: false, timer: null };
let pttHeld = false;
let meterTimer = null;
let callCount = 0;
let ending = false;
let connecting = false; // between the click and the room's first connection

// ---------------------------------------------------------------------------- helpers

function readInviteFromLink() {
  const params = new URLSearchParams(location.hash.slice(1));
  return params.get('invite') || null;
}

function inviteLink(invite) {
  return `${location.origin}${location.pathname}#invite=${encodeURIComponent(invite)}`;
}

function setStatus(text, state) {
  ui.status.textContent = text;
  ui.status.dataset.state = state;
}

/** One alert per kind (mic, agent-missing, agent-left, connection, error): replaced, not stacked. */
function showAlert(kind, text) {
  let el = ui.alerts.querySelector(`[data-kind="${kind}"]`);
  if (!el) {
    el = document.createElement('div');
    el.className = 'alert';
    el.dataset.kind = kind;
    el.setAttribute('role', 'alert');
    const p = document.createElement('p');
    const close = document.createElement('button');
    close.type = 'button';
    close.className = 'small';
    close.textContent = 'Dismiss';
    close.setAttribute('aria-label', 'Dismiss this message');
    close.addEventListener('click', () => el.remove());
    el.append(p, close);
    ui.alerts.append(el);
  }
  el.querySelector('p').textContent = text;
}

function clearAlert(kind) {
  ui.alerts.querySelector(`[data-kind="${kind}"]`)?.remove();
}

function describeMediaError(error, device) {
  switch (MediaDeviceFailure.getFailure(error)) {
    case MediaDeviceFailure.PermissionDenied:
      return `${device} access was refused. To talk, allow the ${device.toLowerCase()} for this site in your ` +
        "browser's settings (the icon in the address bar), then press the " +
        `${device.toLowerCase()} button.` + (device === 'Microphone' ? ' You can type to the agent meanwhile.' : '');
    case MediaDeviceFailure.NotFound:
      return `No ${device.toLowerCase()} was found.` + (device === 'Microphone' ? ' You can still type to the agent.' : '');
    case MediaDeviceFailure.DeviceInUse:
      return `The ${device.toLowerCase()} is in use by another application. Close it and try again.`;
    default:
      return `Could not start the ${device.toLowerCase()}: ${error?.message || error}`;
  }
}

function describeDisconnect(reason) {
  switch (reason) {
    case DisconnectReason.CLIENT_INITIATED:
      return 'You ended the call.';
    case DisconnectReason.DUPLICATE_IDENTITY:
      return 'You joined from somewhere else, so this page was disconnected.';
    case DisconnectReason.PARTICIPANT_REMOVED:
      return 'You were removed from the conversation.';
    case DisconnectReason.ROOM_DELETED:
    case DisconnectReason.ROOM_CLOSED:
      return 'The conversation was closed.';
    case DisconnectReason.SERVER_SHUTDOWN:
      return 'The voice service shut down.';
    default:
      return 'The connection was lost and could not be restored. Check your network.';
  }
}

const isMobile = () =>
  navigator.userAgentData?.mobile ?? /Android|iPhone|iPad|iPod|Mobile/i.test(navigator.userAgent);
const canShareScreen = () => !!navigator.mediaDevices?.getDisplayMedia && !isMobile();
const canPickSpeaker = () => 'setSinkId' in HTMLMediaElement.prototype;

// ---------------------------------------------------------------------------- the agent

function isAgent(p) {
  return p.kind === ParticipantKind.AGENT || ATTR_AGENT_STATE in (p.attributes || {});
}

function findAgent() {
  if (!room) return null;
  for (const p of room.remoteParticipants.values()) if (isAgent(p)) return p;
  return null;
}

function displayName(p) {
  if (!p) return 'Someone';
  if (room && p === room.localParticipant) return 'You';
  if (isAgent(p)) return p.name && !p.name.startsWith('agent-') ? p.name : 'Agent';
  return p.name || p.identity;
}

function renderAgent() {
  const agent = findAgent();
  let state;
  if (direct) state = direct.state;
  else if (!room) state = connecting ? 'connecting' : 'ended';
  else if (room.state !== ConnectionState.Connected && !agent) state = 'connecting';
  else if (agent) state = agent.attributes?.[ATTR_AGENT_STATE] || 'initializing';
  else state = agentEverJoined ? 'left' : 'waiting';

  if (agent) {
    agentIdentity = agent.identity;
    if (!agentEverJoined) {
      agentEverJoined = true;
      clearTimeout(agentTimer);
      clearAlert('agent-missing');
    }
    clearAlert('agent-left');
  }
  ui.agent.dataset.state = state;
  ui.agentState.dataset.state = state;
  ui.agentState.textContent = STATE_LABELS[state] || state;

  // push-to-talk: the agent asks for it with an attribute
  const ptt = !!agent && agent.attributes?.[ATTR_PUSH_TO_TALK] === 'true' && mode === 'voice';
  ui.ptt.hidden = !ptt;
  ui.pttHelp.hidden = !ptt;
  if (!ptt && pttHeld) endTurn();

  // echo warm-up: the agent discards the person's audio while its first reply plays
  if (agent && state === 'speaking' && !warmup.started && mode === 'voice' && !ptt) {
    warmup.started = true;
    const seconds = Number(agent.attributes?.[ATTR_ECHO_WARMUP] ?? DEFAULT_ECHO_WARMUP_S);
    if (seconds > 0) {
      showHint('The agent can’t hear you while it greets you. Speak when it has finished.');
      warmup.timer = setTimeout(hideHint, seconds * 1000);
    }
  } else if (warmup.timer && state !== 'speaking') {
    clearTimeout(warmup.timer);
    warmup.timer = null;
    hideHint();
  }
  renderParticipants();
}

function showHint(text) {
  ui.hint.textContent = text;
  ui.hint.hidden = false;
  ui.hint.dataset.shown = 'true';
}

function hideHint() {
  ui.hint.hidden = true;
  ui.hint.textContent = '';
}

function armAgentTimer(seconds) {
  clearTimeout(agentTimer);
  agentTimer = setTimeout(() => {
    if (!room || findAgent() || agentEverJoined) return;
    showAlert(
      'agent-missing',
      `The agent has not joined after ${seconds} seconds. It may be busy or not running. ` +
        'Keep waiting, or end the call and try again in a minute; if it keeps happening, the agent service needs attention.',
    );
  }, seconds * 1000);
}

// ---------------------------------------------------------------------------- push-to-talk

async function startTurn() {
  if (pttHeld || !room || !agentIdentity) return;
  pttHeld = true;
  ui.ptt.setAttribute('aria-pressed', 'true');
  ui.ptt.textContent = 'Release to send';
  try {
    if (!room.localParticipant.isMicrophoneEnabled) await room.localParticipant.setMicrophoneEnabled(true);
    await room.localParticipant.performRpc({ destinationIdentity: agentIdentity, method: 'start_turn', payload: '' });
  } catch (e) {
    showAlert('error', `Push-to-talk failed: ${e?.message || e}`);
  }
}

async function endTurn() {
  if (!pttHeld) return;
  pttHeld = false;
  ui.ptt.setAttribute('aria-pressed', 'false');
  ui.ptt.textContent = 'Hold to talk';
  if (!room || !agentIdentity) return;
  try {
    await room.localParticipant.performRpc({ destinationIdentity: agentIdentity, method: 'end_turn', payload: '' });
  } catch (e) {
    showAlert('error', `Push-to-talk failed: ${e?.message || e}`);
  }
}

// ---------------------------------------------------------------------------- participants

function renderParticipants() {
  const people = room ? [room.localParticipant, ...room.remoteParticipants.values()] : [];
  const seen = new Set();
  for (const p of people) {
    seen.add(p.identity);
    let li = ui.participants.querySelector(`li[data-identity="${CSS.escape(p.identity)}"]`);
    if (!li) {
      li = document.createElement('li');
      li.dataset.identity = p.identity;
      const dot = document.createElement('span');
      dot.className = 'speaking-dot';
      dot.setAttribute('aria-hidden', 'true');
      const name = document.createElement('span');
      name.className = 'name';
      const badge = document.createElement('span');
      badge.className = 'badge';
      const speaking = document.createElement('span');
      speaking.className = 'visually-hidden speaking-text';
      li.append(dot, name, badge, speaking);
      ui.participants.append(li);
    }
    const local = p === room.localParticipant;
    li.dataset.role = local ? 'you' : isAgent(p) ? 'agent' : 'person';
    li.querySelector('.name').textContent = local ? `${p.name || 'You'}` : displayName(p);
    li.querySelector('.badge').textContent = local ? 'you' : isAgent(p) ? 'agent' : '';
  }
  for (const li of [...ui.participants.children]) if (!seen.has(li.dataset.identity)) li.remove();
}

function updateSpeaking() {
  if (!room) return;
  for (const li of ui.participants.children) {
    const id = li.dataset.identity;
    const p = id === room.localParticipant.identity ? room.localParticipant : room.remoteParticipants.get(id);
    const key = p === room.localParticipant ? 'local-mic' : `audio-${id}`;
    const muted = p === room.localParticipant && !p.isMicrophoneEnabled;
    const speaking = !muted && (!!p?.isSpeaking || levels.level(key) > SPEAKING_LEVEL);
    if ((li.dataset.speaking === 'true') !== speaking) {
      li.dataset.speaking = speaking ? 'true' : 'false';
      li.querySelector('.speaking-text').textContent = speaking ? ' (speaking)' : '';
    }
  }
}

// ---------------------------------------------------------------------------- meters

function tick() {
  levels.sample();
  const micOn = room ? room.localParticipant.isMicrophoneEnabled : !!direct?.micOn;
  const mic = micOn ? levels.level('local-mic') : 0;
  ui.micLevel.value = mic;
  const agentKey = agentIdentity ? `audio-${agentIdentity}` : null;
  const bands = agentKey ? levels.bands(agentKey) : null;
  const bars = ui.viz.children;
  const lvl = agentKey ? levels.level(agentKey) : 0;
  ui.viz.dataset.level = lvl.toFixed(2);
  for (let i = 0; i < bars.length; i++) {
    const v = bands ? Math.min(1, bands[i] * 1.6) : 0;
    bars[i].style.setProperty('--v', v.toFixed(3));
  }
  updateSpeaking();
}

// ---------------------------------------------------------------------------- transcript

function owner(trackSid) {
  if (!trackSid || !room) return null;
  for (const pub of room.localParticipant.trackPublications.values()) if (pub.trackSid === trackSid) return room.localParticipant;
  for (const p of room.remoteParticipants.values())
    for (const pub of p.trackPublications.values()) if (pub.trackSid === trackSid) return p;
  return null;
}

function speakerOf(identity, transcribedTrackId) {
  // The agent publishes people's transcripts on their behalf; the transcribed track names
  // whose speech it is even when the server stamps the agent as the sender.
  const p =
    owner(transcribedTrackId) ||
    (identity === room.localParticipant.identity ? room.localParticipant : room.remoteParticipants.get(identity));
  if (p === room.localParticipant) return { speaker: 'user', p };
  if (!p || isAgent(p)) return { speaker: 'agent', p };
  return { speaker: 'other', p };
}

async function onTranscription(reader, info) {
  const attrs = reader.info.attributes || {};
  const key = `${room.name}:${attrs[ATTR_SEGMENT_ID] || reader.info.id}`;
  const { speaker, p } = speakerOf(info.identity, attrs[ATTR_TRACK_ID]);
  const li = transcript.line(key, {
    speaker,
    name: displayName(p),
    identity: p?.identity || info.identity,
    kind: 'speech',
    timestamp: reader.info.timestamp,
  });
  // One stream carries either the whole segment so far (people) or its deltas (agent):
  // either way, the text read from this stream is the segment's text.
  let text = '';
  try {
    for await (const chunk of reader) {
      text += chunk;
      transcript.setText(li, text, false);
    }
  } catch (e) {
    console.warn('transcription stream ended abnormally', e);
  }
  // The final flag comes in the header (people) or the trailer (agent), merged here.
  const final = reader.info.attributes?.[ATTR_FINAL] === 'true';
  if (final && !text.trim() && !li.querySelector('.text').textContent.trim()) transcript.drop(key);
  else transcript.setText(li, text, final);
}

async function onChat(reader, info) {
  const text = await reader.readAll();
  const p = room?.remoteParticipants.get(info.identity);
  const speaker = p && isAgent(p) ? 'agent' : 'other';
  // the agent may send its answer both as chat and as its transcript: show it once
  const shown = speaker === 'agent' && transcript.recentDuplicate('agent', text);
  if (shown) {
    shown.dataset.chat = 'true'; // the transcript line is also the agent's chat answer
    return;
  }
  const li = transcript.line(`chat-in-${reader.info.id}`, {
    speaker,
    name: displayName(p),
    identity: info.identity,
    kind: 'chat',
    timestamp: reader.info.timestamp,
  });
  transcript.setText(li, text, true);
}

let chatCounter = 0;

async function sendChat(text) {
  const li = transcript.line(`chat-out-${++chatCounter}`, {
    speaker: 'user',
    name: 'You',
    identity: room.localParticipant.identity,
    kind: 'chat',
  });
  transcript.setText(li, text, true);
  try {
    await room.localParticipant.sendText(text, { topic: TOPIC_CHAT });
  } catch (e) {
    li.dataset.failed = 'true';
    showAlert('error', `Your message could not be sent: ${e?.message || e}`);
  }
}

// ------------------------------------------------------------------------------- media

function renderControls() {
  const lp = room?.localParticipant;
  for (const [button, on, label] of [
    [ui.mic, direct ? direct.micOn : lp?.isMicrophoneEnabled, 'Microphone'],
    [ui.camera, lp?.isCameraEnabled, 'Camera'],
    [ui.screen, lp?.isScreenShareEnabled, 'Share screen'],
  ]) {
    button.setAttribute('aria-pressed', on ? 'true' : 'false');
    button.querySelector('.label').textContent = label;
    button.title = `${label}: ${on ? 'on' : 'off'}`;
  }
  ui.screen.hidden = !canShareScreen() || !!direct;
  if (direct) ui.camera.hidden = ui.devices.hidden = true; // direct mode: voice and text only
  renderLocalVideos();
}

// Previews of what this page sends: shown while the track is published and not muted
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

async function toggle(kind) {
  if (direct && kind === 'mic') {
    direct.setMicEnabled(!direct.micOn);
    return renderControls();
  }
  if (!room) return;
  const lp = room.localParticipant;
  try {
    if (kind === 'mic') {
      await lp.setMicrophoneEnabled(!lp.isMicrophoneEnabled);
      clearAlert('mic');
    }
    if (kind === 'camera') await lp.setCameraEnabled(!lp.isCameraEnabled);
    if (kind === 'screen') await lp.setScreenShareEnabled(!lp.isScreenShareEnabled, { audio: true });
  } catch (e) {
    if (kind === 'screen' && e?.name === 'NotAllowedError') showAlert('screen', 'Screen sharing was cancelled or refused.');
    else showAlert(kind, describeMediaError(e, { mic: 'Microphone', camera: 'Camera', screen: 'Screen' }[kind]));
  }
  renderControls();
  fillDevices();
}

async function fillDevices() {
  if (!room) return;
  const fill = async (select, kind) => {
    let devices = [];
    try {
      devices = await Room.getLocalDevices(kind, false);
    } catch {
      /* no permission yet */
    }
    const active = room.getActiveDevice(kind);
    select.replaceChildren(
      ...devices
        .filter((d) => d.deviceId)
        .map((d, i) => {
          const o = document.createElement('option');
          o.value = d.deviceId;
          o.textContent = d.label || `${kind} ${i + 1}`;
          o.selected = d.deviceId === active;
          return o;
        }),
    );
    return devices.length;
  };
  const [, cameras] = await Promise.all([
    fill(ui.micDevice, 'audioinput'),
    fill(ui.cameraDevice, 'videoinput'),
    canPickSpeaker() ? fill(ui.speakerDevice, 'audiooutput') : 0,
  ]);
  // only what this device can do: no camera button without a camera
  ui.camera.hidden = cameras === 0 && !room.localParticipant.isCameraEnabled;
  ui.cameraDevice.hidden = ui.cameraDeviceLabel.hidden = cameras === 0;
  ui.speakerDevice.hidden = ui.speakerDeviceLabel.hidden = !canPickSpeaker();
}

async function switchDevice(kind, select) {
  if (!room || !select.value) return;
  try {
    await room.switchActiveDevice(kind, select.value);
    if (kind === 'audioinput') watchLocalMic();
  } catch (e) {
    showAlert('error', `Could not switch to that device: ${e?.message || e}`);
  }
}

function watchLocalMic() {
  const track = room?.localParticipant.getTrackPublication(Track.Source.Microphone)?.track;
  if (track?.mediaStreamTrack) levels.watch('local-mic', track.mediaStreamTrack);
}

// ------------------------------------------------------------------------- connecting

async function fetchToken(name, invite) {
  const body = {};
  if (name) body.name = name;
  if (invite) body.invite = invite;
  if (mode === 'text') body.mode = 'text'; // the agent answers a chat-only person in text
  return postForGrant('/api/token', body);
}

async function postForGrant(path, body) {
  let resp;
  try {
    resp = await fetch(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
  } catch {
    throw Object.assign(new Error('The server could not be reached. Check your connection and try again.'), { shown: true });
  }
  let data = null;
  try {
    data = await resp.json();
  } catch {
    /* not JSON */
  }
  if (!resp.ok) {
    let message;
    if (resp.status === 429) message = `Too many attempts. Try again in ${resp.headers.get('Retry-After') || 'a few'} seconds.`;
    else if (data?.field === 'invite') message = `This invite link cannot be used: ${data.error}.`;
    else if (data?.message) message = `Cannot start: ${data.message}.`;
    else message = data?.error ? `Cannot start: ${data.error}.` : `Cannot start (HTTP ${resp.status}).`;
    throw Object.assign(new Error(message), { shown: true, field: data?.field });
  }
  return data;
}

function wireRoom(r) {
  r.registerTextStreamHandler(TOPIC_TRANSCRIPTION, (reader, info) => {
    onTranscription(reader, info);
  });
  r.registerTextStreamHandler(TOPIC_CHAT, (reader, info) => {
    onChat(reader, info);
  });
  r.on(RoomEvent.ParticipantConnected, renderAgent)
    .on(RoomEvent.ParticipantDisconnected, (p) => {
      levels.unwatch(`audio-${p.identity}`);
      if (isAgent(p) && !findAgent() && !ending) {
        showAlert('agent-left', 'The agent has left the conversation. End the call and start again to talk to it.');
      }
      renderAgent();
    })
    .on(RoomEvent.ParticipantAttributesChanged, renderAgent)
    .on(RoomEvent.ParticipantNameChanged, renderParticipants)
    .on(RoomEvent.TrackSubscribed, (track, pub, participant) => {
      if (track.kind === Track.Kind.Audio) {
        if (mode === 'text') track.setVolume(0); // a chat-only conversation: no sound
        const el = track.attach();
        el.dataset.participant = participant.identity;
        ui.audioSinks.append(el);
        levels.watch(`audio-${participant.identity}`, track.mediaStreamTrack);
      } else if (track.kind === Track.Kind.Video) {
        addVideo(track, `video-${track.sid}`, `${displayName(participant)}: ${pub.source === Track.Source.ScreenShare ? 'screen' : 'camera'}`);
      }
    })
    .on(RoomEvent.TrackUnsubscribed, (track, pub, participant) => {
      track.detach().forEach((el) => el.remove());
      if (track.kind === Track.Kind.Audio) levels.unwatch(`audio-${participant.identity}`);
      removeVideo(`video-${track.sid}`);
    })
    .on(RoomEvent.LocalTrackPublished, (pub) => {
      if (pub.source === Track.Source.Microphone) watchLocalMic();
      renderControls();
    })
    .on(RoomEvent.LocalTrackUnpublished, (pub) => {
      if (pub.source === Track.Source.Microphone) levels.unwatch('local-mic');
      renderControls();
    })
    .on(RoomEvent.TrackMuted, renderControls)
    .on(RoomEvent.TrackUnmuted, renderControls)
    .on(RoomEvent.MediaDevicesChanged, fillDevices)
    .on(RoomEvent.ActiveDeviceChanged, fillDevices)
    .on(RoomEvent.MediaDevicesError, (e) => showAlert('mic', describeMediaError(e, 'Microphone')))
    .on(RoomEvent.Reconnecting, () => {
      setStatus('Connection lost — reconnecting…', 'reconnecting');
      showAlert('connection', 'The connection dropped. Reconnecting…');
    })
    .on(RoomEvent.Reconnected, () => {
      setStatus('Connected', 'connected');
      clearAlert('connection');
      renderAgent();
    })
    .on(RoomEvent.Disconnected, (reason) => endCall(describeDisconnect(reason)));
}

function showScreen(which) {
  ui.start.hidden = which !== 'start';
  ui.call.hidden = which === 'start';
  ui.controls.hidden = which !== 'call';
  ui.agent.hidden = which !== 'call';
  ui.ended.hidden = which !== 'ended';
  ui.chatForm.hidden = which !== 'call';
  ui.invite.hidden = which !== 'call' || !ui.inviteLink.value;
  document.body.dataset.screen = which;
}

function setSideOpen(open) {
  ui.side.dataset.open = open ? 'true' : 'false';
  ui.chatToggle.setAttribute('aria-pressed', open ? 'true' : 'false');
}

async function start(invite) {
  if (room || direct) return;
  const form = new FormData(ui.startForm);
  mode = form.get('mode') === 'text' ? 'text' : 'voice';
  const viaGemini = form.get('link') === 'direct' && !invite; // a meeting is always in LiveKit
  const name = String(form.get('name') || '').trim();
  levels.audioContext(); // created inside the click, so playback and meters may start
  ui.startButton.disabled = true;
  ui.startError.hidden = true;
  ui.startNew.hidden = true;
  ui.alerts.replaceChildren();
  hideHint();
  agentEverJoined = false;
  agentIdentity = null;
  warmup = { started: false, timer: null };
  ending = false;
  ui.inviteLink.value = '';
  connecting = true;
  setStatus('Connecting…', 'connecting');
  showScreen('call');
  ui.agent.dataset.mode = mode;
  setSideOpen(mode === 'text' || window.matchMedia('(min-width: 900px)').matches);
  renderAgent();

  // The microphone permission is asked now, while the token is fetched.
  const micPromise =
    mode === 'voice'
      ? createLocalAudioTrack({ echoCancellation: true, noiseSuppression: true, autoGainControl: true }).catch((e) => {
          showAlert('mic', describeMediaError(e, 'Microphone'));
          setSideOpen(true);
          return null;
        })
      : Promise.resolve(null);
  ui.devices.hidden = false;
  if (viaGemini) return startDirect(micPromise);

  const r = new Room({ adaptiveStream: true, dynacast: true });
  room = r;
  wireRoom(r);
  let grant;
  try {
    grant = await fetchToken(name, invite);
    await r.connect(grant.server_url, grant.participant_token);
  } catch (e) {
    connecting = false;
    room = null;
    await r.disconnect().catch(() => {});
    (await micPromise)?.stop();
    showScreen('start');
    setStatus('Not connected', 'idle');
    ui.startError.textContent = e?.shown ? e.message : `Could not connect to the voice service: ${e?.message || e}`;
    ui.startError.hidden = false;
    ui.startNew.hidden = !(e?.field === 'invite');
    ui.startButton.disabled = false;
    return;
  }
  connecting = false;
  callCount += 1;
  transcript.separator(invite ? 'Joined the meeting' : callCount > 1 ? 'New conversation' : 'Conversation started');
  setStatus('Connected', 'connected');
  ui.status.dataset.room = r.name;
  ui.inviteLink.value = inviteLink(grant.invite);
  ui.inviteExpiry.dateTime = new Date(grant.invite_expires_at * 1000).toISOString();
  ui.inviteExpiry.textContent = new Date(grant.invite_expires_at * 1000).toLocaleString();
  showScreen('call');
  r.startAudio().catch(() => {});
  armAgentTimer(grant.agent_join_timeout_s || 15);
  renderAgent();
  renderControls();
  if (!meterTimer) meterTimer = setInterval(tick, 80);

  const mic = await micPromise;
  if (mic && room === r) {
    try {
      await r.localParticipant.publishTrack(mic, { source: Track.Source.Microphone });
    } catch (e) {
      showAlert('mic', `Your microphone could not be connected: ${e?.message || e}`);
    }
  }
  renderControls();
  fillDevices();
  if (mode === 'text' || !mic) ui.chatInput.focus();
  else ui.end.focus({ preventScroll: true });
}

function endCall(reasonText) {
  direct?.close();
  direct = null;
  clearTimeout(agentTimer);
  clearTimeout(warmup.timer);
  if (pttHeld) pttHeld = false;
  levels.unwatchAll();
  clearInterval(meterTimer);
  meterTimer = null;
  ui.audioSinks.replaceChildren();
  ui.videos.replaceChildren();
  ui.participants.replaceChildren();
  room = null;
  hideHint();
  ui.alerts.replaceChildren();
  setStatus('Call ended', 'ended');
  ui.endedReason.textContent = reasonText;
  renderAgent();
  showScreen('ended');
  setSideOpen(!transcript.isEmpty());
  ui.endedTitle.focus();
  // the invite in the address bar was for the call that ended
  if (location.hash) history.replaceState(null, '', location.pathname + location.search);
  inviteFromLink = null;
  ui.startButton.disabled = false;
}

// ----------------------------------------------------------------- direct to Gemini

async function startDirect(micPromise) {
  const sink = document.createElement('audio');
  sink.dataset.participant = DIRECT_AGENT;
  sink.muted = mode === 'text'; // a chat-only conversation: no sound
  let call = null;
  try {
    const grant = await postForGrant('/api/gemini-token', {});
    const { DirectCall } = await import(DIRECT_MODULE);
    ui.audioSinks.append(sink);
    call = new DirectCall(grant, {
      playbackContext: levels.audioContext(),
      audioElement: sink,
      onState: renderAgent,
      onTranscript: showDirectTranscript,
      onAudioTrack: (track) => levels.watch(`audio-${DIRECT_AGENT}`, track),
      onClose: (reason) => {
        if (direct === call) endCall(reason || 'You ended the call.');
      },
    });
    direct = call;
    await call.connect();
  } catch (e) {
    connecting = false;
    direct = null;
    call?.close();
    sink.remove();
    (await micPromise)?.stop();
    showScreen('start');
    setStatus('Not connected', 'idle');
    ui.startError.textContent = e?.shown ? e.message : `Could not connect to Gemini: ${e?.message || e}`;
    ui.startError.hidden = false;
    ui.startButton.disabled = false;
    return;
  }
  connecting = false;
  callCount += 1;
  agentIdentity = DIRECT_AGENT;
  transcript.separator(callCount > 1 ? 'New conversation, direct to Gemini' : 'Conversation started, direct to Gemini');
  setStatus('Connected directly to Gemini', 'connected');
  ui.status.dataset.room = '';
  showScreen('call');
  renderAgent();
  renderControls();
  if (!meterTimer) meterTimer = setInterval(tick, 80);
  const mic = await micPromise;
  if (mic && direct === call) {
    try {
      await call.startMic(new MediaStream([mic.mediaStreamTrack]));
      levels.watch('local-mic', mic.mediaStreamTrack);
    } catch (e) {
      showAlert('mic', `Your microphone could not be connected: ${e?.message || e}`);
    }
  } else mic?.stop();
  renderControls();
  if (mode === 'text' || !mic) ui.chatInput.focus();
  else ui.end.focus({ preventScroll: true });
}

function showDirectTranscript(speaker, turn, text, final) {
  const li = transcript.line(`direct-${callCount}-${turn}-${speaker}`, {
    speaker,
    name: speaker === 'user' ? 'You' : 'Agent',
    identity: speaker === 'user' ? 'you' : DIRECT_AGENT,
    kind: 'speech',
  });
  transcript.setText(li, text, final);
}

function sendDirectChat(text) {
  const li = transcript.line(`chat-out-${++chatCounter}`, { speaker: 'user', name: 'You', identity: 'you', kind: 'chat' });
  transcript.setText(li, text, true);
  try {
    direct.sendText(text);
  } catch (e) {
    li.dataset.failed = 'true';
    showAlert('error', `Your message could not be sent: ${e?.message || e}`);
  }
}

// ------------------------------------------------------------------------------ wiring

function wire() {
  initTheme($('theme'));
  if (inviteFromLink) {
    ui.startTitle.textContent = 'Join the meeting';
    ui.startLead.textContent = 'You were invited to a conversation with the voice agent. One click joins it; your browser will ask to use your microphone.';
    ui.startButton.textContent = 'Join meeting';
  }
  ui.startForm.addEventListener('submit', (e) => {
    e.preventDefault();
    start(inviteFromLink);
  });
  ui.startNew.addEventListener('click', () => {
    inviteFromLink = null;
    history.replaceState(null, '', location.pathname + location.search);
    ui.startTitle.textContent = 'Talk to the voice agent';
    ui.startButton.textContent = 'Start conversation';
    ui.startNew.hidden = true;
    ui.startError.hidden = true;
  });
  ui.restart.addEventListener('click', () => start(null));
  ui.mic.addEventListener('click', () => toggle('mic'));
  ui.camera.addEventListener('click', () => toggle('camera'));
  ui.screen.addEventListener('click', () => toggle('screen'));
  ui.end.addEventListener('click', async () => {
    ending = true;
    if (room) await room.disconnect();
    else if (direct) endCall('You ended the call.');
  });
  ui.chatToggle.addEventListener('click', () => setSideOpen(ui.side.dataset.open !== 'true'));
  ui.devices.addEventListener('click', async () => {
    await fillDevices();
    ui.devicesDialog.showModal();
  });
  ui.micDevice.addEventListener('change', () => switchDevice('audioinput', ui.micDevice));
  ui.cameraDevice.addEventListener('change', () => switchDevice('videoinput', ui.cameraDevice));
  ui.speakerDevice.addEventListener('change', () => switchDevice('audiooutput', ui.speakerDevice));
  ui.invite.addEventListener('click', () => {
    ui.inviteDialog.showModal();
    ui.inviteLink.select();
  });
  ui.inviteCopy.addEventListener('click', () => copy(ui.inviteLink.value, ui.inviteCopy, 'Copy link'));
  ui.copy.addEventListener('click', () => copy(transcript.asText(), ui.copy, 'Copy'));
  ui.download.addEventListener('click', () => {
    const blob = new Blob([transcript.asText() + '\n'], { type: 'text/plain' });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `transcript-${new Date().toISOString().slice(0, 16).replace(/[:T]/g, '-')}.txt`;
    a.click();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  });
  ui.chatForm.addEventListener('submit', (e) => {
    e.preventDefault();
    const text = ui.chatInput.value.trim();
    if (direct && text) {
      ui.chatInput.value = '';
      return sendDirectChat(text);
    }
    if (!text || !room || room.state !== ConnectionState.Connected) return;
    ui.chatInput.value = '';
    sendChat(text);
  });

  // push-to-talk: mouse, touch and pen through pointer events, keyboard through space
  ui.ptt.addEventListener('pointerdown', (e) => {
    e.preventDefault();
    ui.ptt.setPointerCapture?.(e.pointerId);
    startTurn();
  });
  for (const ev of ['pointerup', 'pointercancel', 'lostpointercapture']) ui.ptt.addEventListener(ev, endTurn);
  ui.ptt.addEventListener('contextmenu', (e) => e.preventDefault());
  const typing = (el) => el && (el.tagName === 'INPUT' || el.tagName === 'TEXTAREA' || el.tagName === 'SELECT');
  document.addEventListener('keydown', (e) => {
    if (e.code !== 'Space' || ui.ptt.hidden || typing(e.target) || (e.target !== ui.ptt && e.target.tagName === 'BUTTON')) return;
    e.preventDefault();
    if (!e.repeat) startTurn();
  });
  document.addEventListener('keyup', (e) => {
    if (e.code !== 'Space' || ui.ptt.hidden || !pttHeld) return;
    e.preventDefault();
    endTurn();
  });
  window.addEventListener('pagehide', () => (room ? room.disconnect() : direct?.close()));
  showScreen('start');
}

async function copy(text, button, label) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = 'Copied';
  } catch {
    button.textContent = 'Copy failed: select and copy';
  }
  setTimeout(() => (button.textContent = label), 2000);
}

wire();
