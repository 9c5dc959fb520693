#!/usr/bin/env python3
"""Benchmark 2: how far Tutti scales on this machine.

  1. callers: one 1280x720 30 fps composition (RTMP to a local nginx + HLS, as
     benchmark 1), N = 2, 4, ... 16 callers replaying the cached 720p files with
     light senders (ffmpeg -re -c copy -f rtp): CPU per N, the largest N in
     real time, the least-squares slope of CPU per added caller.
  2. compositions: k = 1, 2, ... concurrent 4-caller compositions, at 1280x720
     and at 640x360 (callers and canvas), until real time breaks.
  3. audio-only: one composition {"audio_only": true}, N Opus callers sent by
     ONE thread of this script from a pre-encoded Ogg Opus file (20 ms packets,
     paced in real time), each receiving its own mix-minus; N grows until Tutti
     needs more than 70 % of the machine or a caller's stream suffers.
     Part 4 (`--parts 4`, not in the default) does the same with synthetic
     speech (espeak-ng) in every caller's stream; part 5 (`--parts 5`, not in
     the default) with a room that mostly listens: 4 callers send part 3's
     tone and noise, the others a quiet room (pink noise at -70 dBFS); part 6
     (`--parts 6`, not in the default) with the listeners muted, each using
     Opus DTX if Tutti's answer asks for it (`usedtx=1`), as a browser does.
  Memory: peak RSS (VmHWM) of tutti after every step: per caller and per
     composition (least-squares slopes).

Real time, for a composition, over a measurement window: the composite reaches
nginx at >= 29.5 fps (stream-copy ffmpeg player), every caller's return H.264
carries >= 29.5 frames/s (RTP marker bits on the drained port), that return
stream does not fall behind the wall clock (least transit delay at the end of
the window minus at its start <= 100 ms), the RTMP output dropped no GOP, and
Tutti lost <= 0.1 % of the RTP packets the senders sent.

    python3 bench/scale.py [--passes 3] [--seconds 10] [--warmup 5] [--parts 1,2,3]
                           [--smoke] [--tutti PATH] [--build] [--keep]

Only the standard library. Every child runs in its own process group, dies
with this script (PR_SET_PDEATHSIG via setpriv) and is stopped on exit, error
or signal. Everything listens and sends on 127.0.0.1 only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import resource
import shlex
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

from benchlib import (CACHE, CALLERS, CLK_TCK, FPS, PT_OPUS, REPO, RESULTS, BenchError, Drain, Nginx, Proc, Watcher, Workload,
                      cpu_ticks, ensure_cache, find_tutti, free_tcp_port, free_udp_range, git_state, http, log,
                      machine_jiffies, offer_sdp, parse_answer, run_bench, run_checked, run_header,
                      sender_argv, serve_argv, thread_group, thread_ticks, write_section)

OUT_VIDEO_KBPS = 2500
AUDIO_CALLERS_TARGET = 200    # Opus callers within MACHINE_SHARE of the machine (issue 11)
FPS_OK = 29.5                 # composite frames/s, at nginx and on every caller's return stream
DELAY_GROWTH_OK = 0.100       # s: the return stream may not fall further behind the clock than this
LOSS_OK = 0.001               # share of the senders' RTP packets Tutti may lose
MACHINE_SHARE = 0.70          # audio-only: Tutti's CPU budget, share of the machine
SENDER_LATE_MS = 40           # audio-only: the sending thread may be this late (tutti's default jitter buffer)
SENDER_RT_PRIORITY = 10       # audio-only: the sending thread's SCHED_FIFO priority (1-99)
AUDIO_RECEIVE_OK = 0.95       # audio-only: every caller receives >= 95 % of 50 packets/s
CALLER_STEPS = list(range(2, 17, 2))
COMP_MAX = {(1280, 720): 4, (640, 360): 10}
AUDIO_STEPS = [10, 25, 50, 100, 125, 150, 175, 200, 250, 300, 400, 500, 600, 800, 1000]
AUDIO_KEYS = {"tone": "audio", "speech": "audio_speech", "listening": "audio_listening", "muted": "audio_muted"}
FINE_STEPS = [10, 25, 50, 75, 100, 125, 150, 175, 200]   # parts 4 and 5
MUTED_STEPS = [50, 100, 150, 200, 250, 300, 400]          # part 6
OPUS_FILE = CACHE / "speech-like-mono-24k-20ms-60s-v1.opus"
SPEECH_FILE = CACHE / "speech-espeak-mono-24k-20ms-60s-v1.opus"
QUIET_FILE = CACHE / "quiet-room-mono-24k-20ms-60s-v1.opus"
# Part 6: a muted microphone (digital silence) through libopus as a browser
# runs it, without DTX and with it (then the frames of two bytes or less are
# DTX, which a sender leaves out: a packet every 400 ms remains).
MUTED_FILE = CACHE / "muted-mono-24k-20ms-60s-v1.opus"
MUTED_DTX_FILE = CACHE / "muted-dtx-mono-24k-20ms-60s-v1.opus"
DTX_FRAME_MAX_BYTES = 2
TALKERS = 4                   # part 5: the callers that talk; the others listen
FIRST_TALKER = 2              # callers 0-1 (listeners) and 2-3 (talkers) are the timed ones
# What the speech file says, in two voices, over and over: Opus codes speech
# (SILK and hybrid frames) at a cost quite unlike the tone and noise above.
SPEECH_LINES = [
    ("en-us", "The quick brown fox jumps over the lazy dog. Conference calls need clear speech, even when many "
              "people join from rooms, phones and browsers. Please state your name after the tone."),
    ("en-gb", "Good morning everyone. Let us review the agenda for today: first the budget, then the schedule "
              "for next quarter, and finally any other business."),
]
OPUS_SECONDS = 60
STARTUP_TIMEOUT = 30.0        # first composite frame at nginx
STALL_TIMEOUT = 15.0          # a new composition's slate at nginx
SMOKE_DEADLINE = 95.0
RESULTS_JSON = CACHE / "scale-results.json"   # each part's last full-run figures (the section is built from all)
NCPU = os.cpu_count() or 1


def quote(argv: list[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def fit(xs: list[float], ys: list[float]) -> tuple[float, float] | None:
    """Least squares y = a + b x: (b, a), or None with fewer than 2 distinct x."""
    if len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return b, my - b * mx


def status_kib(pid: int) -> dict[str, int]:
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    except OSError:
        pass
    return out


def thread_kind(group: str) -> str:
    """Coarse kind of a (folded) thread name, for 'what limits it'."""
    for prefix, kind in (("caller-", "caller-{id} (a caller's sockets and mix-minus encode)"),
                         ("rtpjitterbuffer", "rtpjitterbuffer (a caller's depayload and decode)"),
                         ("comp-", "comp-{id} (compositor, mixers, broadcast)"),
                         ("enc-h264", "enc-h264-{id} (return H.264 encode)"),
                         ("enc-opus", "enc-opus-{id} (mix-minus Opus encode)"),
                         ("enc-", "enc-* (other return encodes)"),
                         ("amix", "amix* (audio mixers)"),
                         ("mix", "mix* (mixers)"),
                         ("tokio", "tokio (API, RTMP)")):
        if group.startswith(prefix):
            return kind
    return "other (" + group + ")" if group else "other"


# --------------------------------------------------------------------------- tutti

class Tutti:
    """One `tutti serve` on free loopback ports, sized for `callers` callers."""

    def __init__(self, bench: "Bench", tag: str, callers: int, binary: Path | None = None):
        self.dir = bench.workdir / tag
        self.dir.mkdir()
        http_port = free_tcp_port()
        first, last = free_udp_range(4 * callers + 16)
        self.base = f"http://127.0.0.1:{http_port}"
        self.argv = serve_argv(binary or bench.tutti, http_port, (first, last), self.dir)
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = Proc(f"tutti-{tag}", self.argv, self.dir / "tutti.log", env=env, cwd=REPO)
        deadline = time.monotonic() + 30
        while True:
            if not self.proc.alive():
                raise BenchError(f"tutti exited during start-up\n{self.proc.tail()}")
            try:
                if http("GET", self.base + "/healthz")[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"tutti did not answer /healthz\n{self.proc.tail()}")
            time.sleep(0.1)
        self.pid = self.proc.pid
        self.idle = status_kib(self.pid)

    def post(self, path: str, body: dict) -> tuple[int, dict | str]:
        try:
            status, text = http("POST", self.base + path, json.dumps(body).encode())
        except (urllib.error.URLError, OSError) as e:   # TimeoutError is an OSError
            raise TuttiHung(f"POST {path}: {e!r} (tutti alive: {self.proc.alive()})") from e
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def create(self, body: dict) -> str:
        status, reply = self.post("/v1/compositions", body)
        if status != 201:
            raise BenchError(f"POST /v1/compositions {json.dumps(body)}: {status} {reply}\n{self.proc.tail()}")
        return reply["id"]

    def join(self, cid: str, name: str, offer: str) -> dict:
        status, reply = self.post(f"/v1/compositions/{cid}/participants", {"name": name, "sdp": offer})
        if status != 201:
            raise BenchError(f"joining {name}: {status} {reply}\n{self.proc.tail()}")
        return reply

    def delete(self, cid: str) -> None:
        try:
            http("DELETE", f"{self.base}/v1/compositions/{cid}")
        except (urllib.error.URLError, OSError) as e:
            raise TuttiHung(f"DELETE /v1/compositions/{cid}: {e!r}") from e

    def stats(self, cid: str) -> dict:
        try:
            status, body = http("GET", f"{self.base}/v1/compositions/{cid}")
            return json.loads(body) if status == 200 else {}
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    def stop(self) -> None:
        self.proc.stop()


def api_rtp(stats0: dict, stats1: dict) -> tuple[int, int, list[float]]:
    """RTP packets received and lost by Tutti between two GETs, and the jitter (ms) per medium."""
    received = lost = 0
    jitter = []
    before = {p["id"]: p for p in stats0.get("participants", [])}
    for p1 in stats1.get("participants", []):
        p0 = before.get(p1["id"])
        for kind in ("audio", "video"):
            m1 = p1.get(kind)
            if not m1:
                continue
            m0 = (p0 or {}).get(kind) or {"packets_received": 0, "packets_lost": 0}
            if m1["packets_received"] < m0["packets_received"]:
                continue   # the counter went backwards (seen with this tutti): no figure for this window
            received += m1["packets_received"] - m0["packets_received"]
            lost += max(0, m1["packets_lost"] - m0["packets_lost"])
            if m1.get("jitter_ms") is not None:
                jitter.append(float(m1["jitter_ms"]))
    return received, lost, jitter


def rtmp_gops(stats: dict) -> int:
    return sum(o.get("dropped_gops") or 0 for o in stats.get("outputs", []) if o.get("kind") == "rtmp")


# --------------------------------------------------------------------------- a video composition

class VideoComp:
    """A composition with outputs RTMP (to nginx) + HLS, its callers (drained
    ports, a light sender each) and an fps watcher at nginx."""

    def __init__(self, bench: "Bench", tutti: Tutti, tag: str, width: int, height: int, files: list[Path]):
        self.bench, self.tutti, self.tag, self.files = bench, tutti, tag, files
        self.body = {"name": tag, "video": {"width": width, "height": height, "fps": FPS,
                                            "bitrate_kbps": OUT_VIDEO_KBPS},
                     "outputs": [{"kind": "rtmp", "url": bench.nginx.url(tag)}, {"kind": "hls"}]}
        self.cid = tutti.create(self.body)
        self.drain = Drain()
        self.drain.start()
        self.callers: list[dict] = []   # {audio, video, sender}
        self.watcher = Watcher(bench.nginx.url(tag), bench.workdir, tag)

    def add_caller(self) -> None:
        i = len(self.callers)
        audio, video = self.drain.pair(), self.drain.pair(timing=True)
        name = f"{self.tag}-caller{i}"
        offer = offer_sdp(name, audio, video, int(time.time()) * 100 + i)
        reply = self.tutti.join(self.cid, name, offer)
        answer = parse_answer(reply["sdp"])
        if "audio" not in answer or "video" not in answer:
            raise BenchError(f"{name}: an m= line was rejected:\n{reply['sdp']}")
        argv = sender_argv(self.files[i % len(self.files)], answer)
        sender = Proc(f"sender-{name}", argv, self.tutti.dir / f"sender-{name}.log", stop_signal=signal.SIGINT)
        self.callers.append({"audio": audio[0], "video": video[0], "sender": sender, "offer": offer,
                             "answer": reply["sdp"], "argv": argv})

    def wait_first_frame(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while self.watcher.frames() == 0:
            self.bench.check_alive(self.tutti, [self])
            if time.monotonic() > deadline:
                b, p, m = self.drain.counts()
                raise NoFirstFrame(f"{self.tag}: no composite frame at nginx within {timeout:.0f} s\n"
                                 f"{self.tutti.proc.tail()}\n  watcher:\n{self.watcher.proc.tail(8)}\n"
                                 f"  drained packets per port: {p}\n"
                                 f"  GET /v1/compositions/{self.cid}: {json.dumps(self.tutti.stats(self.cid))}")
            self.watcher.poll()
            time.sleep(0.2)

    def procs(self) -> list[Proc]:
        return [c["sender"] for c in self.callers]

    def begin(self) -> None:
        self.w0 = time.monotonic()
        self.counts0 = self.drain.counts()
        self.stats0 = self.tutti.stats(self.cid)

    def end(self, t0: float, t1: float) -> dict:
        dt = time.monotonic() - self.w0
        b1, p1, m1 = self.drain.counts()
        b0, p0, m0 = self.counts0
        stats1 = self.tutti.stats(self.cid)
        wa, fa = self.watcher.frames_at(t0)
        wb, fb = self.watcher.frames_at(t1)
        received, lost, jitter = api_rtp(self.stats0, stats1)
        growth = [self.drain.delay_growth(c["video"], t0, t1, 90000) for c in self.callers]
        return {
            "nginx_fps": (fb - fa) / (wb - wa) if wb > wa else 0.0,
            "return_fps": [(m1[c["video"]] - m0[c["video"]]) / dt for c in self.callers],
            "return_video_kbps": [(b1[c["video"]] - b0[c["video"]]) * 8 / dt / 1000 for c in self.callers],
            "return_audio_pps": [(p1[c["audio"]] - p0[c["audio"]]) / dt for c in self.callers],
            "delay_growth_s": max((g for g in growth if g is not None), default=None),
            "delay_growth_missing": sum(g is None for g in growth),
            "rtp_received": received, "rtp_lost": lost, "jitter_ms_max": max(jitter, default=None),
            "dropped_gops": rtmp_gops(stats1) - rtmp_gops(self.stats0),
            "rtmp_state": [o.get("state") for o in stats1.get("outputs", []) if o.get("kind") == "rtmp"],
            "states": sorted({p.get("state") for p in stats1.get("participants", [])}),
        }

    def close(self) -> None:
        for c in self.callers:
            c["sender"].stop(grace=2)
        self.watcher.stop()
        self.drain.close()


class TuttiHung(BenchError):
    pass


class NoFirstFrame(BenchError):
    pass


def realtime_problems(c: dict) -> list[str]:
    """Why a composition's window was not real time (empty: it was)."""
    if c["nginx_fps"] == 0 and c["delay_growth_s"] is None:
        return ["STALLED: the composition produced nothing at all (a tutti bug, see Incidents)"]
    p = []
    if c["nginx_fps"] < FPS_OK:
        p.append(f"nginx {c['nginx_fps']:.1f} fps")
    if c["return_fps"] and min(c["return_fps"]) < FPS_OK:
        p.append(f"return {min(c['return_fps']):.1f} fps")
    if c["delay_growth_s"] is None:
        p.append("return stream silent")
    elif c["delay_growth_s"] > DELAY_GROWTH_OK:
        p.append(f"return stream {1000 * c['delay_growth_s']:.0f} ms further behind")
    if c["dropped_gops"] > 0:
        p.append(f"RTMP dropped {c['dropped_gops']} GOPs")
    if c["rtp_received"] > 0 and c["rtp_lost"] > LOSS_OK * (c["rtp_received"] + c["rtp_lost"]):
        p.append(f"{c['rtp_lost']} RTP packets lost")
    return p


# --------------------------------------------------------------------------- audio-only

def ensure_opus(path: Path) -> list[bytes]:
    """A mono Ogg Opus file (24 kbit/s, 20 ms frames), encoded once, parsed
    into its packets: `OPUS_FILE` speech-like (pink noise under a tremolo
    tone), `SPEECH_FILE` synthetic speech (espeak-ng, two voices), or
    `QUIET_FILE` a quiet room (pink noise at -70 dBFS, below any speech),
    `MUTED_FILE` / `MUTED_DTX_FILE` digital silence, by GStreamer's opusenc
    (libopus) without and with DTX."""
    CACHE.mkdir(exist_ok=True)
    ignore = CACHE / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    if not path.exists():
        log(f"encoding {path.name} (once; cached)")
        tmp = path.with_suffix(".tmp.opus")
        if path in (MUTED_FILE, MUTED_DTX_FILE):
            run_checked(["gst-launch-1.0", "-q", "audiotestsrc", "wave=silence", f"num-buffers={OPUS_SECONDS * 50}",
                         "samplesperbuffer=960", "!", "audio/x-raw,rate=48000,channels=1", "!", "opusenc",
                         "bitrate=24000", "audio-type=voice", "frame-size=20",
                         f"dtx={'true' if path == MUTED_DTX_FILE else 'false'}", "!", "oggmux", "!", "filesink",
                         f"location={tmp}"], timeout=120)
        else:
            if path == QUIET_FILE:
                inputs = ["-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.0003:sample_rate=48000"]
                graph = "[0:a]aformat=channel_layouts=mono[a]"
            elif path == SPEECH_FILE:
                if not shutil.which("espeak-ng"):
                    raise BenchError("the speech signal needs espeak-ng (apt-get install espeak-ng)")
                wavs = []
                for i, (voice, text) in enumerate(SPEECH_LINES):
                    wavs.append(CACHE / f"speech-{i}.wav")
                    run_checked(["espeak-ng", "-v", voice, "-s", "150", "-w", str(wavs[-1]), text], timeout=60)
                inputs = [x for w in wavs for x in ("-i", str(w))]
                chain = "".join(f"[{i}:a]aresample=48000[s{i}];" for i in range(len(wavs)))
                graph = (chain + "".join(f"[s{i}]" for i in range(len(wavs)))
                         + f"concat=n={len(wavs)}:v=0:a=1,aloop=loop=-1:size=2e9,aformat=channel_layouts=mono[a]")
            else:
                inputs = ["-f", "lavfi", "-i", "sine=frequency=220:sample_rate=48000,tremolo=f=3:d=0.9",
                          "-f", "lavfi", "-i", "anoisesrc=color=pink:amplitude=0.08:sample_rate=48000"]
                graph = "[0:a][1:a]amix=inputs=2:normalize=0,aformat=channel_layouts=mono[a]"
            run_checked(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *inputs,
                         "-filter_complex", graph,
                         "-map", "[a]", "-t", str(OPUS_SECONDS), "-c:a", "libopus", "-b:a", "24k",
                         "-application", "voip", "-frame_duration", "20", str(tmp)], timeout=120)
        tmp.rename(path)
    packets = ogg_packets(path.read_bytes())
    if abs(len(packets) - OPUS_SECONDS * 50) > 5:
        raise BenchError(f"{path.name}: {len(packets)} packets, expected {OPUS_SECONDS * 50} of 20 ms")
    return packets


def ogg_packets(data: bytes) -> list[bytes]:
    """The packets of an Ogg stream (one logical stream), without OpusHead and OpusTags."""
    packets, cur, pos = [], b"", 0
    while pos < len(data):
        if data[pos:pos + 4] != b"OggS":
            raise BenchError(f"not an Ogg page at byte {pos}")
        nseg = data[pos + 26]
        lacing = data[pos + 27:pos + 27 + nseg]
        body = pos + 27 + nseg
        for size in lacing:
            cur += data[body:body + size]
            body += size
            if size < 255:
                packets.append(cur)
                cur = b""
        pos = body
    if not packets or not packets[0].startswith(b"OpusHead"):
        raise BenchError("not an Ogg Opus stream")
    return packets[2:]


class OpusBlaster(threading.Thread):
    """One thread sending every audio caller's Opus stream: a 20 ms packet per
    caller per tick, on an absolute schedule, each caller from its own socket
    (the one it offered: symmetric RTP), with its own SSRC, sequence and
    timestamps, starting at its own place in the file. A DTX sender leaves
    out its DTX frames: its timestamps move on, its sequence does not."""

    def __init__(self, packets: list[bytes]):
        super().__init__(daemon=True)
        self.packets = packets
        self.streams: list[list] = []    # [sock, dest, ssrc, seq, ts, index, first, packets, dtx]
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.sent = 0
        self.realtime = False            # whether the thread got SCHED_FIFO
        self.late_ticks = 0              # ticks that started > 10 ms late
        self.max_late = 0.0
        self.errors = 0

    def add(self, sock: socket.socket, dest: tuple[str, int], packets: list[bytes] | None = None,
            dtx: bool = False) -> None:
        """A caller sending `packets` (by default the blaster's), leaving out
        its DTX frames if `dtx`."""
        packets = packets or self.packets
        with self.lock:
            n = len(self.streams)
            self.streams.append([sock, dest, random.getrandbits(32), random.getrandbits(16),
                                 random.getrandbits(32), (n * 37) % len(packets), True, packets, dtx])

    def reset_lateness(self) -> None:
        self.late_ticks, self.max_late = 0, 0.0

    def run(self) -> None:
        # The callers stand for machines of their own: this thread should
        # keep its 20 ms beat while Tutti's hundreds of threads load both
        # cores. A real-time priority for this thread alone (on Linux, pid 0
        # is the calling thread). It is not enough on its own (the thread
        # still fell 41 ms behind at 150 callers, against 57-78 without; it
        # shares the interpreter's lock with the draining thread), so
        # lateness is still measured and a late step is reported as the
        # bench's limit.
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(SENDER_RT_PRIORITY))
            self.realtime = True
        except (PermissionError, AttributeError):
            self.realtime = False
        pack = struct.Struct("!BBHII").pack
        next_tick = time.monotonic()
        while not self.stop_event.is_set():
            now = time.monotonic()
            if now < next_tick:
                time.sleep(next_tick - now)
                now = time.monotonic()
            late = now - next_tick
            if late > 0.010:
                self.late_ticks += 1
            self.max_late = max(self.max_late, late)
            with self.lock:
                streams = list(self.streams)
            for st in streams:
                payload = st[7][st[5]]
                if not (st[8] and len(payload) <= DTX_FRAME_MAX_BYTES):
                    header = pack(0x80, PT_OPUS | (0x80 if st[6] else 0), st[3], st[4], st[2])
                    try:
                        st[0].sendto(header + payload, st[1])
                    except OSError:
                        self.errors += 1
                    st[3] = (st[3] + 1) & 0xFFFF
                    st[6] = False
                    self.sent += 1
                st[4] = (st[4] + 960) & 0xFFFFFFFF
                st[5] = (st[5] + 1) % len(st[7])
            next_tick += 0.020
            if time.monotonic() - next_tick > 0.5:   # hopelessly behind: resynchronise, counted as late
                next_tick = time.monotonic()


class AudioComp:
    """An audio-only composition; its callers' audio ports are drained (mix-minus
    counted per caller, timed on the first few), their video m-lines all point
    to one shared drained pair (declined: nothing should arrive there)."""

    TIMED = 4

    def __init__(self, bench: "Bench", tutti: Tutti, blaster: OpusBlaster):
        self.tutti, self.blaster = tutti, blaster
        self.body = {"name": "audio-scale", "audio_only": True}
        status, reply = tutti.post("/v1/compositions", self.body)
        if status != 201:
            raise AudioOnlyUnavailable(f"POST /v1/compositions {json.dumps(self.body)}: {status} {reply}")
        self.cid = reply["id"]
        self.drain = Drain()
        self.video_sink = self.drain.pair()
        self.drain.start()
        self.callers: list[dict] = []
        self.video_accepted = 0
        self.dtx_callers = 0

    def add_caller(self, packets: list[bytes] | None = None, dtx_packets: list[bytes] | None = None) -> None:
        """A caller sending `packets` (by default the blaster's), or
        `dtx_packets` with DTX if it has them and the answer asks for DTX."""
        i = len(self.callers)
        audio = self.drain.pair(timing=i < self.TIMED, every=True)
        name = f"audio{i}"
        offer = offer_sdp(name, audio, self.video_sink, int(time.time()) * 1000 + i)
        reply = self.tutti.join(self.cid, name, offer)
        answer = parse_answer(reply["sdp"])
        if "audio" not in answer:
            raise BenchError(f"{name}: audio rejected:\n{reply['sdp']}")
        if "video" in answer:
            self.video_accepted += 1
        sock = next(a for a, _ in self.drain.pairs if a.getsockname()[1] == audio[0])
        dtx = dtx_packets is not None and answer["audio"]["usedtx"]
        self.dtx_callers += dtx
        self.blaster.add(sock, (answer["audio"]["addr"], answer["audio"]["rtp"]), dtx_packets if dtx else packets, dtx)
        self.callers.append({"audio": audio[0], "offer": offer, "answer": reply["sdp"]})

    def begin(self) -> None:
        self.w0 = time.monotonic()
        self.counts0 = self.drain.counts()
        self.stats0 = self.tutti.stats(self.cid)
        self.sent0 = self.blaster.sent
        self.blaster.reset_lateness()

    def end(self, t0: float, t1: float) -> dict:
        dt = time.monotonic() - self.w0
        b1, p1, _ = self.drain.counts()
        b0, p0, _ = self.counts0
        stats1 = self.tutti.stats(self.cid)
        received, lost, jitter = api_rtp(self.stats0, stats1)
        pps = [(p1[c["audio"]] - p0[c["audio"]]) / dt for c in self.callers]
        growth = [self.drain.delay_growth(c["audio"], t0, t1, 48000) for c in self.callers[:self.TIMED]]
        vs = self.video_sink[0]
        return {
            "mixminus_pps_min": min(pps), "mixminus_pps_median": statistics.median(pps),
            "mixminus_kbps_median": statistics.median((b1[c["audio"]] - b0[c["audio"]]) * 8 / dt / 1000
                                                      for c in self.callers),
            "callers_silent": sum(x < 1 for x in pps),
            "delay_growth_s": max((g for g in growth if g is not None), default=None),
            "rtp_sent": self.blaster.sent - self.sent0, "rtp_received": received, "rtp_lost": lost,
            "jitter_ms_max": max(jitter, default=None),
            "late_ticks": self.blaster.late_ticks, "max_late_ms": 1000 * self.blaster.max_late,
            "sender_realtime": self.blaster.realtime,
            "send_errors": self.blaster.errors,
            "video_packets": p1[vs] - p0[vs], "video_accepted": self.video_accepted,
            "states": sorted({p.get("state") for p in stats1.get("participants", [])}),
            "mix_minus": stats1.get("mix_minus"), "dtx_callers": self.dtx_callers,
        }

    def close(self) -> None:
        self.drain.close()


class AudioOnlyUnavailable(Exception):
    pass


def audio_problems(a: dict) -> list[str]:
    p = []
    if a["mixminus_pps_min"] < AUDIO_RECEIVE_OK * 50:
        p.append(f"a caller got {a['mixminus_pps_min']:.0f} mix-minus packets/s")
    if a["delay_growth_s"] is None:
        p.append("mix-minus silent")
    elif a["delay_growth_s"] > DELAY_GROWTH_OK:
        p.append(f"mix-minus {1000 * a['delay_growth_s']:.0f} ms further behind")
    if a["rtp_received"] > 0 and a["rtp_lost"] > LOSS_OK * (a["rtp_received"] + a["rtp_lost"]):
        p.append(f"{a['rtp_lost']} RTP packets lost")
    if a["max_late_ms"] > SENDER_LATE_MS:
        p.append(f"the sender was {a['max_late_ms']:.0f} ms late (more than the {SENDER_LATE_MS} ms jitter buffer): "
                 "bench-limited")
    return p


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.workdir = Path(tempfile.mkdtemp(prefix="tutti-scale-"))
        self.nginx: Nginx | None = None
        self.passes = 1 if self.smoke else args.passes
        self.warmup = 2.0 if self.smoke else float(args.warmup)
        self.seconds = 3.0 if self.smoke else float(args.seconds)
        self.parts = {int(x) for x in args.parts.split(",")}
        self.baseline = Path(args.baseline).resolve() if args.baseline else None
        self.results: dict = {}
        self.open: list = []        # compositions to close on exit
        self.servers: list[Tutti] = []
        self.example: dict = {}
        self.incidents: list[str] = []

    # -- plumbing

    def check_alive(self, tutti: Tutti, comps: list) -> None:
        if not tutti.proc.alive():
            raise BenchError(f"tutti exited\n{tutti.proc.tail()}")
        for c in comps:
            for p in getattr(c, "procs", lambda: [])():
                if not p.alive():
                    raise BenchError(f"{p.name} exited\n{p.tail()}")

    def start_tutti(self, tag: str, callers: int, binary: Path | None = None) -> Tutti:
        t = Tutti(self, tag, callers, binary)
        self.servers.append(t)
        self.example["serve"] = quote(t.argv)
        return t

    def stop_tutti(self, t: Tutti) -> None:
        for c in list(self.open):
            if c.tutti is t:
                c.close()
                self.open.remove(c)
        t.stop()
        self.servers.remove(t)

    def hung(self, e: Exception) -> None:
        msg = (f"{datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S')} tutti stopped answering the "
               f"API ({str(e).splitlines()[0][:160]}): this pass ends here")
        log("INCIDENT: " + msg)
        self.incidents.append(msg)

    def new_comp(self, tutti: Tutti, tag: str, wl: Workload) -> VideoComp:
        """A composition whose slate has reached nginx, before anyone joins. A
        composition that produces nothing at all within STALL_TIMEOUT (seen
        with this tutti: see `incidents` in RESULTS.md) is recorded, deleted
        and created again, at most twice."""
        for attempt in range(3):
            comp = VideoComp(self, tutti, tag + (f"-retry{attempt}" if attempt else ""), wl.width, wl.height, wl.files)
            self.open.append(comp)
            try:
                comp.wait_first_frame(10.0 if self.smoke else STALL_TIMEOUT)
                return comp
            except NoFirstFrame:
                st = tutti.stats(comp.cid)
                outs = ", ".join(f"{o.get('kind')} {o.get('state')} {o.get('bytes_sent')} B"
                                 for o in st.get("outputs", []))
                msg = (f"{datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S')} composition "
                       f"{comp.cid} ({comp.tag}, {wl.width}x{wl.height}, no caller yet) produced no frame in "
                       f"{STALL_TIMEOUT:.0f} s; outputs: {outs}")
                log("INCIDENT: " + msg)
                self.incidents.append(msg)
                comp.close()
                self.open.remove(comp)
                tutti.delete(comp.cid)
        raise BenchError(f"{tag}: three compositions in a row produced nothing\n{tutti.proc.tail()}")

    def window(self, tutti: Tutti, comps: list) -> dict:
        """One measurement window over `comps` (all on `tutti`)."""
        senders = [p.pid for c in comps for p in getattr(c, "procs", lambda: [])()]
        helpers = [self.nginx.proc.pid] + [c.watcher.proc.pid for c in comps if hasattr(c, "watcher")]

        def ticks(pids):
            total = 0
            for pid in pids:
                try:
                    total += cpu_ticks(pid)
                except OSError:
                    pass
            return total

        for c in comps:
            c.begin()
        t0 = time.monotonic()
        j0 = machine_jiffies()
        cpu0, thr0, s0, h0 = cpu_ticks(tutti.pid), thread_ticks(tutti.pid), ticks(senders), ticks(helpers)
        self0 = resource.getrusage(resource.RUSAGE_SELF)
        while time.monotonic() < t0 + self.seconds:
            self.check_alive(tutti, comps)
            for c in comps:
                if hasattr(c, "watcher"):
                    c.watcher.poll()
            time.sleep(min(0.5, max(0.0, t0 + self.seconds - time.monotonic())))
        cpu1, thr1, s1, h1 = cpu_ticks(tutti.pid), thread_ticks(tutti.pid), ticks(senders), ticks(helpers)
        self1 = resource.getrusage(resource.RUSAGE_SELF)
        j1 = machine_jiffies()
        t1 = time.monotonic()
        dt = t1 - t0
        groups: dict[str, float] = {}
        busiest = ("", 0.0)
        for tid, (comm, t) in thr1.items():
            v = (t - thr0.get(tid, (comm, 0))[1]) / CLK_TCK / dt
            g = thread_group(comm)
            groups[g] = groups.get(g, 0.0) + v
            if v > busiest[1]:
                busiest = (comm, v)
        kinds: dict[str, float] = {}
        for g, v in groups.items():
            kinds[thread_kind(g)] = kinds.get(thread_kind(g), 0.0) + v
        busy = (j1[0] - j0[0]) / (j1[1] - j0[1]) * NCPU if j1[1] > j0[1] else 0.0
        self_cpu = (self1.ru_utime + self1.ru_stime - self0.ru_utime - self0.ru_stime) / dt
        w = {"window_s": dt, "cpu": (cpu1 - cpu0) / CLK_TCK / dt,
             "senders_cpu": (s1 - s0) / CLK_TCK / dt, "helpers_cpu": (h1 - h0) / CLK_TCK / dt,
             "bench_cpu": self_cpu, "machine_busy": busy,
             "steal": (j1[2] - j0[2]) / (j1[1] - j0[1]) * NCPU if j1[1] > j0[1] else 0.0,
             "busiest_thread": busiest[0], "busiest_thread_cpu": busiest[1],
             "threads": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1]) if v >= 0.01},
             "kinds": {k: round(v, 3) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]) if v >= 0.005},
             "comps": [c.end(t0, t1) for c in comps]}
        w["others"] = max(0.0, busy - w["cpu"] - w["senders_cpu"] - w["helpers_cpu"] - self_cpu)
        w.update({k.lower(): v for k, v in status_kib(tutti.pid).items()})
        return w

    # -- part 1: callers in one composition

    def part_callers(self) -> None:
        steps = [2, 4] if self.smoke else CALLER_STEPS
        wl = self.small if self.smoke else self.big
        points: dict[int, list[dict]] = {n: [] for n in steps}
        idle = []
        for p in range(1, self.passes + 1):
            tutti = self.start_tutti(f"callers-pass{p}", max(steps))
            idle.append(tutti.idle.get("VmHWM", 0))
            failures = 0
            comp = None
            try:
                comp = self.new_comp(tutti, f"callers-p{p}", wl)
                for n in steps:
                    while len(comp.callers) < n:
                        comp.add_caller()
                    time.sleep(self.warmup)
                    w = self.window(tutti, [comp])
                    w["n"], w["pass"] = n, p
                    w["problems"] = realtime_problems(w["comps"][0])
                    points[n].append(w)
                    c = w["comps"][0]
                    log(f"callers pass {p}, N={n}: tutti {w['cpu']:.2f} CPU s/s, nginx {c['nginx_fps']:.1f} fps, "
                        f"return min {min(c['return_fps']):.1f} fps, growth "
                        f"{1000 * (c['delay_growth_s'] or 0):.0f} ms, lost {c['rtp_lost']}/{c['rtp_received']}, "
                        f"VmHWM {w.get('vmhwm', 0) / 1024:.0f} MiB, busiest {w['busiest_thread']} "
                        f"{w['busiest_thread_cpu']:.2f}" + (f"; NOT real time: {', '.join(w['problems'])}"
                                                            if w["problems"] else ""))
                    if w["problems"] and w["problems"][0].startswith("STALLED"):
                        self.incidents.append(f"{datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S')} "
                                              f"composition {comp.cid} (callers pass {p}) produced nothing at N = {n}"
                                              f" (tutti {w['cpu']:.2f} CPU s/s)")
                    failures = failures + 1 if w["problems"] else 0
                    if failures >= 2:
                        log(f"callers pass {p}: two steps in a row out of real time, stopping this pass")
                        break
            except TuttiHung as e:
                self.hung(e)
            finally:
                if comp is not None and comp.callers:
                    self.example["callers_offer"] = comp.callers[0]["offer"]
                    self.example["callers_answer"] = comp.callers[0]["answer"]
                    self.example["callers_sender"] = quote(comp.callers[0]["argv"])
                    self.example["callers_composition"] = json.dumps(comp.body)
                self.stop_tutti(tutti)
        self.results["callers"] = {"points": {str(k): v for k, v in points.items()}, "idle_hwm": idle,
                                   "files": [f.name for f in wl.files], "size": [wl.width, wl.height]}

    # -- part 2: concurrent 4-caller compositions

    def part_compositions(self) -> None:
        sizes = [self.small] if self.smoke else [self.big, self.small]
        out = {}
        for wl in sizes:
            kmax = 2 if self.smoke else COMP_MAX[(wl.width, wl.height)]
            key = f"{wl.width}x{wl.height}"
            points: dict[int, list[dict]] = {k: [] for k in range(1, kmax + 1)}
            largest = []
            for p in range(1, self.passes + 1):
                tutti = self.start_tutti(f"comps-{key}-pass{p}", 4 * kmax)
                comps = []
                best = 0
                try:
                    for k in range(1, kmax + 1):
                        for attempt in range(2):
                            comp = self.new_comp(tutti, f"comps-{key}-p{p}-k{k}" + ("-again" if attempt else ""), wl)
                            comps.append(comp)
                            for _ in range(CALLERS):
                                comp.add_caller()
                            time.sleep(self.warmup)
                            w = self.window(tutti, comps)
                            c = w["comps"][-1]
                            if attempt == 0 and c["nginx_fps"] == 0 and c["delay_growth_s"] is None:
                                msg = (f"{datetime.datetime.now(datetime.timezone.utc).strftime('%H:%M:%S')} "
                                       f"composition {comp.cid} ({comp.tag}) stopped producing (0 fps at nginx, "
                                       f"no return stream) after its 4 callers joined, with {k - 1} other "
                                       "composition(s) running: deleted, and the step measured again with a new one")
                                log("INCIDENT: " + msg)
                                self.incidents.append(msg)
                                comps.remove(comp)
                                comp.close()
                                self.open.remove(comp)
                                tutti.delete(comp.cid)
                                continue
                            break
                        w["k"], w["pass"] = k, p
                        w["problems"] = [f"composition {i + 1}: {x}" for i, c in enumerate(w["comps"])
                                         for x in realtime_problems(c)]
                        points[k].append(w)
                        log(f"compositions {key} pass {p}, k={k}: tutti {w['cpu']:.2f} CPU s/s, nginx fps "
                            f"{'/'.join(format(c['nginx_fps'], '.1f') for c in w['comps'])}, VmHWM "
                            f"{w.get('vmhwm', 0) / 1024:.0f} MiB"
                            + (f"; NOT real time: {', '.join(w['problems'])}" if w["problems"] else ""))
                        if w["problems"]:
                            break
                        best = k
                except TuttiHung as e:
                    self.hung(e)
                finally:
                    self.stop_tutti(tutti)
                largest.append(best)
            out[key] = {"points": {str(k): v for k, v in points.items() if v}, "largest": largest,
                        "files": [f.name for f in wl.files]}
        self.results["compositions"] = out

    # -- part 3: audio-only

    def part_audio(self, kind: str = "tone") -> None:
        """`kind`: every caller sends tone and noise (`tone`) or speech
        (`speech`), or TALKERS callers send tone and noise and the others
        a quiet room (`listening`) or silence, with DTX if the answer asks
        for it (`muted`); with `--baseline`, those two sweep that build too,
        pass by pass in turn with this one."""
        key = AUDIO_KEYS[kind]
        steps = [10] if self.smoke else {"tone": AUDIO_STEPS, "muted": MUTED_STEPS}.get(kind, FINE_STEPS)
        path = SPEECH_FILE if kind == "speech" else OPUS_FILE
        packets = ensure_opus(path)
        quiet_file = {"listening": QUIET_FILE, "muted": MUTED_FILE}.get(kind)
        quiet = ensure_opus(quiet_file) if quiet_file else None
        quiet_dtx = ensure_opus(MUTED_DTX_FILE) if kind == "muted" else None
        builds = {"this build": self.tutti}
        if quiet and self.baseline:
            builds["baseline"] = self.baseline
        points = {build: {n: [] for n in steps} for build in builds}
        for p in range(1, self.passes + 1):
            order = list(builds) if p % 2 else list(reversed(builds))
            for build in order:
                tag = key + ("" if build == "this build" else "-baseline")
                try:
                    self.audio_pass(tag, builds[build], p, steps, packets, (quiet, quiet_dtx), points[build])
                except AudioOnlyUnavailable as e:
                    self.results[key] = {"unavailable": str(e)}
                    log(f"audio-only: not available in this tutti: {e}")
                    return

        def data(build: str) -> dict:
            return {"points": {str(k): v for k, v in points[build].items() if v}, "budget": MACHINE_SHARE * NCPU,
                    "packets": len(packets), "file": path.name, "quiet_file": quiet_file and quiet_file.name,
                    "quiet_dtx_file": quiet_dtx and MUTED_DTX_FILE.name,
                    "binary": str(builds[build]), "built": built_at(builds[build])}
        self.results[key] = data("this build")
        if "baseline" in builds:
            self.results[key]["baseline"] = data("baseline")

    def audio_pass(self, tag: str, binary: Path, p: int, steps: list[int], packets: list[bytes],
                   listeners: tuple[list[bytes] | None, list[bytes] | None], points: dict[int, list[dict]]) -> None:
        """One pass of an audio-only sweep with `binary`: callers join in
        `steps` until a step fails; each step's window goes to `points`.
        `listeners`: what every caller but the TALKERS sends (`None`: the
        same as they), and what it sends with DTX if the answer asks for it."""
        def sends(i: int) -> tuple[list[bytes] | None, list[bytes] | None]:
            talker = FIRST_TALKER <= i < FIRST_TALKER + TALKERS
            return (None, None) if talker else listeners
        budget = MACHINE_SHARE * NCPU
        tutti = self.start_tutti(f"{tag}-pass{p}", max(steps), binary)
        blaster = OpusBlaster(packets)
        blaster.start()
        comp = None
        try:
            comp = AudioComp(self, tutti, blaster)
            self.open.append(comp)
            for n in steps:
                j0 = time.monotonic()
                while len(comp.callers) < n:
                    comp.add_caller(*sends(len(comp.callers)))
                join_s = time.monotonic() - j0
                time.sleep(self.warmup)
                w = self.window(tutti, [comp])
                w["n"], w["pass"], w["join_s"] = n, p, join_s
                a = w["comps"][0]
                w["problems"] = audio_problems(a)
                w["over_budget"] = w["cpu"] > budget
                points[n].append(w)
                log(f"{tag} pass {p}, N={n}: tutti {w['cpu']:.2f} CPU s/s ({w['cpu'] / n * 100:.2f} % of a core "
                    f"per caller), mix-minus min {a['mixminus_pps_min']:.0f} pkt/s, lost "
                    f"{a['rtp_lost']}/{a['rtp_received']}, sent {a['rtp_sent']}, growth "
                    f"{1000 * (a['delay_growth_s'] or 0):.0f} ms, bench {w['bench_cpu']:.2f} CPU s/s, "
                    f"VmHWM {w.get('vmhwm', 0) / 1024:.0f} MiB, joins {join_s:.1f} s"
                    + (f", mix-minus encodes {a['mix_minus']}, DTX callers {a['dtx_callers']}" if listeners[0] else "")
                    + (f"; problems: {', '.join(w['problems'])}" if w["problems"] else "")
                    + ("; over the CPU budget" if w["over_budget"] else ""))
                if w["problems"] or w["over_budget"]:
                    break
        except TuttiHung as e:
            self.hung(e)
        finally:
            blaster.stop_event.set()
            blaster.join(timeout=2)
            if comp is not None:
                self.example["audio_offer"] = comp.callers[0]["offer"] if comp.callers else ""
                self.example["audio_answer"] = comp.callers[0]["answer"] if comp.callers else ""
            self.stop_tutti(tutti)

    # -- the whole thing

    def run(self) -> int:
        self.t_start = time.monotonic()
        self.commit, self.dirty = git_state()
        for tool in ("ffmpeg", "ffprobe", "nginx"):
            if not shutil.which(tool):
                raise BenchError(f"missing tool {tool}; run scripts/install-deps.sh")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # thousands of sockets, ours and tutti's
        self.tutti = find_tutti(self.args.tutti, self.smoke, self.args.build)
        self.small = Workload(640, 360, 20 if self.smoke else 60)
        self.big = Workload(1280, 720, 60)
        ensure_cache(self.small)
        if not self.smoke:
            ensure_cache(self.big)
        self.nginx = Nginx(self.workdir)
        parts = ((1, self.part_callers), (2, self.part_compositions), (3, self.part_audio),
                 (4, lambda: self.part_audio("speech")), (5, lambda: self.part_audio("listening")),
                 (6, lambda: self.part_audio("muted")))
        for part, fn in parts:
            if part in self.parts:
                fn()
                if not self.smoke:
                    self.save_and_write()   # after each part: a later failure keeps what was measured
        if self.smoke:
            return self.smoke_verdict()
        return 0

    def smoke_verdict(self) -> int:
        failures = []
        r = self.results
        if 1 in self.parts:
            pts = [w for ws in r["callers"]["points"].values() for w in ws]
            if len(pts) < 2:
                failures.append("callers: fewer than 2 points measured")
            for w in pts:
                c = w["comps"][0]
                if w["cpu"] <= 0.05:
                    failures.append(f"callers N={w['n']}: tutti used {w['cpu']:.2f} CPU s/s")
                if c["nginx_fps"] < 5 or min(c["return_fps"]) < 5:
                    failures.append(f"callers N={w['n']}: {c['nginx_fps']:.1f} fps at nginx, "
                                    f"{min(c['return_fps']):.1f} on the return stream")
                if min(c["return_audio_pps"]) < 10:
                    failures.append(f"callers N={w['n']}: a caller got no mix-minus")
                if not w.get("vmhwm"):
                    failures.append("no VmHWM read")
                print(f"smoke callers N={w['n']}: tutti {w['cpu']:.2f} CPU s/s, nginx {c['nginx_fps']:.1f} fps, "
                      f"return {min(c['return_fps']):.1f} fps, VmHWM {w.get('vmhwm', 0) / 1024:.0f} MiB, "
                      f"senders {w['senders_cpu']:.2f} CPU s/s")
        if 2 in self.parts:
            for key, v in r["compositions"].items():
                for k, ws in v["points"].items():
                    for w in ws:
                        fps = [c["nginx_fps"] for c in w["comps"]]
                        if min(fps) < 5:
                            failures.append(f"compositions {key} k={k}: {min(fps):.1f} fps at nginx")
                        print(f"smoke compositions {key} k={k}: tutti {w['cpu']:.2f} CPU s/s, nginx fps "
                              f"{'/'.join(f'{x:.1f}' for x in fps)}")
        if 3 in self.parts:
            a = r.get("audio", {})
            if "unavailable" in a:
                print(f"smoke audio-only: skipped, this tutti has no audio-only compositions ({a['unavailable'][:120]})")
            else:
                for n, ws in a["points"].items():
                    for w in ws:
                        x = w["comps"][0]
                        if x["mixminus_pps_min"] < 10:
                            failures.append(f"audio N={n}: a caller got {x['mixminus_pps_min']:.0f} mix-minus pkt/s")
                        print(f"smoke audio N={n}: tutti {w['cpu']:.2f} CPU s/s, mix-minus min "
                              f"{x['mixminus_pps_min']:.0f} pkt/s, video packets {x['video_packets']}")
        for x in self.incidents:
            print(f"smoke incident (tutti): {x}")
        if failures:
            print("SMOKE FAILED:\n  " + "\n  ".join(failures))
            return 1
        print(f"smoke ok in {time.monotonic() - self.t_start:.0f} s")
        return 0

    def cleanup(self) -> None:
        for c in list(self.open):
            try:
                c.close()
            except Exception:
                pass
        Proc.kill_all()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"kept {self.workdir}")

    # -- RESULTS.md

    def save_and_write(self) -> None:
        stamp = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                 "commit": self.commit, "dirty": self.dirty, "command": self.command(),
                 "passes": self.passes, "seconds": self.seconds, "warmup": self.warmup,
                 "tutti_built": datetime.datetime.fromtimestamp(self.tutti.stat().st_mtime,
                                                                datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
        try:
            saved = json.loads(RESULTS_JSON.read_text())
        except (OSError, ValueError):
            saved = {}
        for key in ("callers", "compositions", "audio", "audio_speech", *ROOM_SECTIONS):
            if key in self.results:
                saved[key] = {"stamp": stamp, "data": self.results[key]}
        saved["example"] = {**saved.get("example", {}), **self.example}
        saved["incidents"] = {"stamp": stamp, "list": self.incidents}
        header = run_header(self.command(), self.t_start, self.commit, self.dirty, self.tutti)
        # Parts 5 and 6 have a section each; the others share one.
        shared = self.results.keys() - ROOM_SECTIONS.keys()
        if shared:
            saved["header"] = header
        rooms = [key for key in ROOM_SECTIONS if key in self.results]
        for key in rooms:
            saved[ROOM_SECTIONS[key][1]] = header
        CACHE.mkdir(exist_ok=True)
        RESULTS_JSON.write_text(json.dumps(saved, indent=1))
        if shared:
            # Not before every part RESULTS.md shows has figures (main() made
            # sure this run measures the ones the cache lacks).
            if not parts_only_in_results(saved):
                write_section("scale", render(saved, saved["header"]))
        for key in rooms:
            write_section(ROOM_SECTIONS[key][0], render_room(key, saved[key], header))

    def command(self) -> str:
        a = self.args
        cmd = f"python3 bench/scale.py --passes {a.passes} --seconds {a.seconds} --warmup {a.warmup}"
        if a.parts != "1,2,3":
            cmd += f" --parts {a.parts}"
        if a.baseline:
            cmd += f" --baseline {a.baseline}"
        return cmd


# --------------------------------------------------------------------------- rendering

def med(values: list[float], digits: int = 2, bold: bool = False) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    m = statistics.median(values)
    core = f"**{m:.{digits}f}**" if bold else f"{m:.{digits}f}"
    if len(values) == 1 or min(values) == max(values):
        return core
    return f"{core} ({min(values):.{digits}f}–{max(values):.{digits}f})"


def stamp_line(entry: dict) -> str:
    s = entry["stamp"]
    return (f"_Measured {s['date']} by `{s['command']}` at `{s['commit'][:12]}`"
            + (" (uncommitted changes)" if s["dirty"] else "") + f", tutti built {s['tutti_built']}; "
            f"{s['passes']} passes, {s['warmup']:.0f} s warm-up then a {s['seconds']:.0f} s window per point._")


def kinds_line(w: dict, top: int = 5) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in list(w["kinds"].items())[:top])


# Each part's subsection heading in RESULTS.md, by its key in the saved figures, and its --parts number.
PART_HEADINGS = {"callers": "### 1. Callers", "compositions": "### 2. Concurrent", "audio": "### 3. Audio-only",
                 "audio_speech": "### 3b. Audio-only with speech"}
# Parts with a section of their own: the section, and the run header's key in the cache.
ROOM_SECTIONS = {"audio_listening": ("scale-listening", "listening_header"), "audio_muted": ("scale-muted", "muted_header")}
PART_NUMBERS = {"callers": 1, "compositions": 2, "audio": 3, "audio_speech": 4}


def parts_only_in_results(saved: dict) -> list[str]:
    """The parts RESULTS.md's scale section shows that `saved` has no figures for."""
    text = RESULTS.read_text() if RESULTS.exists() else ""
    section = text.split("<!-- begin scale -->", 1)[-1].split("<!-- end scale -->", 1)[0] if "<!-- begin scale -->" in text else ""
    return [key for key, heading in PART_HEADINGS.items() if key not in saved and heading in section]


def render(saved: dict, header: list[str]) -> str:
    L = ["## Benchmark 2: scale (callers per composition, compositions, audio-only callers, memory)", ""]
    L += header + [""]
    L += ["Real time = for every composition, ≥ 29.5 fps at nginx (stream-copy player) and on every caller's "
          "return H.264 (RTP marker bits counted on the drained port), the return stream no more than 100 ms "
          "further behind the wall clock at the end of the window than at its start (least transit delay "
          "arrival − RTP timestamp, first vs last 2 s), no GOP dropped by the RTMP output, ≤ 0.1 % of the "
          "senders' RTP packets lost. CPU = utime+stime of the tutti process (all threads) per wall-clock "
          "second; 2 cores = 2.00. Median (min–max) over the passes; each pass is a fresh `tutti serve`.", ""]
    hwm_points: dict[str, list[tuple[float, float]]] = {}
    if "callers" in saved:
        L += render_callers(saved["callers"], hwm_points)
    if "compositions" in saved:
        L += render_comps(saved["compositions"], hwm_points)
    if "audio" in saved:
        L += render_audio(saved["audio"], hwm_points)
    if "audio_speech" in saved:
        L += render_audio(saved["audio_speech"], hwm_points, "speech")
    L += render_memory(saved, hwm_points)
    inc = saved.get("incidents", {})
    if inc.get("list"):
        L += ["### Incidents (tutti bugs met during the run; the bench deleted the composition and made a new one)",
              "", f"_Run of {inc['stamp']['date']}._", ""] + [f"- {x}" for x in inc["list"]] + [""]
    ex = saved.get("example", {})
    L += ["### Exact commands", "", "Every run wrapped as `flock /tmp/tutti-bench.lock python3 bench/scale.py ...` "
          "so that no other benchmark runs meanwhile. The server (ports and paths per pass):", "```sh",
          ex.get("serve", ""), "```", "a video composition (part 1 and 2; 640x360 in part 2's second size):",
          "```json", ex.get("callers_composition", ""), "```",
          "a caller's offer (its ports bound and drained by the bench) and Tutti's answer:", "```",
          ex.get("callers_offer", "").replace("\r\n", "\n").strip(), "```", "```",
          ex.get("callers_answer", "").replace("\r\n", "\n").strip(), "```",
          "its light sender (one per caller, the four cached files cycled):", "```sh", ex.get("callers_sender", ""),
          "```"]
    if ex.get("audio_offer"):
        L += ["an audio-only caller's offer (its video m-line points to one shared drained pair) and the answer; "
              "its Opus comes from the bench's one sending thread:", "```",
              ex["audio_offer"].replace("\r\n", "\n").strip(), "```", "```",
              ex.get("audio_answer", "").replace("\r\n", "\n").strip(), "```"]
    return "\n".join(L)


def stalled(w: dict) -> bool:
    return any("STALLED" in x for x in w["problems"])


def render_callers(entry: dict, hwm_points: dict) -> list[str]:
    d = entry["data"]
    pts = {int(k): v for k, v in d["points"].items() if v}
    L = [f"### 1. Callers in one {d['size'][0]}x{d['size'][1]} 30 fps composition (RTMP to nginx + HLS)", "",
         stamp_line(entry), "",
         "The callers join two at a time into one running composition (grid 1x2, 2x2, 3x3, 4x4); each point "
         "is measured after the warm-up that follows the last join, once per pass. Callers replay "
         + ", ".join(f"`{f}`" for f in d["files"]) + " (cycled) with one `ffmpeg -re -c copy -f rtp` each.", "",
         "Windows where the composition had stalled (produced nothing: a tutti bug, see Incidents) are "
         "left out of the figures and of the vote, and counted in the last column.", "",
         "| N | tutti CPU s/s | of the machine | nginx fps | return fps (min caller) | delay growth ms (max) "
         "| RTP lost / received | busiest thread (CPU s/s) | senders CPU s/s | VmHWM MiB | real time | stalled |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    rt_ns, broken = [], False
    for n, ws_all in sorted(pts.items()):
        for w in ws_all:
            hwm_points.setdefault("video caller", []).append((n, w.get("vmhwm", 0) / 1024))
        ws = [w for w in ws_all if not stalled(w)]
        nst = len(ws_all) - len(ws)
        if not ws:
            L.append(f"| {n} | – | – | – | – | – | – | – | – | – | – | {nst}/{len(ws_all)} |")
            continue
        ok = sum(not w["problems"] for w in ws)
        rt = ok * 2 > len(ws)
        broken = broken or not rt
        if not broken:
            rt_ns.append(n)
        cs = [w["comps"][0] for w in ws]
        busiest = max(ws, key=lambda w: w["busiest_thread_cpu"])
        L.append(f"| {n} | {med([w['cpu'] for w in ws], bold=True)} | "
                 f"{100 * statistics.median(w['cpu'] for w in ws) / NCPU:.0f} % | "
                 f"{med([c['nginx_fps'] for c in cs], 1)} | {med([min(c['return_fps']) for c in cs], 1)} | "
                 f"{max(1000 * (c['delay_growth_s'] or 0) for c in cs):.0f} | "
                 f"{sum(c['rtp_lost'] for c in cs)} / {sum(c['rtp_received'] for c in cs)} | "
                 f"`{busiest['busiest_thread']}` {busiest['busiest_thread_cpu']:.2f} | "
                 f"{med([w['senders_cpu'] for w in ws])} | {med([w.get('vmhwm', 0) / 1024 for w in ws], 0)} | "
                 f"{'yes' if rt else '**no**'} ({ok}/{len(ws)}) | {nst}/{len(ws_all)} |")
    L.append("")
    largest = max(rt_ns) if rt_ns else None
    F = []
    if largest:
        F.append(f"**Largest N in real time: {largest}** (in real time in a majority of passes, as every smaller N)"
                 + ("; 16 is the grid's cap (a 17th caller is a 409)." if largest == 16 else "."))
    else:
        F.append("**No N was in real time.**")
    xs, ys = [], []
    for n in rt_ns:
        for w in pts[n]:
            if not w["problems"]:
                xs.append(n)
                ys.append(w["cpu"])
    f = fit(xs, ys)
    if f:
        F.append(f"**CPU per added caller: {f[0]:.3f} CPU s/s** ({100 * f[0]:.1f} % of a core; least squares over "
                 f"the real-time windows of N = {', '.join(map(str, rt_ns))}; intercept {f[1]:.2f}).")
    sf = fit([n for n in pts for _ in pts[n]], [w["senders_cpu"] for n in pts for w in pts[n]])
    if sf:
        F.append(f"The light senders cost {sf[0]:.3f} CPU s/s per caller (not counted in tutti's figures); the "
                 f"bench's own drains ≤ {max(w['bench_cpu'] for ws in pts.values() for w in ws):.2f}, nginx + the "
                 f"watcher ≤ {max(w['helpers_cpu'] for ws in pts.values() for w in ws):.2f}; other processes on "
                 f"the machine ≤ {max(w['others'] for ws in pts.values() for w in ws):.2f} cores, hypervisor steal "
                 f"≤ {max(w['steal'] for ws in pts.values() for w in ws):.2f}.")
    fails = [w for ws in pts.values() for w in ws if w["problems"] and not stalled(w)]
    if fails:
        first = min(fails, key=lambda w: (w["n"], w["pass"]))
        F.append(f"First point out of real time: N = {first['n']} (pass {first['pass']}): "
                 f"{'; '.join(first['problems'])}. Tutti used {first['cpu']:.2f} CPU s/s with the machine "
                 f"{first['machine_busy']:.2f} cores busy; by thread kind: {kinds_line(first)}.")
    top = max((n for n, ws in pts.items() if any(not stalled(w) for w in ws)), default=max(pts))
    last = next((w for w in pts[top] if not stalled(w)), pts[top][0])
    F.append(f"Where tutti's CPU goes at N = {top} (pass {last['pass']}, CPU s/s by thread kind): {kinds_line(last, 7)}.")
    return L + [f"- {x}" for x in F] + [""]


def render_comps(entry: dict, hwm_points: dict) -> list[str]:
    L = ["### 2. Concurrent 4-caller compositions", "", stamp_line(entry), "",
         "Per pass, compositions are added one at a time to one server (each: 4 callers of that size, canvas "
         "of that size, 30 fps, 2500 kbit/s, RTMP to nginx + HLS, its own fps watcher) until a window is out "
         "of real time; the fps columns give the worst composition.", "",
         "| size | k | tutti CPU s/s | per composition | nginx fps (worst) | return fps (worst) | RTP lost | "
         "busiest thread (CPU s/s) | VmHWM MiB | real time |", "|---|---|---|---|---|---|---|---|---|---|"]
    F = []
    for key, d in entry["data"].items():
        pts = {int(k): v for k, v in d["points"].items()}
        for k, ws_all in sorted(pts.items()):
            for w in ws_all:
                hwm_points.setdefault(f"composition {key}", []).append((k, w.get("vmhwm", 0) / 1024))
            ws = [w for w in ws_all if not stalled(w)]
            if not ws:
                L.append(f"| {key} | {k} | – | – | – | – | – | – | – | stalled ({len(ws_all)}/{len(ws_all)}) |")
                continue
            ok = sum(not w["problems"] for w in ws)
            busiest = max(ws, key=lambda w: w["busiest_thread_cpu"])
            L.append(f"| {key} | {k} | {med([w['cpu'] for w in ws], bold=True)} | "
                     f"{med([w['cpu'] / k for w in ws])} | "
                     f"{med([min(c['nginx_fps'] for c in w['comps']) for w in ws], 1)} | "
                     f"{med([min(min(c['return_fps']) for c in w['comps']) for w in ws], 1)} | "
                     f"{sum(c['rtp_lost'] for w in ws for c in w['comps'])} | "
                     f"`{busiest['busiest_thread']}` {busiest['busiest_thread_cpu']:.2f} | "
                     f"{med([w.get('vmhwm', 0) / 1024 for w in ws], 0)} | {'yes' if ok == len(ws) else '**no**'} "
                     f"({ok}/{len(ws)}" + (f"; {len(ws_all) - len(ws)} stalled" if len(ws_all) > len(ws) else "")
                     + ") |")
        lg = d["largest"]
        F.append(f"**{key}: largest k in real time {statistics.median(lg):.0f}** (per pass: "
                 f"{', '.join(map(str, lg))}).")
        fails = [w for ws in pts.values() for w in ws if w["problems"] and not stalled(w)]
        if fails:
            first = min(fails, key=lambda w: (w["k"], w["pass"]))
            F.append(f"{key}, first out of real time: k = {first['k']} (pass {first['pass']}): "
                     f"{'; '.join(first['problems'][:3])}; tutti {first['cpu']:.2f} CPU s/s, machine "
                     f"{first['machine_busy']:.2f} cores busy; by thread kind: {kinds_line(first)}.")
    L.append("")
    return L + [f"- {x}" for x in F] + [""]


def render_audio(entry: dict, hwm_points: dict, kind: str = "tone") -> list[str]:
    d = entry["data"]
    title = {"tone": "### 3. Audio-only: Opus callers in one composition, each with its own mix-minus",
             "speech": "### 3b. Audio-only with speech: every caller talks, in espeak-ng's voices",
             "listening": "### This build",
             "baseline": f"### The baseline build (`{d.get('binary')}`, built {d.get('built')})"}
    L = [title[kind], "", stamp_line(entry), ""]
    if kind == "speech":
        L += ["Part 3 again (`--parts 4`) with a speech file: every caller talks all the time (two synthetic voices, "
              "looped), so every mix-minus is speech, which Opus codes mostly in SILK and hybrid frames (the mix of "
              "a hundred talkers sounds like noise and gets CELT frames about half the time). Part 3's tone "
              "and noise mostly get CELT frames, which cost libopus a fraction as much to encode. This is the "
              "worst case of a real room: nobody only listens.", ""]
    if "unavailable" in d:
        return L + [f"Not run: this tutti has no audio-only compositions yet ({d['unavailable'][:200]}).", ""]
    pts = {int(k): v for k, v in d["points"].items()}
    budget = d["budget"]
    room = kind in ("listening", "baseline")
    L += [f"One composition `{{\"audio_only\": true}}`; callers join in steps (N = "
          f"{', '.join(map(str, sorted(pts)))}), each offering Opus (sendrecv) + H.264 video (declined: the "
          f"video m-lines all point to one drained pair). ONE thread of the bench sends every caller's Opus: "
          f"the packets of `{d['file']}` (mono, 24 kbit/s, 20 ms, {d['packets']} packets) read from its Ogg pages, "
          f"paced at 50 packets/s per caller on an absolute schedule, each caller from its own socket with its "
          f"own SSRC. A step passes if tutti needs ≤ {budget:.2f} CPU s/s ({100 * MACHINE_SHARE:.0f} % of "
          f"{NCPU} cores), every caller receives ≥ {AUDIO_RECEIVE_OK * 50:.1f} mix-minus packets/s, ≤ 0.1 % "
          "of the packets are lost, the mix-minus of the first callers (timed) keeps up with the wall clock "
          f"(≤ 100 ms growth) and the bench's sending thread was never more than {SENDER_LATE_MS} ms late; the "
          "pass stops at the first step that fails (criteria re-applied when the section is rendered, so a pass "
          "may have stopped at a step that passes them now).", "",
          "| N | tutti CPU s/s | of the machine | % of a core per caller | mix-minus pkt/s (min caller) | "
          "kbit/s (median) | lost / received | growth ms | busiest thread (CPU s/s) | bench process CPU s/s | "
          "VmHWM MiB | passes ok |" + (" own / shared encodes |" if room else ""),
          "|---|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if room else "")]
    for ws in pts.values():
        for w in ws:
            w["problems"] = audio_problems(w["comps"][0])   # the criteria of this version of the script
    good, broken = [], False
    for n, ws in sorted(pts.items()):
        a = [w["comps"][0] for w in ws]
        ok = sum(not w["problems"] and not w["over_budget"] for w in ws)
        broken = broken or ok * 2 <= len(ws)
        if not broken:
            good.append(n)
        busiest = max(ws, key=lambda w: w["busiest_thread_cpu"])
        L.append(f"| {n} | {med([w['cpu'] for w in ws], bold=True)} | "
                 f"{100 * statistics.median(w['cpu'] for w in ws) / NCPU:.0f} % | "
                 f"{med([100 * w['cpu'] / n for w in ws])} | {med([x['mixminus_pps_min'] for x in a], 1)} | "
                 f"{med([x['mixminus_kbps_median'] for x in a], 1)} | {sum(x['rtp_lost'] for x in a)} / "
                 f"{sum(x['rtp_received'] for x in a)} | {max(1000 * (x['delay_growth_s'] or 0) for x in a):.0f} | "
                 f"`{busiest['busiest_thread']}` {busiest['busiest_thread_cpu']:.2f} | "
                 f"{med([w['bench_cpu'] for w in ws])} | {med([w.get('vmhwm', 0) / 1024 for w in ws], 0)} | "
                 f"{ok}/{len(ws)} |" + (f" {encodes_cell(a)} |" if room else ""))
        for w in ws:
            if kind == "tone":
                hwm_points.setdefault("audio caller", []).append((n, w.get("vmhwm", 0) / 1024))
    L.append("")
    F = []
    if good:
        top = max(good)
        cpu = statistics.median(w["cpu"] for w in pts[top])
        F.append(f"**Largest N within {100 * MACHINE_SHARE:.0f} % of the machine: {top} callers** "
                 f"(tutti {cpu:.2f} CPU s/s, {100 * cpu / top:.2f} % of a core per caller; FreeSWITCH users "
                 "report 4–5 % per conference participant)"
                 + (f" — the target of {AUDIO_CALLERS_TARGET} is met." if top >= AUDIO_CALLERS_TARGET else
                    f" — below the target of {AUDIO_CALLERS_TARGET}."))
        xs = [n for n in good for _ in pts[n]]
        ys = [w["cpu"] for n in good for w in pts[n]]
        f = fit(xs, ys)
        if f:
            F.append(f"CPU per added caller (least squares over the passing steps): **{100 * f[0]:.2f} % of a "
                     f"core** (intercept {f[1]:.2f} CPU s/s).")
    else:
        F.append("**No step passed.**")
    stops = [w for ws in pts.values() for w in ws if w["problems"] or w["over_budget"]]
    for w in sorted(stops, key=lambda w: w["pass"]):
        F.append(f"Pass {w['pass']} stopped at N = {w['n']}: "
                 + "; ".join(w["problems"] + ([f"tutti {w['cpu']:.2f} CPU s/s > {budget:.2f}"]
                                              if w["over_budget"] else []))
                 + f". By thread kind: {kinds_line(w)}; busiest thread `{w['busiest_thread']}` "
                 f"{w['busiest_thread_cpu']:.2f}.")
    vp = sum(w["comps"][0]["video_packets"] for ws in pts.values() for w in ws)
    va = max(w["comps"][0]["video_accepted"] for ws in pts.values() for w in ws)
    F.append(f"Video m-lines accepted by Tutti: {va}; video packets received on the declined ports: {vp}.")
    windows = [w["comps"][0] for ws in pts.values() for w in ws if "sender_realtime" in w["comps"][0]]
    if windows:
        F.append(f"The bench's sending thread ran at real-time priority (SCHED_FIFO {SENDER_RT_PRIORITY}) in "
                 f"{sum(a['sender_realtime'] for a in windows)} of {len(windows)} windows.")
    dtx = {n: max(w["comps"][0]["dtx_callers"] for w in ws) for n, ws in sorted(pts.items()) if "dtx_callers" in ws[0]["comps"][0]}
    if room and dtx:
        F.append("Callers sending with DTX (their answer asked for it), per N: "
                 + ", ".join(f"{n}: {k}" for n, k in dtx.items()) + ".")
    return L + [f"- {x}" for x in F] + [""]


def render_room(key: str, entry: dict, header: list[str]) -> str:
    """Part 5's or part 6's own section: this build, and the baseline build if one was swept."""
    d = entry["data"]
    talkers = f"callers {FIRST_TALKER}–{FIRST_TALKER + TALKERS - 1} send part 3's tone and noise"
    if key == "audio_listening":
        L = ["## Benchmark 2c: audio-only, a room that mostly listens (`scale.py --parts 5`)", ""] + header + [""]
        L += [f"Part 3 of benchmark 2 as most rooms are: {talkers}, every other caller `{d.get('quiet_file')}`, a "
              "quiet room (pink noise at -70 dBFS, below the quietest speech; libopus's DTX takes it for sound, so "
              "these listeners send 50 packets a second whatever the answer asks)."]
    else:
        L = ["## Benchmark 2d: audio-only, the listeners muted, with DTX (`scale.py --parts 6`)", ""] + header + [""]
        L += [f"Part 5 as large rooms mostly are: {talkers}, every other caller is muted. A muted browser sends "
              "digital silence through libopus; when the answer asks for DTX (`usedtx=1`, RFC 7587) libopus "
              f"codes it as DTX frames of {DTX_FRAME_MAX_BYTES} bytes or less, which the sender leaves out: a "
              "packet every 400 ms remains. So a listener sends "
              f"`{d.get('quiet_dtx_file')}` with DTX if Tutti's answer asks for it, else `{d.get('quiet_file')}` "
              "(the same silence without DTX, 50 packets a second). The `lost / received` column counts what "
              "Tutti received."]
    L[-1] += (" A caller that has put nothing audible into the mix for a second hears exactly the full mix, and "
              "Tutti sends every such caller one shared Opus encode of it; the talkers keep an encode each. The "
              "last column is the composition's `mix_minus` at the end of the window (own encodes / shared; median "
              "over the passes). The timed callers are two listeners and two talkers. With `--baseline BIN`, that "
              "build is swept too, pass by pass in turn with this one, on the same machine.")
    L.append("")
    L += render_audio(entry, {}, "listening")
    if "baseline" in d:
        base = {"stamp": entry["stamp"], "data": d["baseline"]}
        L += render_audio(base, {}, "baseline")
        ours, theirs = (cpu_by_n(x["points"]) for x in (d, d["baseline"]))
        both = sorted(ours.keys() & theirs.keys())
        if both:
            L += ["### Side by side", "", "Median CPU s/s and the passes that met every criterion at that N. A build "
                  "that could not keep up used what it got, not what it needed: its ratio is a bound.", "",
                  "| N | this build | baseline | ratio |", "|---|---|---|---|"]
            for n in both:
                (cpu, ok), (base_cpu, base_ok) = ours[n], theirs[n]
                L.append(f"| {n} | {cpu:.2f} ({ok}) | {base_cpu:.2f} ({base_ok}) | {cpu / base_cpu:.2f} |")
            L.append("")
    return "\n".join(L)


def cpu_by_n(points: dict) -> dict[int, tuple[float, str]]:
    """Median tutti CPU s/s at each N, and how many of the passes that
    reached it passed (criteria as in `render_audio`)."""
    def passed(w: dict) -> bool:
        return not audio_problems(w["comps"][0]) and not w["over_budget"]
    return {int(n): (statistics.median(w["cpu"] for w in ws), f"{sum(map(passed, ws))}/{len(ws)} ok")
            for n, ws in points.items() if ws}


def built_at(binary: Path) -> str:
    return datetime.datetime.fromtimestamp(binary.stat().st_mtime, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def encodes_cell(comps: list[dict]) -> str:
    """Own / shared mix-minus encodes, median over the passes."""
    views = [c["mix_minus"] for c in comps if c.get("mix_minus")]
    if not views:
        return "–"
    return f"{statistics.median(v['own_encodes'] for v in views):.0f} / {statistics.median(v['shared'] for v in views):.0f}"


def render_memory(saved: dict, hwm_points: dict) -> list[str]:
    L = ["### 4. Memory: peak RSS (VmHWM of tutti, /proc/PID/status)", "",
         "Read after every window above; VmHWM only grows, so each server's value after a step is the peak "
         "so far. Slopes are least squares over every pass's points.", ""]
    F = []
    idle = saved.get("callers", {}).get("data", {}).get("idle_hwm")
    if idle:
        F.append(f"tutti serve with nothing to do: {statistics.median(idle) / 1024:.0f} MiB.")
    for name, pts in hwm_points.items():
        f = fit([x for x, _ in pts], [y for _, y in pts])
        if f:
            unit = "composition (4 callers each)" if name.startswith("composition") else name.split()[0] + " caller"
            F.append(f"**{f[0]:.1f} MiB per {unit}**"
                     + (f" at {name.split()[1]}" if name.startswith("composition") else "")
                     + f" (intercept {f[1]:.0f} MiB; max {max(y for _, y in pts):.0f} MiB at "
                     f"{max(pts, key=lambda p: p[1])[0]:.0f}).")
    return L + [f"- {x}" for x in F] + [""]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--passes", type=int, default=3, help="fresh servers per sweep (each point measured once a pass)")
    ap.add_argument("--seconds", type=int, default=10, help="measurement window per point")
    ap.add_argument("--warmup", type=int, default=5, help="after the last join of a step")
    ap.add_argument("--parts", default="1,2,3", help="which parts to run: 1 callers, 2 compositions, 3 audio-only, "
                                                    "4 audio-only with speech (needs espeak-ng), 5 audio-only with "
                                                    f"{TALKERS} talkers and the rest quiet, 6 the same with the rest "
                                                    "muted, with DTX if asked (4-6 not in the default) "
                                                    "(memory comes with each); the others keep their last figures")
    ap.add_argument("--smoke", action="store_true", help="a short run of every part that only checks it works (CI)")
    ap.add_argument("--tutti", help="the tutti binary (default: target/release/tutti, built if missing)")
    ap.add_argument("--build", action="store_true", help="cargo build --release first (else only if missing)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    ap.add_argument("--baseline", help="another tutti binary that parts 5 and 6 sweep too, side by side with this one")
    ap.add_argument("--render", action="store_true", help="only rebuild the RESULTS.md section from "
                    "bench/.cache/scale-results.json (after a change to the report's layout)")
    args = ap.parse_args()
    if args.passes < 1 or args.seconds < 2 or args.warmup < 0:
        ap.error("--passes >= 1, --seconds >= 2, --warmup >= 0")
    if not {x.strip() for x in args.parts.split(",")} <= {"1", "2", "3", "4", "5", "6"}:
        ap.error("--parts: a comma-separated subset of 1,2,3,4,5,6")

    if args.render:
        saved = json.loads(RESULTS_JSON.read_text())
        lost = parts_only_in_results(saved)
        if lost:
            ap.error(f"{RESULTS_JSON} has no figures for {', '.join(lost)}: rendering would delete them")
        if "header" in saved:
            write_section("scale", render(saved, saved["header"]))
        for key, (section, header_key) in ROOM_SECTIONS.items():
            if key in saved:
                write_section(section, render_room(key, saved[key], saved[header_key]))
        return 0

    if not args.smoke:
        # The section is rendered from a cache this checkout may not have (it is
        # not in git): a run that leaves out a part the section shows, and has no
        # figures for, would delete that part's figures. Said before measuring.
        try:
            saved = json.loads(RESULTS_JSON.read_text())
        except (OSError, ValueError):
            saved = {}
        chosen = {x.strip() for x in args.parts.split(",")}
        planned = {key for key, n in PART_NUMBERS.items() if str(n) in chosen}
        # Parts 5 and 6 alone write a section each.
        lost = parts_only_in_results({**saved, **dict.fromkeys(planned)}) if planned else []
        if lost:
            ap.error(f"RESULTS.md shows parts this checkout has no figures for in {RESULTS_JSON} "
                     f"({', '.join(lost)}): add them, --parts "
                     + ",".join(sorted(chosen | {str(PART_NUMBERS[k]) for k in lost})))
    return run_bench(lambda: Bench(args), args.smoke, SMOKE_DEADLINE)


if __name__ == "__main__":
    sys.exit(main())
