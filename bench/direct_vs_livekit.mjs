// Browser half of bench/direct_vs_livekit.py: two pages of the web client in one headless
// Chromium at the same time, one through LiveKit and one direct to Gemini, both hearing the
// same looping fake microphone. Inside each page, Web Audio analysers on the microphone
// (getUserMedia, tapped) and on the agent's <audio> element date the end of each utterance
// (last loud 10 ms window before 700 ms of quiet) and the onset of each reply (first loud
// window after 300 ms of quiet), on the page's performance.now() clock.
//   node bench/direct_vs_livekit.mjs '{"url", "wav", "seconds", "secret"}'   -> one JSON line
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(fileURLToPath(new URL('../tests/browser/package.json', import.meta.url)));
const { chromium } = require('playwright-core');
const cfg = JSON.parse(process.argv[2]);
const LOUD = 500 / 32768; // the benches' "sound": an int16 peak >= 500

function probe(loud) {
  const ctx = new AudioContext();
  window.__lat = { ends: [], onsets: [] };
  const tap = (track, onLoud, onQuiet) => {
    const an = ctx.createAnalyser();
    an.fftSize = 512;
    ctx.createMediaStreamSource(new MediaStream([track])).connect(an);
    const buf = new Float32Array(an.fftSize);
    const timer = setInterval(() => {
      if (track.readyState === 'ended') return clearInterval(timer);
      an.getFloatTimeDomainData(buf);
      let peak = 0;
      for (const v of buf) peak = Math.max(peak, Math.abs(v));
      (peak >= loud ? onLoud : onQuiet)(performance.now());
    }, 5);
  };
  const gum = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = async (c) => {
    const stream = await gum(c);
    const track = stream.getAudioTracks()[0];
    if (track) {
      let last = null; // last loud moment of the utterance in progress
      tap(track, (t) => (last = t), (t) => {
        if (last !== null && t - last > 700) {
          window.__lat.ends.push(last);
          last = null;
        }
      });
    }
    return stream;
  };
  let tapped = null;
  setInterval(() => {
    const el = document.querySelector('#audio-sinks audio');
    const track = el?.srcObject?.getAudioTracks?.()[0];
    if (!track || track === tapped) return;
    tapped = track;
    let quietSince = 0;
    let speaking = false;
    ctx.resume();
    tap(track, (t) => {
      if (!speaking) window.__lat.onsets.push(t);
      speaking = true;
      quietSince = t;
    }, (t) => {
      if (speaking && t - quietSince > 300) speaking = false;
    });
  }, 20);
}

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--disable-background-networking',
    '--disable-component-update', '--disable-sync', '--no-first-run', '--autoplay-policy=no-user-gesture-required',
    '--use-fake-device-for-media-stream', `--use-file-for-fake-audio-capture=${cfg.wav}`],
});
const out = {};
try {
  const run = async (link) => {
    const context = await browser.newContext({ permissions: ['microphone'], ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(String(e)));
    await page.addInitScript(probe, LOUD);
    await page.goto(cfg.url);
    await page.click('.options summary');
    await page.check(`input[name="link"][value="${link}"]`);
    await page.click('#start-button');
    await page.waitForSelector('#status[data-state="connected"]', { timeout: 60000 });
    await page.waitForTimeout(cfg.seconds * 1000);
    out[link] = { ...(await page.evaluate(() => window.__lat)), errors, alerts: await page.$$eval('#alerts .alert p', (els) => els.map((e) => e.textContent)) };
    await page.click('#end');
    await context.close();
  };
  await Promise.all([run('livekit'), run('direct')]);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + '\n');
