"""A headless SIP phone (pjsua2, the pjproject SIP stack) in its own process, driven by
JSON lines on stdin; what happens comes back as JSON lines on stdout.

    {"cmd": "dial", "uri": "sip:+15550100@127.0.0.1:5060", "play": "in.wav", "record": "out.wav"}
    {"cmd": "dtmf", "digits": "123#"}      {"cmd": "play", "wav": "q.wav"}
    {"cmd": "hangup"}      {"cmd": "quit"}
    {"cmd": "incoming", "mode": "answer"|"busy"|"ignore", "play": ..., "record": ...}
    {"cmd": "dial", ..., "line": true}     {"cmd": "say", "wav": "q.wav", "call": 0}
    {"cmd": "login", "user": "u", "password": "p"}  (digest credentials for 401/407 challenges)
    {"cmd": "stats"}  -> stats {call, rx, tx, lost, jitter_max_ms} per call up (pjsua's RTCP counters)

Events: ready {port}, state {call, state, code, reason}, dtmf {digit},
transfer {to}, incoming {from}; every event carries `t` (time.monotonic()). A call dialled
with "line" gets a Line: "say" queues a WAV (8 kHz mono) on it, "spoken" {call, t} is
the moment its last loud frame went to the call, "heard" {call, t} the first loud frame
the phone heard after at least 0.3 s of quiet (bench/phone_calls.py times replies with
them). pjsua2 allows 4 calls per process.
"""

from __future__ import annotations

import gc
import json
import sys
import threading
import time
import wave

import numpy as np
import pjsua2 as pj

_lock = threading.Lock()
LOUD = 500  # int16 peak that counts as sound (as in bench/)


def emit(**ev) -> None:
    ev["t"] = time.monotonic()
    with _lock:
        sys.stdout.write(json.dumps(ev) + "\n")
        sys.stdout.flush()


class Phone:
    def __init__(self, port: int = 0, media_port: int = 40000) -> None:
        self.ep = pj.Endpoint()
        self.ep.libCreate()
        cfg = pj.EpConfig()
        cfg.uaConfig.threadCnt = 1
        cfg.uaConfig.maxCalls = 4
        cfg.medConfig.clockRate = cfg.medConfig.sndClockRate = 8000
        cfg.medConfig.noVad = True
        cfg.medConfig.ecTailLen = 0
        cfg.medConfig.quality = 4
        cfg.logConfig.level = cfg.logConfig.consoleLevel = 1
        self.ep.libInit(cfg)
        tcfg = pj.TransportConfig()
        tcfg.boundAddress = tcfg.publicAddress = "127.0.0.1"
        tcfg.port = port
        tid = self.ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
        self.port = self.ep.transportGetInfo(tid).localName.split(":")[-1]
        self.ep.libStart()
        self.ep.audDevManager().setNullDev()
        for c in self.ep.codecEnum2():
            self.ep.codecSetPriority(c.codecId, 0)
        self.ep.codecSetPriority("PCMU/8000", 255)
        self.ep.codecSetPriority("PCMA/8000", 254)
        acfg = pj.AccountConfig()
        acfg.idUri = f"sip:+15550123@127.0.0.1:{self.port}"
        acfg.regConfig.registrarUri = ""
        acfg.natConfig.sipStunUse = acfg.natConfig.mediaStunUse = pj.PJSUA_STUN_USE_DISABLED
        acfg.natConfig.contactRewriteUse = acfg.natConfig.viaRewriteUse = acfg.natConfig.sdpNatRewriteUse = 0
        acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_DISABLED
        acfg.mediaConfig.srtpSecureSignaling = 0
        acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
        acfg.mediaConfig.transportConfig.publicAddress = "127.0.0.1"
        # RTP ports: media_port .. +999. Phones running side by side need ranges of their own:
        # two phones on one range were seen to get each other's RTP (bench/phone_calls.py)
        acfg.mediaConfig.transportConfig.port = media_port
        acfg.mediaConfig.transportConfig.portRange = 1000
        self.acfg = acfg
        self.acc = Account(self)
        self.acc.create(acfg)
        self.calls: dict[int, Call] = {}
        self.media: dict[int, list] = {}  # players / recorders kept alive per call
        self.incoming = {"mode": "answer", "play": None, "record": None}
        self.next_play: dict[int, tuple] = {}
        self.lines: dict[int, Line | None] = {}  # calls dialled with "line": their Line
        self.extra: list = []  # calls pjsua2 makes itself (a transfer's new leg)

    def wire(self, call: "Call", play: str | None, record: str | None) -> None:
        self.next_play[call.getId()] = (play, record)


class Line(pj.AudioMediaPort):
    """The phone's own mouth and ear on one call, in 20 ms frames on pjmedia's clock thread:
    what it says and when it heard something, with the time it happened."""

    FRAME = 160  # 20 ms at 8 kHz

    def __init__(self, call_id: int) -> None:
        super().__init__()
        self.call_id = call_id
        self.queue = np.zeros(0, np.int16)
        self.last_loud_at = -1  # samples left in the queue after its last loud one
        self.quiet_frames = 1000
        fmt = pj.MediaFormatAudio()
        fmt.type = pj.PJMEDIA_TYPE_AUDIO
        fmt.clockRate = 8000
        fmt.channelCount = 1
        fmt.bitsPerSample = 16
        fmt.frameTimeUsec = 20000
        self.createPort(f"line{call_id}", fmt)

    def say(self, pcm: np.ndarray) -> None:
        with _lock:
            loud = np.nonzero(np.abs(pcm.astype(np.int32)) >= LOUD)[0]
            self.queue = np.concatenate([self.queue, pcm.astype(np.int16)])
            self.last_loud_at = len(self.queue) - (loud[-1] + 1) if len(loud) else -1

    def onFrameRequested(self, frame) -> None:
        with _lock:
            chunk = self.queue[:self.FRAME]
            self.queue = self.queue[self.FRAME:]
            done = self.last_loud_at >= 0 and len(self.queue) <= self.last_loud_at
            if done:
                self.last_loud_at = -1
        if len(chunk) < self.FRAME:
            chunk = np.concatenate([chunk, np.zeros(self.FRAME - len(chunk), np.int16)])
        data = chunk.tobytes()
        frame.type = pj.PJMEDIA_FRAME_TYPE_AUDIO
        frame.buf = pj.ByteVector(data)
        frame.size = len(data)
        if done:
            emit(ev="spoken", call=self.call_id)

    def onFrameReceived(self, frame) -> None:
        if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or not frame.size:
            return
        pcm = np.frombuffer(bytes(frame.buf), dtype=np.int16)
        if len(pcm) and int(np.abs(pcm.astype(np.int32)).max()) >= LOUD:
            if self.quiet_frames >= 15:
                emit(ev="heard", call=self.call_id)
            self.quiet_frames = 0
        else:
            self.quiet_frames += 1


def read_wav(path: str) -> np.ndarray:
    with wave.open(path, "rb") as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)


class Account(pj.Account):
    def __init__(self, phone: Phone) -> None:
        super().__init__()
        self.phone = phone

    def onIncomingCall(self, prm) -> None:
        call = Call(self, self.phone, prm.callId)
        info = call.getInfo()
        emit(ev="incoming", call=info.id, **{"from": info.remoteUri, "to": info.localUri})
        self.phone.calls[info.id] = call
        mode = self.phone.incoming["mode"]
        op = pj.CallOpParam()
        if mode == "busy":
            op.statusCode = 486
            call.answer(op)
        elif mode == "ignore":
            op.statusCode = 180
            call.answer(op)
        else:
            self.phone.wire(call, self.phone.incoming["play"], self.phone.incoming["record"])
            op.statusCode = 200
            call.answer(op)


class Call(pj.Call):
    def __init__(self, acc: Account, phone: Phone, call_id: int = pj.PJSUA_INVALID_ID) -> None:
        super().__init__(acc, call_id)
        self.phone = phone

    def onCallState(self, prm) -> None:
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.phone.media.pop(info.id, None)  # recordings are complete files from here on
            self.phone.lines.pop(info.id, None)
        emit(ev="state", call=info.id, state=info.stateText, code=info.lastStatusCode, reason=info.lastReason,
             sip_call_id=info.callIdString)

    def onCallMediaState(self, prm) -> None:
        info = self.getInfo()
        for i, mi in enumerate(info.media):
            if mi.type == pj.PJMEDIA_TYPE_AUDIO and mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                am = self.getAudioMedia(i)
                play, record = self.phone.next_play.pop(info.id, (None, None))
                keep = self.phone.media.setdefault(info.id, [])
                if record:
                    rec = pj.AudioMediaRecorder()
                    rec.createRecorder(record)
                    am.startTransmit(rec)
                    keep.append(rec)
                if play:
                    player = pj.AudioMediaPlayer()
                    player.createPlayer(play, pj.PJMEDIA_FILE_NO_LOOP)
                    player.startTransmit(am)
                    keep.append(player)
                if info.id in self.phone.lines and self.phone.lines[info.id] is None:
                    line = self.phone.lines[info.id] = Line(info.id)
                    am.startTransmit(line)
                    line.startTransmit(am)
                    keep.append(line)
                emit(ev="media", call=info.id)

    def onDtmfDigit(self, prm) -> None:
        emit(ev="dtmf", call=self.getId(), digit=prm.digit)

    def onCallTransferRequest(self, prm) -> None:
        emit(ev="transfer", call=self.getId(), to=prm.dstUri)
        prm.statusCode = 202
        new = Call(self.phone.acc, self.phone)
        self.phone.extra.append(new)
        prm.newCall = new

    def onCallTransferStatus(self, prm) -> None:
        prm.cont = False


def main() -> None:
    phone = Phone(int(sys.argv[1]) if len(sys.argv) > 1 else 0, int(sys.argv[2]) if len(sys.argv) > 2 else 40000)
    emit(ev="ready", port=int(phone.port))
    current: Call | None = None
    try:
        for line in sys.stdin:
            cmd = json.loads(line)
            name = cmd["cmd"]
            if name == "dial":
                current = Call(phone.acc, phone)
                op = pj.CallOpParam(True)
                current.makeCall(cmd["uri"], op)
                phone.calls[current.getId()] = current
                phone.wire(current, cmd.get("play"), cmd.get("record"))
                if cmd.get("line"):
                    phone.lines[current.getId()] = None
                emit(ev="dialing", call=current.getId())
            elif name == "login":  # answers the next challenges (pjsua2 retries the INVITE itself)
                phone.acfg.sipConfig.authCreds.clear()
                if cmd["user"]:  # an empty user: no credentials any more
                    phone.acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", cmd["user"], 0, cmd["password"]))
                phone.acc.modify(phone.acfg)
            elif name == "dtmf":
                call = phone.calls.get(cmd.get("call", current.getId() if current else -1))
                call.dialDtmf(cmd["digits"])
            elif name == "play":  # into the current call (or "call"), from now on
                call = phone.calls[cmd.get("call", current.getId() if current else -1)]
                player = pj.AudioMediaPlayer()
                player.createPlayer(cmd["wav"], pj.PJMEDIA_FILE_NO_LOOP)
                player.startTransmit(call.getAudioMedia(-1))
                phone.media.setdefault(call.getId(), []).append(player)
            elif name == "say":  # on a call's Line
                line = phone.lines.get(cmd.get("call", current.getId() if current else -1))
                if line is None:
                    emit(ev="error", error="say: that call has no line (dial with \"line\": true)")
                else:
                    line.say(read_wav(cmd["wav"]))
            elif name == "hangup":
                for c in list(phone.calls.values()):
                    if c.isActive():
                        c.hangup(pj.CallOpParam(True))
            elif name == "status":
                active = 0
                for c in list(phone.calls.values()) + phone.extra:
                    try:
                        active += bool(c.isActive())
                    except Exception:  # a call pjsua already freed
                        pass
                emit(ev="status", active=active)
            elif name == "stats":  # RTP as this phone saw it, per call up
                for cid, c in list(phone.calls.items()):
                    try:
                        if not c.isActive():
                            continue
                        rtcp = c.getStreamStat(0).rtcp
                    except Exception:  # no media (yet), or a call pjsua already freed
                        continue
                    emit(ev="stats", call=cid, rx=rtcp.rxStat.pkt, tx=rtcp.txStat.pkt, lost=rtcp.rxStat.loss,
                         jitter_max_ms=rtcp.rxStat.jitterUsec.max / 1000)
            elif name == "incoming":
                phone.incoming = {"mode": cmd["mode"], "play": cmd.get("play"), "record": cmd.get("record")}
            elif name == "quit":
                break
    finally:
        phone.ep.hangupAllCalls()
        import time
        time.sleep(0.3)
        phone.media.clear()
        phone.lines.clear()
        phone.calls.clear()
        phone.extra.clear()
        current = None
        del current
        gc.collect()
        phone.acc.shutdown()
        phone.ep.libDestroy()
        emit(ev="bye")


if __name__ == "__main__":
    main()
