"""Issue 12: the web client's two modes side by side, in one run: end of the person's
speech → first reply audio in the browser, through LiveKit (page → LiveKit → agent worker
→ Gemini and back) and direct to Gemini (the page's own Live API session with an
ephemeral token).

One headless Chromium runs two pages at the same time (bench/direct_vs_livekit.mjs), both
fed the same looping fake microphone (a sentence every ~9 s), so both see the same
machine load; each page dates the end of every utterance on its microphone and the onset
of the agent's reply on the agent's <audio> element (Web Audio analysers, 5 ms polling,
sound = int16 peak >= 500). The offline model answers every turn with a 1 s tone after
its activity detection's 500 ms of silence, the same model time in both modes.

    python bench/direct_vs_livekit.py [--seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys


from _harness import ROOT, bench_stack, pct, ratio, summary, tone

SENTENCE = "Could you tell me the weather for tomorrow?"
MAX_REPLY_S = 5.0  # a reply later than this belongs to no utterance (or was lost)


def wav(path) -> str:
    raw = path.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), SENTENCE], check=True, capture_output=True)
    subprocess.run(["sox", str(raw), "-r", "48000", "-b", "16", "-c", "1", "-e", "signed-integer", str(path),
                    "pad", "2", "5"], check=True, capture_output=True)
    return str(path)


def latencies(lat: dict) -> list[float]:
    """Each utterance's end → the first reply onset after it (seconds)."""
    onsets = sorted(lat["onsets"])
    out = []
    for end in lat["ends"]:
        later = [o for o in onsets if o > end]
        if later and later[0] - end < MAX_REPLY_S * 1000:
            out.append((later[0] - end) / 1000)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60, help="how long both pages talk (a turn every ~9 s)")
    args = ap.parse_args()

    from agents.settings import AgentIdentitySettings, DirectSettings, Settings, WebSettings
    from agents.web import LiveKitCredentials, WebServer

    async with bench_stack("direct-vs-livekit") as b:
        gemini, lk = b.stack.gemini, b.stack.livekit
        gemini.script.default_reply_audio = tone(440, 1.0)
        await b.start_worker("browser", {}, trace=False)
        os.environ.update(gemini.client_env())  # the web server mints tokens with this key
        settings = Settings(agent=AgentIdentitySettings(name="bench-browser"),
                            web=WebSettings(host="127.0.0.1", port=0), direct=DirectSettings(enabled=True))
        async with WebServer(settings, LiveKitCredentials(lk.url, lk.api_key, lk.api_secret)) as web:
            cfg = {"url": web.url, "wav": wav(b.workdir / "speech.wav"), "seconds": args.seconds}
            proc = await asyncio.create_subprocess_exec(
                "node", str(ROOT / "bench" / "direct_vs_livekit.mjs"), json.dumps(cfg),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            stdout, stderr = await proc.communicate()
    if proc.returncode != 0 or not stdout.strip():
        sys.exit(f"the browser driver failed (exit {proc.returncode}):\n{stderr.decode()[-3000:]}")
    pages = json.loads(stdout.decode().strip().splitlines()[-1])
    res = {mode: latencies(pages[mode]) for mode in ("livekit", "direct")}

    print("\nEnd of speech -> first reply audio in the browser (both pages at once)")
    for mode, label in (("livekit", "LiveKit mode (room, agent worker)"), ("direct", "direct to Gemini")):
        p = pages[mode]
        print(f"{label:36s} {summary(res[mode])}   utterances {len(p['ends'])}, replies {len(p['onsets'])}")
        for problem in p["errors"] + p["alerts"]:
            print(f"    page: {problem}")
    print(f"ratio LiveKit / direct: p50 {ratio(pct(res['livekit'], 50), pct(res['direct'], 50))}  "
          f"p95 {ratio(pct(res['livekit'], 95), pct(res['direct'], 95))}")
    print(f"difference (LiveKit - direct) p50: {1000 * (pct(res['livekit'], 50) - pct(res['direct'], 50)):.0f} ms; "
          f"the model's own wait for 500 ms of silence is in both")
    if min(len(v) for v in res.values()) < 5:
        print("warning: fewer than 5 measured turns in a mode; run longer (--seconds) for a p95 worth reading")


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    asyncio.run(main())
