// Drives the web client in Debian's headless Chromium (playwright-core; no browser download)
// the way a user would, and reports what the page showed as JSON lines on stdout:
//   {"event": "joined", ...}   once the page says it is connected
//   {"event": "result", ...}   at the end (also on failure, with "error")
//
//   node drive_page.mjs '<json config>'
// config: { scenario: "conversation" | "mic-refused" | "drop" | "server-gone",
//           pageUrl, room, name, wav, chat, artifactsDir, timeoutMs }
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join as pathJoin } from 'node:path';

const cfg = JSON.parse(process.argv[2]);
const timeout = cfg.timeoutMs ?? 30000;
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + '\n');
mkdirSync(cfg.artifactsDir, { recursive: true });

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
  '--use-fake-device-for-media-stream',
  `--use-file-for-fake-audio-capture=${cfg.wav}`,
];
if (cfg.scenario !== 'mic-refused') {
  // Grant media without a prompt; share this tab when asked for a screen.
  args.push('--use-fake-ui-for-media-stream', '--auto-accept-this-tab-capture', '--auto-select-desktop-capture-source=Voice agent');
}

const result = { scenario: cfg.scenario, console: [], pageErrors: [], cspViolations: [] };
let browser;
let page;

async function text(sel) {
  return (await page.locator(sel).first().textContent({ timeout: 1000 }).catch(() => null))?.trim() ?? null;
}

async function transcript() {
  return page.$$eval('#transcript li', (lis) =>
    lis.map((li) => ({
      speaker: li.dataset.speaker,
      kind: li.dataset.kind,
      final: li.dataset.final === 'true',
      text: li.querySelector('.text')?.textContent ?? '',
    })),
  );
}

async function join() {
  await page.goto(cfg.pageUrl);
  // Record every agent state the page shows, from before joining.
  await page.evaluate(() => {
    window.__states = [];
    const el = document.getElementById('agent-state');
    new MutationObserver(() => {
      const s = el.dataset.state;
      if (window.__states[window.__states.length - 1] !== s) window.__states.push(s);
    }).observe(el, { attributes: true, attributeFilter: ['data-state'] });
  });
  // And the highest level the microphone meter shows while in the call.
  await page.evaluate(() => {
    window.__micMax = 0;
    setInterval(() => {
      window.__micMax = Math.max(window.__micMax, Number(document.getElementById('mic-level').value));
    }, 50);
  });
  await page.fill('#room', cfg.room);
  if (cfg.name) await page.fill('#name', cfg.name);
  const t0 = Date.now();
  await page.click('#join');
  await page.waitForSelector('#connection[data-state="connected"]', { timeout });
  result.joinWallMs = Date.now() - t0;
  result.connectMs = Number(await page.getAttribute('#connection', 'data-connect-ms'));
  result.connectionText = await text('#connection');
  emit({ event: 'joined', connectMs: result.connectMs });
}

// Measure the agent's audio as played in the page: a Web Audio analyser on the stream of
// the agent's <audio> element. Returns the loudest moment's level and dominant frequency.
async function measureAgentAudio(ms) {
  return page.evaluate(async (ms) => {
    const deadline = performance.now() + ms;
    let el = null;
    while (!el && performance.now() < deadline) {
      el = [...document.querySelectorAll('#audio-sinks audio')].find((a) => a.srcObject);
      if (!el) await new Promise((r) => setTimeout(r, 50));
    }
    if (!el) return { found: false };
    const ctx = new AudioContext();
    await ctx.resume();
    const src = ctx.createMediaStreamSource(el.srcObject);
    const an = ctx.createAnalyser();
    an.fftSize = 8192;
    an.smoothingTimeConstant = 0;
    src.connect(an);
    const td = new Float32Array(an.fftSize);
    const fd = new Float32Array(an.frequencyBinCount);
    let best = { rms: 0 };
    let loudFrames = 0;
    let frames = 0;
    let meterMax = 0;
    while (performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
      an.getFloatTimeDomainData(td);
      let sum = 0;
      for (const v of td) sum += v * v;
      const rms = Math.sqrt(sum / td.length);
      frames++;
      meterMax = Math.max(meterMax, Number(document.getElementById('agent-level').value));
      if (rms > 0.01) loudFrames++;
      if (rms > best.rms) {
        an.getFloatFrequencyData(fd);
        let k = 1;
        for (let i = 2; i < fd.length - 1; i++) if (fd[i] > fd[k]) k = i;
        // parabolic interpolation between neighbouring bins
        const [a, b, c] = [fd[k - 1], fd[k], fd[k + 1]];
        const p = (a - c) / (2 * (a - 2 * b + c)) || 0;
        best = { rms, dominantHz: ((k + p) * ctx.sampleRate) / an.fftSize };
      }
      if (loudFrames >= 20 && frames >= 30) break; // a second of sound is enough
    }
    await ctx.close();
    return {
      found: true,
      peakRms: best.rms,
      peakDbfs: best.rms > 0 ? 20 * Math.log10(best.rms) : -Infinity,
      dominantHz: best.dominantHz ?? null,
      loudFrames,
      frames,
      agentMeterMax: meterMax,
    };
  }, ms);
}

async function chat(message) {
  const before = (await transcript()).length;
  const t0 = Date.now();
  await page.fill('#chat-input', message);
  await page.press('#chat-input', 'Enter');
  // The answer: a final agent entry after the typed message.
  await page.waitForFunction(
    (before) => {
      const lis = [...document.querySelectorAll('#transcript li')].slice(before);
      const typed = lis.findIndex((li) => li.dataset.kind === 'chat');
      return typed >= 0 && lis.slice(typed + 1).some((li) => li.dataset.speaker === 'agent' && li.dataset.final === 'true');
    },
    before,
    { timeout },
  );
  result.chatReplyMs = Date.now() - t0;
  const after = (await transcript()).slice(before);
  const typed = after.findIndex((e) => e.kind === 'chat');
  result.chatSent = after[typed]?.text;
  result.chatReply = after.slice(typed + 1).find((e) => e.speaker === 'agent' && e.final)?.text;
}

async function conversation() {
  await join();
  const connectedAt = Date.now();
  await page.waitForFunction(() => document.getElementById('agent-state').dataset.state !== 'absent', null, { timeout });
  result.agentSeenAfterConnectMs = Date.now() - connectedAt;
  result.agentStateText = await text('#agent-state');
  result.audio = await measureAgentAudio(timeout);
  // Both sides in the transcript: the agent's words and the user's transcribed speech.
  await page.waitForSelector('#transcript li[data-speaker="agent"][data-final="true"]', { timeout });
  await page.waitForSelector('#transcript li[data-speaker="user"][data-kind="speech"][data-final="true"]', { timeout });
  result.micMeterMax = await page.evaluate(() => window.__micMax);
  await chat(cfg.chat);
  result.micButton = await text('#mic');
  result.transcript = await transcript();
  result.states = await page.evaluate(() => window.__states);
  await page.screenshot({ path: pathJoin(cfg.artifactsDir, 'conversation.png'), fullPage: true });
  result.screenshot = pathJoin(cfg.artifactsDir, 'conversation.png');
  await page.click('#leave');
  await page.waitForSelector('#connection[data-state="disconnected"]', { timeout });
  result.afterLeaveText = await text('#connection');
  result.alertAfterLeave = (await page.isVisible('#alert')) ? await text('#alert') : null;
}

async function micRefused() {
  await join();
  await page.waitForSelector('#alert:not([hidden])', { timeout });
  result.alert = await text('#alert');
  result.micButton = await text('#mic');
  result.micPressed = await page.getAttribute('#mic', 'aria-pressed');
  result.connectionState = await page.getAttribute('#connection', 'data-state');
  // Like a user, let the agent finish its greeting, then type.
  await page.waitForSelector('#transcript li[data-speaker="agent"][data-final="true"]', { timeout });
  await chat(cfg.chat);
  result.transcript = await transcript();
  await page.screenshot({ path: pathJoin(cfg.artifactsDir, 'mic-refused.png'), fullPage: true });
}

async function drop() {
  await join();
  // The test now ends the connection from the server side.
  await page.waitForSelector('#alert:not([hidden])', { timeout });
  result.alert = await text('#alert');
  await page.waitForSelector('#connection[data-state="disconnected"]', { timeout });
  result.connectionText = await text('#connection');
  result.joinVisible = await page.isVisible('#join');
  await page.screenshot({ path: pathJoin(cfg.artifactsDir, 'drop.png'), fullPage: true });
}

async function toggles() {
  await join();
  const shown = async () => ({
    camera: await text('#camera'),
    screen: await text('#screen'),
    videos: await page.$$eval('#videos figcaption', (els) => els.map((e) => e.textContent)),
  });
  await page.click('#camera');
  await page.waitForSelector('#camera[aria-pressed="true"]', { timeout });
  await page.waitForSelector('#videos figure video', { timeout });
  // The preview plays real frames from the (fake) camera.
  await page.waitForFunction(() => [...document.querySelectorAll('#videos video')].some((v) => v.videoWidth > 0 && v.currentTime > 0), null, { timeout });
  result.cameraOn = await shown();
  await page.click('#screen');
  await page.waitForFunction(
    () => document.getElementById('screen').getAttribute('aria-pressed') === 'true' || !document.getElementById('alert').hidden,
    null,
    { timeout },
  );
  result.screenOn = await shown();
  result.screenAlert = (await page.isVisible('#alert')) ? await text('#alert') : null;
  await page.screenshot({ path: pathJoin(cfg.artifactsDir, 'toggles.png'), fullPage: true });
  await page.click('#camera');
  await page.waitForSelector('#camera[aria-pressed="false"]', { timeout });
  if (result.screenOn.screen.endsWith('on')) {
    await page.click('#screen');
    await page.waitForSelector('#screen[aria-pressed="false"]', { timeout });
  }
  await page.click('#mic');
  await page.waitForSelector('#mic[aria-pressed="false"]', { timeout });
  result.allOff = { ...(await shown()), mic: await text('#mic') };
}

async function serverGone() {
  await join();
  // The test now stops the LiveKit server; the page must say the connection is gone.
  const t0 = Date.now();
  await page.waitForSelector('#alert:not([hidden])', { timeout: cfg.giveUpTimeoutMs ?? 120000 });
  result.alertAfterMs = Date.now() - t0;
  result.alert = await text('#alert');
  await page.waitForSelector('#connection[data-state="disconnected"]', { timeout });
  result.connectionText = await text('#connection');
  result.joinVisible = await page.isVisible('#join');
  await page.screenshot({ path: pathJoin(cfg.artifactsDir, 'server-gone.png'), fullPage: true });
}

try {
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true, args });
  const context = await browser.newContext({ viewport: { width: 1000, height: 900 } });
  if (cfg.scenario === 'mic-refused') await context.clearPermissions();
  page = await context.newPage();
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') result.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => result.pageErrors.push(String(e)));
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window.__csp ||= []).push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const run = { conversation, 'mic-refused': micRefused, drop, 'server-gone': serverGone, toggles }[cfg.scenario];
  await run();
  result.cspViolations = await page.evaluate(() => window.__csp || []);
  result.ok = true;
} catch (e) {
  result.ok = false;
  result.error = String(e?.stack || e);
  try {
    result.transcript = await transcript();
    result.connectionText = await text('#connection');
    result.alert = (await page.isVisible('#alert')) ? await text('#alert') : null;
    result.states = await page.evaluate(() => window.__states);
    await page.screenshot({ path: pathJoin(cfg.artifactsDir, `${cfg.scenario}-failure.png`), fullPage: true });
  } catch {
    /* the page is gone */
  }
} finally {
  emit({ event: 'result', ...result });
  await browser?.close().catch(() => {});
}
