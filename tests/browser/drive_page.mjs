// Drives the web client in Debian's headless Chromium (playwright-core; no browser download)
// the way people would, and reports what the pages showed as JSON lines on stdout:
//   {"event": "joined", "scenario", "room", "identity"}   once a page says it is connected
//   {"event": "scenario", "scenario", ...result}            when a scenario is done (or failed)
//   {"event": "done"}                                       at the end
// One browser runs every scenario (each in its own context), to keep the tests' wall time low.
//
//   node drive_page.mjs '<json config>'
// config: { urls: {main, ptt, absent}, wav, artifactsDir, timeoutMs, scenarios: [names] }
import { chromium } from 'playwright-core';
import { mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { createInterface } from 'node:readline';
import { join as pathJoin } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeoutMs ?? 45000;
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
mkdirSync(cfg.artifactsDir, { recursive: true });
const shot = (page, name) => page.screenshot({ path: pathJoin(cfg.artifactsDir, `${name}.png`), fullPage: false });
const require = createRequire(import.meta.url);
const AXE_SOURCE = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

const args = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-dev-shm-usage',
  // Nothing may leave this machine.
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-quic',
  '--no-first-run',
  '--no-default-browser-check',
  '--disable-domain-reliability',
  '--metrics-recording-only',
  '--autoplay-policy=no-user-gesture-required',
  // Fake devices; the permission to use them is given (or not) per context.
  '--use-fake-device-for-media-stream',
  `--use-file-for-fake-audio-capture=${cfg.wav}`,
];

const DESKTOP = { viewport: { width: 1280, height: 800 } };
const PHONE = {
  viewport: { width: 390, height: 844 },
  deviceScaleFactor: 1,
  isMobile: true,
  hasTouch: true,
  userAgent:
    'Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Mobile Safari/537.36',
};

let browser;
const stdinLines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

// Before a call that needs an agent: the test answers once a worker can take the job (on a
// saturated machine a worker reports itself full and the local server would not dispatch).
async function ready(scenario, agent) {
  emit({ event: 'ready', scenario, agent });
  await stdinLines.next();
}

async function newPage(result, options, granted) {
  const context = await browser.newContext({ ...options, permissions: granted ? ['microphone', 'camera'] : [] });
  const page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error') result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.pageErrors.push(String(e)));
  page.on('response', (r) => {
    if (r.status() >= 400 && !r.url().includes('/rtc')) result.httpErrors.push(`${r.status()} ${r.url()}`);
  });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window.__csp ||= []).push(`${e.violatedDirective} ${e.blockedURI}`);
    });
    // every state the agent and the connection show, and the highest levels
    window.__states = [];
    window.__status = [];
    window.__hintSeenWhile = null;
    window.__micMax = 0;
    window.__vizMax = 0;
    const watch = () => {
      const s = document.getElementById('agent-state')?.dataset.state;
      if (s && window.__states[window.__states.length - 1] !== s) window.__states.push(s);
      const c = document.getElementById('status')?.dataset.state;
      if (c && window.__status[window.__status.length - 1] !== c) window.__status.push(c);
      const hint = document.getElementById('hint');
      if (hint && !hint.hidden && window.__hintSeenWhile === null) window.__hintSeenWhile = { state: s, text: hint.textContent };
      window.__micMax = Math.max(window.__micMax, Number(document.getElementById('mic-level')?.value || 0));
      window.__vizMax = Math.max(window.__vizMax, Number(document.getElementById('viz')?.dataset.level || 0));
    };
    setInterval(watch, 40);
  });
  return page;
}

async function text(page, sel) {
  return (await page.locator(sel).first().textContent({ timeout: 5000 }).catch(() => null))?.trim() ?? null;
}

async function transcript(page) {
  return page.$$eval('#transcript li:not(.separator)', (lis) =>
    lis.map((li) => ({
      speaker: li.dataset.speaker,
      kind: li.dataset.kind,
      final: li.dataset.final === 'true',
      who: li.querySelector('.who')?.textContent ?? '',
      time: li.querySelector('time')?.textContent ?? '',
      text: li.querySelector('.text')?.textContent ?? '',
    })),
  );
}

async function participants(page) {
  return page.$$eval('#participants li', (lis) =>
    lis.map((li) => ({ role: li.dataset.role, name: li.querySelector('.name').textContent, identity: li.dataset.identity })),
  );
}

async function alerts(page) {
  return page.$$eval('#alerts .alert', (els) => Object.fromEntries(els.map((e) => [e.dataset.kind, e.querySelector('p').textContent])));
}

async function startCall(page, scenario, { name, textOnly } = {}) {
  if (name || textOnly) {
    await page.click('.options summary');
    if (name) await page.fill('#name', name);
    if (textOnly) await page.check('#mode-text');
  }
  const t0 = Date.now();
  await page.click('#start-button');
  await page.waitForSelector('#status[data-state="connected"]', { timeout });
  const joinMs = Date.now() - t0;
  const room = await page.getAttribute('#status', 'data-room');
  await page.waitForSelector('#participants li[data-role="you"]', { timeout });
  const identity = await page.getAttribute('#participants li[data-role="you"]', 'data-identity');
  emit({ event: 'joined', scenario, room, identity });
  return { joinMs, room, identity };
}

// The agent's voice as played in the page: a Web Audio analyser on its <audio> element.
async function measureAgentAudio(page, agentIdentity, ms) {
  return page.evaluate(
    async ({ ms, agentIdentity }) => {
      const deadline = performance.now() + ms;
      let el = null;
      while (!el && performance.now() < deadline) {
        el = document.querySelector(`#audio-sinks audio[data-participant="${agentIdentity}"]`);
        if (!el?.srcObject) el = null;
        if (!el) await new Promise((r) => setTimeout(r, 50));
      }
      if (!el) return { found: false };
      const ctx = new AudioContext();
      await ctx.resume();
      const an = ctx.createAnalyser();
      an.fftSize = 8192;
      an.smoothingTimeConstant = 0;
      ctx.createMediaStreamSource(el.srcObject).connect(an);
      const td = new Float32Array(an.fftSize);
      const fd = new Float32Array(an.frequencyBinCount);
      let best = { rms: 0 };
      let loud = 0;
      while (performance.now() < deadline && loud < 12) {
        await new Promise((r) => setTimeout(r, 50));
        an.getFloatTimeDomainData(td);
        let sum = 0;
        for (const v of td) sum += v * v;
        const rms = Math.sqrt(sum / td.length);
        if (rms > 0.01) loud++;
        if (rms > best.rms) {
          an.getFloatFrequencyData(fd);
          let k = 1;
          for (let i = 2; i < fd.length - 1; i++) if (fd[i] > fd[k]) k = i;
          const [a, b, c] = [fd[k - 1], fd[k], fd[k + 1]];
          const p = (a - c) / (2 * (a - 2 * b + c)) || 0;
          best = { rms, dominantHz: ((k + p) * ctx.sampleRate) / an.fftSize };
        }
      }
      await ctx.close();
      return { found: true, peakDbfs: best.rms > 0 ? 20 * Math.log10(best.rms) : -999, dominantHz: best.dominantHz ?? null, loud };
    },
    { ms, agentIdentity },
  );
}

async function axe(page) {
  await page.evaluate(AXE_SOURCE + '\n;0'); // evaluate is not subject to the page's CSP
  const r = await page.evaluate(() => window.axe.run(document, { resultTypes: ['violations'] }));
  return r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }));
}

async function agentIdentityOf(page) {
  await page.waitForSelector('#participants li[data-role="agent"]', { timeout });
  return page.getAttribute('#participants li[data-role="agent"]', 'data-identity');
}

async function chat(page, message) {
  const before = (await transcript(page)).length;
  await page.fill('#chat-input', message);
  await page.press('#chat-input', 'Enter');
  await page.waitForFunction(
    (before) => {
      const lis = [...document.querySelectorAll('#transcript li:not(.separator)')].slice(before);
      const typed = lis.findIndex((li) => li.dataset.kind === 'chat' && li.dataset.speaker === 'user');
      return typed >= 0 && lis.slice(typed + 1).some((li) => li.dataset.speaker === 'agent' && li.dataset.final === 'true');
    },
    before,
    { timeout },
  );
  const after = (await transcript(page)).slice(before);
  const typed = after.findIndex((e) => e.kind === 'chat');
  return { sent: after[typed]?.text, reply: after.slice(typed + 1).find((e) => e.speaker === 'agent' && e.final)?.text };
}

async function pageState(page) {
  return page.evaluate(() => ({
    states: window.__states,
    status: window.__status,
    hintSeenWhile: window.__hintSeenWhile,
    micMax: window.__micMax,
    vizMax: window.__vizMax,
    csp: window.__csp || [],
  }));
}

// ---------------------------------------------------------------------------- scenarios

// One person: one click, the greeting, the device pickers, speech, chat, a second person
// from the invite link (at phone size), end, the end screen, start again.
async function conversation(r) {
  const page = await newPage(r, DESKTOP, true);
  await page.goto(cfg.urls.main);
  await ready('conversation', 'gemini-agent');
  r.startTitle = await text(page, '#start-title');
  await shot(page, 'start-1280');
  r.axeStart = await axe(page);
  Object.assign(r, await startCall(page, 'conversation', { name: 'Ada' }));
  const agent = await agentIdentityOf(page);
  r.greetingAudio = await measureAgentAudio(page, agent, timeout);
  r.agentTranscriptFirst = (await page.waitForSelector('#transcript li[data-speaker="agent"][data-final="true"]', { timeout }))
    ? (await transcript(page)).find((e) => e.speaker === 'agent')
    : null;

  // device pickers: list the fake devices, switch the microphone during the call
  await page.click('#devices');
  await page.waitForSelector('#devices-dialog[open]');
  r.devices = await page.evaluate(() =>
    Object.fromEntries(
      ['mic-device', 'camera-device', 'speaker-device'].map((id) => [id, [...document.getElementById(id).options].map((o) => o.textContent)]),
    ),
  );
  const micOptions = await page.$$eval('#mic-device option', (os) => os.map((o) => ({ value: o.value, label: o.textContent, selected: o.selected })));
  const other = micOptions.find((o) => !o.selected && o.value !== 'default') || micOptions.find((o) => !o.selected);
  r.micSwitchedTo = other?.label;
  if (other) {
    await page.selectOption('#mic-device', other.value);
    await page.waitForFunction((v) => document.getElementById('mic-device').value === v, other.value, { timeout });
  }
  await page.click('#devices-dialog button[type="submit"]');
  r.statusAfterSwitch = await page.getAttribute('#status', 'data-state');

  // the person speaks (the fake microphone, after its silence); both lines final
  await page.waitForSelector('#transcript li[data-speaker="user"][data-kind="speech"][data-final="true"]', { timeout });
  await page.waitForFunction(
    () => {
      const lis = [...document.querySelectorAll('#transcript li:not(.separator)')];
      const u = lis.findIndex((li) => li.dataset.speaker === 'user' && li.dataset.kind === 'speech');
      return u >= 0 && lis.slice(u + 1).some((li) => li.dataset.speaker === 'agent' && li.dataset.final === 'true');
    },
    null,
    { timeout },
  );
  r.chat = await chat(page, cfg.chat);
  r.inviteLink = await page.inputValue('#invite-link');

  // a second person joins from the invite link, on a phone-sized screen
  const phone = await newPage(r, PHONE, true);
  await phone.goto(r.inviteLink);
  r.guestStartTitle = await text(phone, '#start-title');
  r.guestButton = await text(phone, '#start-button');
  await startCall(phone, 'guest', { name: 'Grace', textOnly: true });
  r.guestRoom = await phone.getAttribute('#status', 'data-room');
  await phone.waitForFunction(() => document.querySelectorAll('#participants li').length >= 3, null, { timeout });
  await page.waitForFunction(() => document.querySelectorAll('#participants li').length >= 3, null, { timeout });
  r.guestSees = await participants(phone);
  r.hostSees = await participants(page);
  r.guestScreenHidden = await phone.isHidden('#screen');
  r.hostScreenVisible = await page.isVisible('#screen');
  await shot(phone, 'meeting-390-chat'); // text only: the chat sheet opens at once
  await phone.click('#chat-toggle');
  r.guestSheetClosed = (await phone.getAttribute('#side', 'data-open')) === 'false';
  await shot(phone, 'meeting-390');
  r.guestAudio = await phone.evaluate(() => [...document.querySelectorAll('#audio-sinks audio')].map((a) => ({ who: a.dataset.participant, silent: a.muted || a.volume === 0 })));

  r.transcript = await transcript(page);
  await shot(page, 'call-1280');
  r.axeCall = await axe(page);
  await page.click('#theme');
  r.themeAfterSwitch = await page.evaluate(() => document.documentElement.dataset.theme);
  await shot(page, 'call-1280-dark');
  r.axeCallDark = await axe(page);
  await page.click('#theme');
  r.copyEnabled = await page.isEnabled('#copy');
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download')]);
  r.downloadName = download.suggestedFilename();
  r.downloadText = readFileSync(await download.path(), 'utf8');

  await phone.click('#end');
  await phone.waitForSelector('#ended:not([hidden])', { timeout });
  await page.waitForFunction(() => document.querySelectorAll('#participants li').length === 2, null, { timeout });

  // end the call: the end screen, the transcript kept, start again
  await page.click('#end');
  await page.waitForSelector('#ended:not([hidden])', { timeout });
  r.endedTitle = await text(page, '#ended-title');
  r.endedReason = await text(page, '#ended-reason');
  r.transcriptAfterEnd = (await transcript(page)).length;
  r.controlsHiddenAfterEnd = await page.isHidden('#controls');
  await shot(page, 'ended-1280');
  r.axeEnded = await axe(page);
  await ready('restart', 'gemini-agent');
  await page.click('#restart');
  await page.waitForSelector('#status[data-state="connected"]', { timeout });
  r.restartRoom = await page.getAttribute('#status', 'data-room');
  r.transcriptAfterRestart = (await transcript(page)).length;
  r.separators = await page.$$eval('#transcript li.separator', (els) => els.map((e) => e.textContent));
  Object.assign(r, await pageState(page));
  r.guestState = await pageState(phone);
  await page.click('#end');
  await page.waitForSelector('#ended:not([hidden])', { timeout });
  await phone.context().close();
  await page.context().close();
}

// The loudest sample any audio track the page receives carries from now on (whether or
// not the page plays it): window.__sinkPeak = { peak, tracks }.
function watchSinks() {
  const ctx = new AudioContext();
  const seen = new Set();
  window.__sinkPeak = { peak: 0, tracks: 0 };
  const buf = new Float32Array(2048);
  const analysers = [];
  setInterval(() => {
    for (const el of document.querySelectorAll('#audio-sinks audio')) {
      const track = el.srcObject?.getAudioTracks?.()[0];
      if (!track || seen.has(track.id)) continue;
      seen.add(track.id);
      const an = ctx.createAnalyser();
      an.fftSize = buf.length;
      ctx.createMediaStreamSource(new MediaStream([track])).connect(an);
      analysers.push(an);
      window.__sinkPeak.tracks = seen.size;
    }
    ctx.resume();
    for (const an of analysers) {
      an.getFloatTimeDomainData(buf);
      for (const v of buf) window.__sinkPeak.peak = Math.max(window.__sinkPeak.peak, Math.abs(v));
    }
  }, 20);
}

// Chat only: no microphone asked for, typed messages answered.
async function textOnly(r) {
  // the narrowest phone the page is made for; no permission needed: nothing is asked
  const page = await newPage(r, { ...PHONE, viewport: { width: 360, height: 740 } }, false);
  await page.goto(cfg.urls.main);
  await ready('text-only', 'gemini-agent');
  Object.assign(r, await startCall(page, 'text-only', { textOnly: true }));
  await page.evaluate(watchSinks);
  await agentIdentityOf(page);
  // like a person, read the greeting before typing
  await page.waitForSelector('#transcript li[data-speaker="agent"][data-final="true"]', { timeout });
  r.micPublished = await page.evaluate(() => document.getElementById('mic').getAttribute('aria-pressed'));
  r.alerts = await alerts(page);
  r.chat = await chat(page, cfg.chat);
  // the agent's chat answer comes after its transcript line: folded into it, not shown twice
  await page.waitForSelector('#transcript li[data-speaker="agent"][data-chat="true"]', { timeout });
  r.transcript = await transcript(page);
  await page.waitForTimeout(1500); // a voice reply would play for longer than the text took
  r.agentAudio = await page.evaluate(() => window.__sinkPeak);
  await shot(page, 'text-only-360');
  Object.assign(r, await pageState(page));
  await page.click('#end');
  await page.waitForSelector('#ended:not([hidden])', { timeout });
  await page.context().close();
}

// Push-to-talk: the agent asks for it; the button frames the turn.
async function pushToTalk(r) {
  const page = await newPage(r, DESKTOP, true);
  await page.goto(cfg.urls.ptt);
  await ready('push-to-talk', 'ptt-agent');
  Object.assign(r, await startCall(page, 'push-to-talk'));
  await agentIdentityOf(page);
  await page.waitForSelector('#ptt:not([hidden])', { timeout });
  r.pttLabel = await text(page, '#ptt');
  // keyboard: hold space across the fake microphone's sentence, release after it
  await page.focus('#ptt');
  await page.keyboard.down('Space');
  r.pressedBySpace = await page.getAttribute('#ptt', 'aria-pressed');
  await page.waitForFunction(() => Number(document.getElementById('mic-level').value) > 0.4, null, { timeout });
  await page.waitForFunction(
    () => {
      const v = Number(document.getElementById('mic-level').value);
      const now = performance.now();
      if (v > 0.3) window.__lastLoud = now;
      return now - (window.__lastLoud || now) > 800;
    },
    null,
    { timeout, polling: 50 },
  );
  await page.keyboard.up('Space');
  await page.waitForSelector('#transcript li[data-speaker="user"][data-kind="speech"][data-final="true"]', { timeout });
  await page.waitForFunction(
    () => {
      const lis = [...document.querySelectorAll('#transcript li:not(.separator)')];
      const u = lis.findIndex((li) => li.dataset.speaker === 'user' && li.dataset.kind === 'speech');
      return u >= 0 && lis.slice(u + 1).some((li) => li.dataset.speaker === 'agent' && li.dataset.final === 'true');
    },
    null,
    { timeout },
  );
  r.transcript = await transcript(page);
  // mouse (touch works through the same pointer events): pressed while held
  await page.hover('#ptt');
  await page.mouse.down();
  r.pressedWhileHeld = await page.getAttribute('#ptt', 'aria-pressed');
  await page.mouse.up();
  r.pressedAfterRelease = await page.getAttribute('#ptt', 'aria-pressed');
  await shot(page, 'push-to-talk-1280');
  Object.assign(r, await pageState(page));
  await page.click('#end');
  await page.waitForSelector('#ended:not([hidden])', { timeout });
  await page.context().close();
}

// No worker for this page's agent, and the microphone refused: both explained; then the
// server drops the signal connection (the test does it on "joined") and the page reconnects.
async function noAgent(r) {
  const page = await newPage(r, PHONE, false);
  await page.goto(cfg.urls.absent);
  Object.assign(r, await startCall(page, 'no-agent'));
  await page.waitForSelector('#alerts [data-kind="mic"]', { timeout });
  await page.waitForSelector('#alerts [data-kind="agent-missing"]', { timeout });
  r.alerts = await alerts(page);
  r.agentState = await text(page, '#agent-state');
  r.micPressed = await page.getAttribute('#mic', 'aria-pressed');
  await shot(page, 'no-agent-390');
  await page.waitForFunction(() => window.__status.includes('reconnecting'), null, { timeout });
  r.reconnectingText = await text(page, '#status');
  await page.waitForFunction(() => window.__status.slice(window.__status.indexOf('reconnecting')).includes('connected'), null, { timeout });
  r.afterReconnect = await text(page, '#status');
  Object.assign(r, await pageState(page));
  await page.click('#end');
  await page.waitForSelector('#ended:not([hidden])', { timeout });
  r.endedReason = await text(page, '#ended-reason');
  await page.context().close();
}

// Direct to Gemini: the page fetches an ephemeral token and talks to the (offline) Live API
// itself; the fake microphone's sentence is answered, then a typed message. Every HTTP
// response and WebSocket frame the page receives is searched for the server's API key.
async function directToGemini(r) {
  // the offline server's certificate is self-signed; the real service's is not
  const page = await newPage(r, { ...DESKTOP, ignoreHTTPSErrors: true }, true);
  r.received = { responses: 0, frames: 0, withKey: [] };
  const scan = (where, body) => {
    if (body && String(body).includes(cfg.secret)) r.received.withKey.push(where);
  };
  page.on('response', async (resp) => {
    r.received.responses++;
    scan(`headers ${resp.url()}`, JSON.stringify(await resp.allHeaders().catch(() => ({}))));
    scan(resp.url(), await resp.text().catch(() => ''));
  });
  page.on('websocket', (ws) => {
    r.websocketUrl = ws.url().replace(/access_token=[^&]+/, 'access_token=…');
    ws.on('framereceived', (f) => {
      r.received.frames++;
      scan(`frame ${ws.url()}`, f.payload);
    });
  });
  await page.goto(cfg.urls.main);
  await page.click('.options summary');
  r.linkOptions = await page.$$eval('input[name="link"]', (els) => els.map((e) => ({ value: e.value, checked: e.checked, label: e.parentElement.textContent.trim() })));
  await page.check('#link-direct');
  await page.click('#start-button');
  await page.waitForSelector('#status[data-state="connected"]', { timeout });
  r.statusText = await text(page, '#status');
  r.replyAudio = await measureAgentAudio(page, 'gemini', timeout);
  await page.waitForFunction(
    () => {
      const lis = [...document.querySelectorAll('#transcript li:not(.separator)')];
      const u = lis.findIndex((li) => li.dataset.speaker === 'user' && li.dataset.kind === 'speech' && li.dataset.final === 'true');
      return u >= 0 && lis.slice(u + 1).some((li) => li.dataset.speaker === 'agent' && li.dataset.final === 'true');
    },
    null,
    { timeout },
  );
  r.chat = await chat(page, cfg.chat);
  r.transcript = await transcript(page);
  r.alerts = await alerts(page);
  await shot(page, 'direct-1280');
  Object.assign(r, await pageState(page));
  await page.click('#end');
  await page.waitForSelector('#ended:not([hidden])', { timeout });
  r.endedReason = await text(page, '#ended-reason');
  await page.context().close();
}

// Two people with microphones in one meeting: each tab shows the other's spoken words under
// the other's name (the agent publishes each person's transcript on their behalf). The fake
// microphone says its sentence 9 s after each tab starts it, so both are in by then.
async function meeting(r) {
  const host = await newPage(r, DESKTOP, true);
  await host.goto(cfg.urls.main);
  await ready('meeting', 'gemini-agent');
  Object.assign(r, await startCall(host, 'meeting', { name: 'Ada' }));
  r.agent = await agentIdentityOf(host);
  await host.waitForFunction(() => document.getElementById('invite-link').value, null, { timeout });
  const guest = await newPage(r, DESKTOP, true);
  await guest.goto(await host.inputValue('#invite-link'));
  r.guestIdentity = (await startCall(guest, 'meeting-guest', { name: 'Grace' })).identity;
  const spokeBy = (page, name) =>
    page.waitForFunction(
      (name) =>
        [...document.querySelectorAll('#transcript li[data-speaker="other"][data-kind="speech"][data-final="true"]')].some(
          (li) => li.querySelector('.who')?.textContent === name && li.querySelector('.text')?.textContent.trim(),
        ),
      name,
      { timeout },
    );
  await Promise.all([spokeBy(host, 'Grace'), spokeBy(guest, 'Ada')]);
  r.hostTranscript = await transcript(host);
  r.guestTranscript = await transcript(guest);
  await guest.context().close();
  await host.context().close();
}

const SCENARIOS = { conversation, meeting, 'text-only': textOnly, 'push-to-talk': pushToTalk, 'no-agent': noAgent, direct: directToGemini };

try {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
  for (const name of cfg.scenarios) {
    const r = { scenario: name, console: [], pageErrors: [], httpErrors: [] };
    const t0 = Date.now();
    try {
      await SCENARIOS[name](r);
      r.ok = true;
    } catch (e) {
      r.ok = false;
      r.error = String(e?.stack || e);
      for (const ctx of browser.contexts()) {
        for (const [i, p] of ctx.pages().entries()) {
          try {
            r[`failureTranscript${i}`] = await transcript(p);
            r[`failureAlerts${i}`] = await alerts(p);
            r[`failureState${i}`] = await pageState(p);
            r[`failureAudioSinks${i}`] = await p.$$eval('#audio-sinks audio', (els) => els.map((e) => e.dataset.participant));
            await shot(p, `${name}-failure-${i}`);
          } catch {
            /* the page is gone */
          }
        }
        await ctx.close().catch(() => {});
      }
    }
    r.wallMs = Date.now() - t0;
    emit({ event: 'scenario', ...r });
  }
} finally {
  emit({ event: 'done' });
  await browser?.close().catch(() => {});
  process.exit(0); // stdin (the test's answers) may still be open
}
