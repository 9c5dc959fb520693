#!/usr/bin/env python3
"""Benchmark 3: latency added by Tutti, and how fast it starts streams.

Two RTP callers, A and B, in one composition (1280x720 30 fps, 2500 kbit/s,
one RTMP output to a local nginx-rtmp). Each sends the same pre-encoded
1280x720 30 fps H.264 whose frame N shows N as a 16-bit counter of large
black/white blocks (and its complement, to reject misreads), plus an Opus
track of short 1 kHz clicks at irregular, known instants. A Python sender
packetizes and paces both in real time and logs the wall-clock send time of
each access unit's last packet and of each Opus packet. A receiver logs the
kernel arrival time (SO_TIMESTAMPNS) of every packet Tutti sends back.

After the run (nothing is decoded while measuring): B's return composite is
depacketized and decoded, A's counter read from A's cell; each counter
value's first appearance is paired with its send time (and the same for A
receiving B). The mix-minus Opus is wrapped in Ogg, decoded, and its click
onsets are paired with the sender's. Then, on the same server:

  - caller POST -> first decodable return frame (IDR + SPS/PPS, last packet)
    at a newly joining caller's video port, repeated;
  - RTMP output POST -> first decodable frame (an AVC keyframe after the
    sequence header) at a minimal Python RTMP player that was already
    waiting at nginx-rtmp for the stream, repeated.

Before those runs, lip sync on air: a caller whose picture flashes as its
sound clicks, and every output recorded and measured (bench/lipsync.py).

    python3 bench/latency.py [--runs 3] [--seconds 30] [--joins 10] [--rtmp-posts 10]
                             [--compare-jitter 10,200] [--lipsync-seconds 60] [--lipsync-only]
                             [--smoke] [--tutti PATH] [--keep]

Only the standard library (plus ffmpeg to pre-encode and to decode after the
run). Every child runs in its own process group and dies with this script.
See bench/README.md.
"""

from __future__ import annotations

import argparse
import heapq
import json
import os
import random
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
from pathlib import Path

import lipsync
from benchlib import (CACHE, REPO, BenchError, Nginx, Proc, bind_rtp_pair, find_tutti, free_tcp_port, free_udp_range,
                      git_state, http, log, offer_sdp, parse_answer, run_bench, run_checked, run_header,
                      serve_argv, write_section)

# The workload.
WIDTH, HEIGHT, FPS = 1280, 720, 30
CALLER_VIDEO_KBPS = 1500
KEYFRAME_FRAMES = 30
OUT_VIDEO_KBPS = 2500
FILE_SECONDS = 40
SMOKE_FILE_SECONDS = 12              # the smoke's 2 s warm-up and 6 s window, with room
SAMPLE_RATE = 48000
OPUS_FRAME = 960                     # 20 ms
CLICK_MS = (160, 240)                # irregular gaps between clicks, so that pairing is unambiguous
CLICK_SAMPLES = 240                  # 5 ms of 1 kHz
CLICK_AMPLITUDE = 0.5
COUNTER_COLS, COUNTER_ROWS = 8, 4    # 16 bits in rows 0-1, their complement in rows 2-3
MTU_PAYLOAD = 1200
PT_H264, PT_OPUS = 96, 111

# Bounds on every wait.
STARTUP_TIMEOUT = 30.0
JOIN_TIMEOUT = 5.0
RTMP_TIMEOUT = 8.0
DECODE_TIMEOUT = 300.0
SMOKE_DEADLINE = 95.0
SMOKE_LIPSYNC_SECONDS = 10.0

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
CACHE_VERSION = "v1"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


# --------------------------------------------------------------------------- the media files

def click_positions(total_samples: int) -> list[int]:
    """Sample positions of the clicks: irregular gaps from a fixed seed."""
    rng = random.Random(4242)
    pos, out = SAMPLE_RATE // 2, []
    while pos + CLICK_SAMPLES < total_samples:
        out.append(pos)
        pos += rng.randrange(CLICK_MS[0], CLICK_MS[1] + 1) * SAMPLE_RATE // 1000
    return out


def ensure_cache(seconds: int) -> tuple[Path, Path]:
    CACHE.mkdir(exist_ok=True)
    video = CACHE / f"latency-counter-{WIDTH}x{HEIGHT}-{FPS}fps-{seconds}s-{CACHE_VERSION}.h264"
    audio = CACHE / f"latency-clicks-{seconds}s-{CACHE_VERSION}.opus"
    if not video.exists():
        log(f"pre-encoding {video.name} (once; cached)")
        # An 8x4 picture: bit b of N (b = column + 8 * row) in rows 0-1, its complement in
        # rows 2-3; scaled up (blocks of 160x180), with camera-like noise so that the encoder
        # spends a realistic bitrate and Tutti's decoder has real work.
        bit = f"bitand(floor(N/pow(2,X+8*mod(Y,2))),1)"
        graph = (f"nullsrc=s={COUNTER_COLS}x{COUNTER_ROWS}:r={FPS},format=gray,"
                 f"geq=lum='16+219*abs({bit}-gte(Y,2))',"
                 f"scale={WIDTH}:{HEIGHT}:flags=neighbor,format=yuv420p,noise=alls=8:allf=t")
        tmp = video.with_suffix(".tmp.h264")
        run_checked(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                     "-f", "lavfi", "-i", graph, "-t", str(seconds),
                     "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-bf", "0",
                     "-b:v", f"{CALLER_VIDEO_KBPS}k", "-maxrate", f"{CALLER_VIDEO_KBPS}k",
                     "-bufsize", f"{CALLER_VIDEO_KBPS}k", "-g", str(KEYFRAME_FRAMES),
                     "-keyint_min", str(KEYFRAME_FRAMES), "-sc_threshold", "0",
                     "-f", "h264", str(tmp)], timeout=600)
        tmp.rename(video)
    if not audio.exists():
        log(f"pre-encoding {audio.name} (once; cached)")
        total = seconds * SAMPLE_RATE
        pcm = bytearray(total * 2)
        import math
        burst = [int(CLICK_AMPLITUDE * 32767 * math.sin(2 * math.pi * 1000 * i / SAMPLE_RATE))
                 for i in range(CLICK_SAMPLES)]
        for p in click_positions(total):
            struct.pack_into(f"<{CLICK_SAMPLES}h", pcm, p * 2, *burst)
        raw = CACHE / "latency-clicks.tmp.s16"
        raw.write_bytes(pcm)
        tmp = audio.with_suffix(".tmp.opus")
        run_checked(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                     "-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", str(raw),
                     "-c:a", "libopus", "-b:a", "48k", "-frame_duration", "20", "-vbr", "off",
                     "-f", "ogg", str(tmp)], timeout=300)
        raw.unlink()
        tmp.rename(audio)
    return video, audio


def split_annexb(data: bytes) -> list[bytes]:
    nals, i = [], data.find(b"\x00\x00\x01")
    while i >= 0:
        j = data.find(b"\x00\x00\x01", i + 3)
        nal = data[i + 3: j if j >= 0 else len(data)].rstrip(b"\x00")
        if nal:
            nals.append(nal)
        i = j
    return nals


def access_units(nals: list[bytes]) -> list[list[bytes]]:
    """Groups NAL units into access units (one picture each)."""
    aus: list[list[bytes]] = []
    cur: list[bytes] = []
    has_vcl = False
    for nal in nals:
        t = nal[0] & 0x1F
        vcl = t in (1, 5)
        first_slice = vcl and len(nal) > 1 and nal[1] & 0x80
        if has_vcl and ((t in (6, 7, 8, 9)) or first_slice):
            aus.append(cur)
            cur, has_vcl = [], False
        cur.append(nal)
        has_vcl = has_vcl or vcl
    if cur:
        aus.append(cur)
    return aus


def ogg_packets(data: bytes) -> list[bytes]:
    packets, cur, i = [], bytearray(), 0
    while i < len(data):
        if data[i:i + 4] != b"OggS":
            raise BenchError("bad Ogg page")
        nseg = data[i + 26]
        lacing = data[i + 27: i + 27 + nseg]
        j = i + 27 + nseg
        for l in lacing:
            cur += data[j:j + l]
            j += l
            if l < 255:
                packets.append(bytes(cur))
                cur = bytearray()
        i = j
    return packets


def _crc_table() -> list[int]:
    table = []
    for n in range(256):
        c = n << 24
        for _ in range(8):
            c = ((c << 1) ^ 0x04C11DB7) if c & 0x80000000 else (c << 1)
        table.append(c & 0xFFFFFFFF)
    return table


CRC_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    for b in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC_TABLE[((crc >> 24) ^ b) & 0xFF]
    return crc


def write_ogg_opus(path: Path, packets: list[bytes]) -> None:
    """Ogg Opus with pre-skip 0, one packet per page, so that decoded sample s
    belongs to the packet whose samples cover s."""
    serial = 0x7477
    out = bytearray()

    def page(payload: bytes, seq: int, granule: int, flags: int) -> None:
        lacing = bytes([255] * (len(payload) // 255) + [len(payload) % 255])
        head = (b"OggS" + bytes([0, flags]) + struct.pack("<qII", granule, serial, seq) + b"\0\0\0\0"
                + bytes([len(lacing)]) + lacing)
        crc = ogg_crc(head + payload)
        out.extend(head[:22] + struct.pack("<I", crc) + head[26:] + payload)

    page(b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 0, SAMPLE_RATE, 0, 0), 0, 0, 0x02)
    vendor = b"tutti-bench"
    page(b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0), 1, 0, 0)
    granule = 0
    for k, p in enumerate(packets):
        granule += opus_samples(p)
        page(p, k + 2, granule, 0x04 if k == len(packets) - 1 else 0)
    path.write_bytes(out)


def opus_samples(pkt: bytes) -> int:
    toc = pkt[0]
    config = toc >> 3
    if config < 12:
        fs = [480, 960, 1920, 2880][config & 3]
    elif config < 16:
        fs = [480, 960][config & 1]
    else:
        fs = [120, 240, 480, 960][config & 3]
    c = toc & 3
    n = 1 if c == 0 else 2 if c in (1, 2) else (pkt[1] & 0x3F if len(pkt) > 1 else 1)
    return fs * n


def decode_opus(packets: list[bytes], workdir: Path, tag: str) -> list[int]:
    """Mono S16 samples of `packets` (decoded by ffmpeg from an Ogg we write)."""
    ogg = workdir / f"{tag}.opus"
    write_ogg_opus(ogg, packets)
    raw = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(ogg),
                          "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "s16le", "pipe:1"],
                         capture_output=True, timeout=DECODE_TIMEOUT, stdin=subprocess.DEVNULL)
    if raw.returncode != 0:
        raise BenchError(f"decoding {ogg}: {raw.stderr.decode(errors='replace')[-2000:]}")
    samples = list(struct.unpack(f"<{len(raw.stdout) // 2}h", raw.stdout[:len(raw.stdout) // 2 * 2]))
    expected = sum(opus_samples(p) for p in packets)
    if abs(len(samples) - expected) > OPUS_FRAME:
        raise BenchError(f"{tag}: decoded {len(samples)} samples from {len(packets)} Opus packets "
                         f"({expected} expected): the sample -> packet mapping would be off")
    return samples


def click_onsets(samples: list[int]) -> list[int]:
    """Sample index of each click's onset: the first sample above 30 % of the
    loudest, after at least 100 ms below it."""
    if not samples:
        return []
    peak = max(max(samples), -min(samples))
    if peak < 1000:
        return []
    thr = 0.3 * peak
    quiet = SAMPLE_RATE // 10
    out, last = [], -quiet - 1
    for i, x in enumerate(samples):
        if x > thr or -x > thr:
            if i - last > quiet:
                out.append(i)
            last = i
    return out


# --------------------------------------------------------------------------- RTP out and in

class Caller:
    """One caller's two UDP pairs (the offer's ports): received packets are
    logged with their kernel arrival time; the same RTP sockets send."""

    def __init__(self, name: str):
        self.name = name
        self.audio = bind_rtp_pair()
        self.video = bind_rtp_pair()
        for s in (self.audio[0], self.video[0]):
            s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.rx: dict[str, list[tuple[float, bytes]]] = {"audio": [], "video": []}
        self.answer: dict = {}
        self.last_rx = {"audio": 0.0, "video": 0.0}   # kept up to date even when not recording
        self.pid = ""
        self.video_sent: dict[int, float] = {}   # frame index (first pass of the file) -> send time
        self.audio_sent: dict[int, float] = {}   # Opus packet index (first pass) -> send time

    def offer(self, session: int) -> str:
        return offer_sdp(self.name, (self.audio[0].getsockname()[1], self.audio[1].getsockname()[1]),
                         (self.video[0].getsockname()[1], self.video[1].getsockname()[1]), session)

    def sockets(self) -> list[socket.socket]:
        return [*self.audio, *self.video]

    def close(self) -> None:
        for s in self.sockets():
            s.close()


def recv_stamped(s: socket.socket) -> tuple[float, bytes]:
    data, anc, _flags, _addr = s.recvmsg(65536, socket.CMSG_SPACE(16))
    for level, kind, cdata in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            sec, nsec = struct.unpack("qq", cdata[:16])
            return sec + nsec / 1e9, data
    return time.time(), data


class Receiver(threading.Thread):
    def __init__(self, callers: list[Caller]):
        super().__init__(daemon=True)
        self.callers = callers
        self.stop_flag = threading.Event()
        self.recording = threading.Event()

    def run(self) -> None:
        where: dict[socket.socket, tuple[Caller, str | None]] = {}
        for c in self.callers:
            where[c.audio[0]] = (c, "audio")
            where[c.video[0]] = (c, "video")
            where[c.audio[1]] = (c, None)
            where[c.video[1]] = (c, None)
        for s in where:
            s.setblocking(False)
        socks = list(where)
        while not self.stop_flag.is_set():
            try:
                ready, _, _ = select.select(socks, [], [], 0.2)
            except (OSError, ValueError):
                return
            for s in ready:
                caller, kind = where[s]
                while True:
                    try:
                        t, data = recv_stamped(s) if kind else (0.0, s.recv(65536))
                    except (BlockingIOError, InterruptedError):
                        break
                    except OSError:
                        break
                    if kind:
                        caller.last_rx[kind] = t
                        if self.recording.is_set():
                            caller.rx[kind].append((t, data))


def rtp_header(pt: int, marker: bool, seq: int, ts: int, ssrc: int) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)


def packetize_au(au: list[bytes]) -> list[bytes]:
    """RTP payloads (RFC 6184, mode 1): single NAL units, FU-A above MTU_PAYLOAD."""
    out = []
    for nal in au:
        if len(nal) <= MTU_PAYLOAD:
            out.append(nal)
            continue
        hdr, body = nal[0], nal[1:]
        indicator = (hdr & 0xE0) | 28
        chunks = [body[i:i + MTU_PAYLOAD - 2] for i in range(0, len(body), MTU_PAYLOAD - 2)]
        for k, ch in enumerate(chunks):
            fu = (hdr & 0x1F) | (0x80 if k == 0 else 0) | (0x40 if k == len(chunks) - 1 else 0)
            out.append(bytes([indicator, fu]) + ch)
    return out


class Sender(threading.Thread):
    """Paces the file's access units (30 fps) and Opus packets (20 ms) to every
    caller's answer ports in real time, the file looping; logs the send time
    of the first pass's AUs (last packet) and Opus packets."""

    def __init__(self, callers: list[Caller], aus: list[list[bytes]], opus: list[bytes]):
        super().__init__(daemon=True)
        self.callers = callers
        self.payloads = [packetize_au(au) for au in aus]
        self.opus = opus
        self.stop_flag = threading.Event()
        self.t0_wall = 0.0
        self.error: str | None = None

    def run(self) -> None:
        try:
            self._run()
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            self.error = repr(e)

    def _run(self) -> None:
        n_v, n_a = len(self.payloads), len(self.opus)
        period_v, period_a = 1 / FPS, OPUS_FRAME / SAMPLE_RATE
        state = []
        for i, c in enumerate(self.callers):
            state.append({"vseq": random.randrange(65536), "aseq": random.randrange(65536),
                          "vts": random.randrange(1 << 32), "ats": random.randrange(1 << 32),
                          "vssrc": 0x1000 + i, "assrc": 0x2000 + i,
                          "vaddr": (c.answer["video"]["addr"], c.answer["video"]["rtp"]),
                          "aaddr": (c.answer["audio"]["addr"], c.answer["audio"]["rtp"])})
        t0 = time.monotonic() + 0.05
        self.t0_wall = time.time() + 0.05
        events = [(t0, 0, 0), (t0, 1, 0)]   # (due, kind 0 video / 1 audio, index over loops)
        while not self.stop_flag.is_set():
            due, kind, idx = heapq.heappop(events)
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            if kind == 0:
                loop, i = divmod(idx, n_v)
                pkts = self.payloads[i]
                for c, st in zip(self.callers, state):
                    for k, p in enumerate(pkts):
                        c.video[0].sendto(rtp_header(PT_H264, k == len(pkts) - 1, st["vseq"], st["vts"], st["vssrc"])
                                          + p, st["vaddr"])
                        st["vseq"] += 1
                    if loop == 0:
                        c.video_sent[i] = time.time()
                    st["vts"] += 90000 // FPS
                heapq.heappush(events, (t0 + (idx + 1) * period_v, 0, idx + 1))
            else:
                loop, i = divmod(idx, n_a)
                p = self.opus[i]
                for c, st in zip(self.callers, state):
                    c.audio[0].sendto(rtp_header(PT_OPUS, False, st["aseq"], st["ats"], st["assrc"]) + p, st["aaddr"])
                    if loop == 0:
                        c.audio_sent[i] = time.time()
                    st["aseq"] += 1
                    st["ats"] += opus_samples(p)
                heapq.heappush(events, (t0 + (idx + 1) * period_a, 1, idx + 1))


def parse_rtp(data: bytes) -> tuple[int, bool, int, int, bytes] | None:
    if len(data) < 12 or data[0] >> 6 != 2:
        return None
    cc = data[0] & 0x0F
    off = 12 + 4 * cc
    if data[0] & 0x10:
        if len(data) < off + 4:
            return None
        off += 4 + 4 * struct.unpack("!H", data[off + 2: off + 4])[0]
    end = len(data)
    if data[0] & 0x20:
        end -= data[-1]
    pt = data[1] & 0x7F
    if pt >= 72 and pt <= 76:   # RTCP on the RTP port
        return None
    seq, ts = struct.unpack("!HI", data[2:8])
    return pt, bool(data[1] & 0x80), seq, ts, data[off:end]


def depacketize(payload: bytes) -> list[bytes]:
    """NAL units of one RTP payload; an FU-A fragment comes back as a
    ('FU', start, end, nal_header, bytes) marker handled by the caller."""
    t = payload[0] & 0x1F
    if 1 <= t <= 23:
        return [payload]
    if t == 24:
        nals, i = [], 1
        while i + 2 <= len(payload):
            n = struct.unpack("!H", payload[i:i + 2])[0]
            nals.append(payload[i + 2: i + 2 + n])
            i += 2 + n
        return nals
    return []


def reassemble(packets: list[tuple[float, bytes]], pt: int) -> list[tuple[float, list[bytes]]]:
    """(arrival of the AU's last packet, NAL units) per RTP timestamp, in order."""
    aus: list[tuple[float, list[bytes]]] = []
    cur_ts, cur_t, cur, fu = None, 0.0, [], None
    for t, data in packets:
        r = parse_rtp(data)
        if not r or r[0] != pt:
            continue
        _pt, marker, _seq, ts, payload = r
        if not payload:
            continue
        if cur_ts is not None and ts != cur_ts:
            if cur:
                aus.append((cur_t, cur))
            cur, fu = [], None
        cur_ts, cur_t = ts, max(cur_t if cur else 0.0, t)
        if payload[0] & 0x1F == 28 and len(payload) > 2:
            s, e = payload[1] & 0x80, payload[1] & 0x40
            if s:
                fu = bytearray([(payload[0] & 0xE0) | (payload[1] & 0x1F)]) + payload[2:]
            elif fu is not None:
                fu += payload[2:]
            if e and fu is not None:
                cur.append(bytes(fu))
                fu = None
        else:
            cur.extend(depacketize(payload))
        if marker:
            if cur:
                aus.append((cur_t, cur))
            cur, fu, cur_ts = [], None, None
    return aus


def sort_by_seq(packets: list[tuple[float, bytes]]) -> tuple[list[tuple[float, bytes]], int]:
    """Packets in sequence order (unwrapped), and how many are missing."""
    keyed, last, ext = [], None, 0
    for t, data in packets:
        if len(data) < 12:
            continue
        seq = struct.unpack("!H", data[2:4])[0]
        if last is not None:
            d = (seq - last) & 0xFFFF
            if d > 0x8000:
                d -= 0x10000
            ext += d
        else:
            ext = seq
        last = seq
        keyed.append((ext, t, data))
    keyed.sort(key=lambda k: k[0])
    missing = (keyed[-1][0] - keyed[0][0] + 1 - len(keyed)) if keyed else 0
    return [(t, d) for _e, t, d in keyed], missing


# --------------------------------------------------------------------------- the analysis

def cell_crop(index: int, count: int) -> tuple[int, int, int, int]:
    """Where caller `index`'s picture lands in the composite (src/model/layout.rs:
    grid cells, the picture fitted keeping its aspect ratio, centred)."""
    cols = {1: 1, 2: 2}.get(count, 2)
    rows = 1 if count <= 2 else 2
    edge = lambda total, parts, i: (total * i // parts) & ~1   # noqa: E731
    col, row = index % cols, index // cols
    x0, x1 = edge(WIDTH, cols, col), (WIDTH if col + 1 == cols else edge(WIDTH, cols, col + 1))
    y0, y1 = edge(HEIGHT, rows, row), (HEIGHT if row + 1 == rows else edge(HEIGHT, rows, row + 1))
    cw, ch = x1 - x0, y1 - y0
    scale = min(cw / WIDTH, ch / HEIGHT)
    w, h = int(WIDTH * scale) & ~1, int(HEIGHT * scale) & ~1
    return w, h, x0 + (cw - w) // 2, y0 + (ch - h) // 2


def read_counter(cells: bytes) -> int | None:
    bits = [1 if v > 125 else 0 for v in cells]
    if any(abs(v - 125) < 35 for v in cells):
        return None
    value = 0
    for b in range(16):
        if bits[b] == bits[16 + b]:
            return None
        value |= bits[b] << b
    return value


def video_latency(receiver: Caller, sender: Caller, cell: int, workdir: Path, tag: str,
                  since: float, until: float) -> dict:
    """Frames sent in [since, until]: send of the AU's last packet -> arrival of the
    last packet of the first return AU that shows its counter."""
    packets, missing = sort_by_seq(receiver.rx["video"])
    aus = reassemble(packets, PT_H264)
    first_idr = next((i for i, (_t, nals) in enumerate(aus) if any(n[0] & 0x1F == 5 for n in nals)), None)
    if first_idr is None:
        raise BenchError(f"{tag}: no IDR in {len(aus)} return access units")
    aus = aus[first_idr:]
    path = workdir / f"{tag}.h264"
    with open(path, "wb") as f:
        for _t, nals in aus:
            for n in nals:
                f.write(b"\x00\x00\x00\x01" + n)
    w, h, x, y = cell_crop(cell, 2)
    r = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-f", "h264", "-i", str(path),
                        "-vf", f"crop={w}:{h}:{x}:{y},scale={COUNTER_COLS}:{COUNTER_ROWS}:flags=area",
                        "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "gray", "pipe:1"],
                       capture_output=True, timeout=DECODE_TIMEOUT, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise BenchError(f"{tag}: decoding the return video: {r.stderr.decode(errors='replace')[-2000:]}")
    size = COUNTER_COLS * COUNTER_ROWS
    frames = len(r.stdout) // size
    if frames != len(aus):
        raise BenchError(f"{tag}: {frames} decoded frames for {len(aus)} access units fed: "
                         "the frame -> arrival mapping would be off")
    first_seen: dict[int, float] = {}
    valid = 0
    for j in range(frames):
        v = read_counter(r.stdout[j * size:(j + 1) * size])
        if v is None:
            continue
        valid += 1
        if v not in first_seen:
            first_seen[v] = aus[j][0]
    lat = []
    for v, t_arr in first_seen.items():
        t_send = sender.video_sent.get(v)
        if t_send is not None and since <= t_send <= until:
            lat.append((t_arr - t_send) * 1000)
    sent_window = sum(1 for t in sender.video_sent.values() if since <= t <= until)
    return {"latency_ms": lat, "aus": len(aus), "valid": valid, "missing_packets": missing,
            "sent": sent_window, "shown": len(lat)}


def audio_latency(receiver: Caller, sender: Caller, sender_onsets: list[int],
                  workdir: Path, tag: str, since: float, until: float) -> dict:
    """Clicks sent in [since, until]: onset in the sent Opus (send time of its
    packet + offset in it) -> onset in the received mix-minus (arrival of its
    packet + offset in it), both decoded the same way."""
    packets, missing = sort_by_seq(receiver.rx["audio"])
    rx = []
    for t, data in packets:
        r = parse_rtp(data)
        if r and r[0] == PT_OPUS and r[4]:
            rx.append((t, r[4]))
    if not rx:
        raise BenchError(f"{tag}: no Opus packet received")
    samples = decode_opus([p for _t, p in rx], workdir, tag)
    starts, acc = [], 0
    for _t, p in rx:
        starts.append(acc)
        acc += opus_samples(p)

    def rx_time(s: int) -> float:
        import bisect
        k = bisect.bisect_right(starts, s) - 1
        return rx[k][0] + (s - starts[k]) / SAMPLE_RATE

    rx_onsets = [rx_time(s) for s in click_onsets(samples)]
    # The sender's onsets: decoded from the file the same way, mapped to send times.
    tx = []
    for s in sender_onsets:
        k, off = divmod(s, OPUS_FRAME)
        t = sender.audio_sent.get(k)
        if t is not None and since <= t <= until:
            tx.append(t + off / SAMPLE_RATE)
    # The typical latency is the sharp peak of the (receive - send) differences under 1.5 s.
    hist: dict[int, int] = {}
    for r in rx_onsets:
        for s in tx:
            d = r - s
            if 0 < d < 1.5:
                hist[int(d * 500)] = hist.get(int(d * 500), 0) + 1
    if not hist:
        return {"latency_ms": [], "clicks_sent": len(tx), "clicks_heard": len(rx_onsets), "missing_packets": missing}
    peak = max(hist, key=lambda b: hist[b] + hist.get(b - 1, 0) + hist.get(b + 1, 0)) / 500
    lat = []
    import bisect
    for r in rx_onsets:
        k = bisect.bisect_left(tx, r - peak)
        best = min((tx[i] for i in (k - 1, k) if 0 <= i < len(tx)), key=lambda s: abs(r - s - peak), default=None)
        if best is not None and abs(r - best - peak) < CLICK_MS[0] / 2000:
            lat.append((r - best) * 1000)
    return {"latency_ms": lat, "clicks_sent": len(tx), "clicks_heard": len(rx_onsets), "missing_packets": missing}


# --------------------------------------------------------------------------- the RTMP player

def amf_str(s: str) -> bytes:
    b = s.encode()
    return b"\x02" + struct.pack("!H", len(b)) + b


def amf_num(x: float) -> bytes:
    return b"\x00" + struct.pack("!d", x)


def amf_obj(d: dict) -> bytes:
    out = b"\x03"
    for k, v in d.items():
        kb = k.encode()
        out += struct.pack("!H", len(kb)) + kb
        out += amf_str(v) if isinstance(v, str) else (b"\x01" + bytes([v])) if isinstance(v, bool) else amf_num(v)
    return out + b"\x00\x00\x09"


class RtmpPlayer:
    """A minimal RTMP player (handshake, connect, createStream, play) that
    timestamps the arrival of each message: no demuxer or buffer in between."""

    def __init__(self, port: int, app: str, key: str, deadline: float):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=max(0.1, deadline - time.monotonic()))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.deadline = deadline
        self.buf = bytearray()
        self.last_recv = 0.0
        self.in_chunk = 128
        self.streams: dict[int, dict] = {}
        c1 = bytes(8) + os.urandom(1528)
        self.sock.sendall(b"\x03" + c1)
        s = self._take(1 + 1536 + 1536)
        self.sock.sendall(bytes(s[1:1537]))
        self._send(2, 1, 0, struct.pack("!I", 4096))
        self.out_chunk = 4096
        self._send(3, 20, 0, amf_str("connect") + amf_num(1) + amf_obj({
            "app": app, "flashVer": "LNX 9,0,124,2", "tcUrl": f"rtmp://127.0.0.1:{port}/{app}", "fpad": False,
            "capabilities": 15, "audioCodecs": 4071, "videoCodecs": 252, "videoFunction": 1}))
        self._wait_command(b"_result")
        self._send(3, 20, 0, amf_str("createStream") + amf_num(2) + b"\x05")
        body = self._wait_command(b"_result")
        sid = int(struct.unpack("!d", body[-8:])[0]) if body[-9:-8] == b"\x00" else 1
        self._send(8, 20, sid, amf_str("play") + amf_num(0) + b"\x05" + amf_str(key))
        self._wait_command(b"NetStream.Play.Start")

    def _fill(self) -> None:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("RTMP: deadline")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        self.last_recv = time.time()
        if not data:
            raise ConnectionError("RTMP: connection closed")
        self.buf += data

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _send(self, csid: int, mtype: int, sid: int, body: bytes) -> None:
        out = bytes([csid]) + b"\0\0\0" + struct.pack("!I", len(body))[1:] + bytes([mtype]) + struct.pack("<I", sid)
        size = getattr(self, "out_chunk", 128)
        for i in range(0, len(body), size):
            if i:
                out += bytes([0xC0 | csid])
            out += body[i:i + size]
        self.sock.sendall(out)

    def read_message(self) -> tuple[int, bytes, float]:
        """(type, body, arrival of its last byte)."""
        while True:
            b = self._take(1)[0]
            fmt, csid = b >> 6, b & 0x3F
            if csid == 0:
                csid = 64 + self._take(1)[0]
            elif csid == 1:
                x = self._take(2)
                csid = 64 + x[0] + 256 * x[1]
            st = self.streams.setdefault(csid, {"len": 0, "type": 0, "data": bytearray(), "ext": False})
            if fmt <= 2:
                h = self._take((11, 7, 3)[fmt])
                if fmt <= 1:
                    st["len"] = int.from_bytes(h[3:6], "big")
                    st["type"] = h[6]
                st["ext"] = h[0:3] == b"\xff\xff\xff"
                if st["ext"]:
                    self._take(4)
            elif st["ext"]:
                self._take(4)
            n = min(self.in_chunk, st["len"] - len(st["data"]))
            st["data"] += self._take(n)
            if len(st["data"]) >= st["len"]:
                body = bytes(st["data"])
                st["data"] = bytearray()
                if st["type"] == 1 and len(body) >= 4:
                    self.in_chunk = struct.unpack("!I", body[:4])[0] & 0x7FFFFFFF
                return st["type"], body, self.last_recv

    def _wait_command(self, needle: bytes) -> bytes:
        while True:
            mtype, body, _t = self.read_message()
            if mtype == 20 and needle in body:
                return body

    def first_keyframe(self) -> dict:
        """Times of the first video message, the AVC sequence header, and the
        first keyframe NALU message after it (the first decodable frame)."""
        out: dict = {}
        while True:
            mtype, body, t = self.read_message()
            if mtype != 9 or len(body) < 2:
                continue
            out.setdefault("first_video", t)
            if body[0] & 0x0F != 7:
                raise BenchError(f"RTMP: video codec {body[0] & 0x0F}, not AVC")
            if body[1] == 0:
                out.setdefault("sequence_header", t)
            elif body[1] == 1 and body[0] >> 4 == 1 and "sequence_header" in out:
                nal_types, i = set(), 5
                while i + 4 <= len(body):
                    n = struct.unpack("!I", body[i:i + 4])[0]
                    if i + 4 < len(body):
                        nal_types.add(body[i + 4] & 0x1F)
                    i += 4 + n
                if 5 not in nal_types:
                    raise BenchError(f"RTMP: a keyframe message without an IDR slice (NAL types {nal_types})")
                out["keyframe"] = t
                return out

    def close(self) -> None:
        self.sock.close()


def publisher_delays(logfile: Path) -> list[float]:
    """From Tutti's own log: "output added" -> the next "RTMP publisher live"
    (connected to nginx and publishing), in ms, for each RTMP output."""
    import datetime
    import re
    out, added = [], None
    try:
        text = re.sub(r"\x1b\[[0-9;]*m", "", logfile.read_text(errors="replace"))
    except OSError:
        return out
    for line in text.splitlines():
        m = re.match(r"(\d{4}-\d\d-\d\dT[\d:.]+)Z", line)
        if not m:
            continue
        t = datetime.datetime.fromisoformat(m.group(1)[:26]).timestamp()
        if "output added" in line and "kind=Rtmp" in line:
            added = t
        elif "RTMP publisher live" in line and added is not None:
            out.append((t - added) * 1000)
            added = None
    return out


# --------------------------------------------------------------------------- one run

class Run:
    def __init__(self, bench: "Bench", index: int, jitter_ms: int, measure_posts: bool):
        self.b = bench
        self.index = index
        self.jitter_ms = jitter_ms
        self.measure_posts = measure_posts
        self.dir = bench.workdir / f"run{index}-jb{jitter_ms}"
        self.dir.mkdir()
        self.procs: list[Proc] = []
        self.callers: list[Caller] = []
        self.result: dict = {"run": index, "jitter_ms": jitter_ms}

    def start_tutti(self) -> None:
        http_port = free_tcp_port()
        first, last = free_udp_range(60)
        self.base = f"http://127.0.0.1:{http_port}"
        argv = serve_argv(self.b.tutti, http_port, (first, last), self.dir) + ["--jitter-buffer-ms", str(self.jitter_ms)]
        self.b.tutti_argv = argv
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.tutti = Proc("tutti", argv, self.dir / "tutti.log", env=env, cwd=REPO)
        self.procs.append(self.tutti)
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if not self.tutti.alive():
                raise BenchError(f"tutti exited during start-up\n{self.tutti.tail()}")
            try:
                if http("GET", self.base + "/healthz")[0] == 200:
                    return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"tutti did not answer /healthz\n{self.tutti.tail()}")
            time.sleep(0.1)

    def api(self, method: str, path: str, body: dict | None = None, expect: int = 201) -> dict:
        status, text = http(method, self.base + path, json.dumps(body).encode() if body is not None else None)
        if status != expect:
            raise BenchError(f"{method} {path}: {status} {text}\n{self.tutti.tail()}")
        return json.loads(text) if text.strip() else {}

    def join(self, c: Caller, session: int) -> None:
        r = self.api("POST", f"/v1/compositions/{self.cid}/participants", {"name": c.name, "sdp": c.offer(session)})
        c.pid = r["id"]
        c.answer = parse_answer(r["sdp"])
        if "audio" not in c.answer or "video" not in c.answer:
            raise BenchError(f"{c.name}: an m= line was rejected:\n{r['sdp']}")

    def execute(self) -> dict:
        b = self.b
        self.start_tutti()
        comp = self.api("POST", "/v1/compositions", {
            "name": f"latency-run{self.index}",
            "video": {"width": WIDTH, "height": HEIGHT, "fps": FPS, "bitrate_kbps": OUT_VIDEO_KBPS},
            "outputs": [{"kind": "rtmp", "url": b.nginx.url(f"main-{self.index}")}]})
        self.cid = comp["id"]
        a, bb = Caller("A"), Caller("B")
        self.callers = [a, bb]
        self.join(a, int(time.time()) * 10)
        self.join(bb, int(time.time()) * 10 + 1)
        receiver = Receiver(self.callers)
        receiver.start()
        sender = Sender(self.callers, b.aus, b.opus)
        self.sender, self.receiver = sender, receiver
        sender.start()
        time.sleep(0.1)
        since = sender.t0_wall + b.warmup
        log(f"run {self.index} (jitter buffer {self.jitter_ms} ms): sending; warm-up {b.warmup:.0f} s, "
            f"measuring {b.seconds:.0f} s")
        time.sleep(max(0.0, since - time.time()) - 0.5)
        receiver.recording.set()
        time.sleep(0.5 + b.seconds)
        # Let the last frames sent come back before we stop recording.
        stop_send = time.time()
        time.sleep(1.0 + self.jitter_ms / 1000)
        receiver.recording.clear()
        if sender.error:
            raise BenchError(f"sender: {sender.error}")
        if not self.tutti.alive():
            raise BenchError(f"tutti died\n{self.tutti.tail()}")
        self.result["state"] = self.api("GET", f"/v1/compositions/{self.cid}", expect=200)
        self.until = stop_send   # frames sent later have no return recorded to be paired with
        if self.measure_posts:
            self.result["joins"] = [self.time_join(i) for i in range(b.joins)]
            self.result["rtmp"] = [self.time_rtmp_output(i) for i in range(b.rtmp_posts)]
        # Did A and B still get the composite at the end (after the joins and outputs)?
        now = time.time()
        self.result["return_video_stalled"] = [c.name for c in self.callers if now - c.last_rx["video"] > 2.0]
        if self.result["return_video_stalled"]:
            log(f"run {self.index}: no return video for > 2 s at {self.result['return_video_stalled']} "
                "at the end of the run: Tutti's composite stalled")
        sender.stop_flag.set()
        sender.join(timeout=2)
        self.stop()
        self.result["publisher_live_ms"] = publisher_delays(self.tutti.logfile)[1:]   # the first is the main output
        receiver.stop_flag.set()
        receiver.join(timeout=2)
        log(f"run {self.index}: analysing (after tutti stopped)")
        self.analyse(since, self.until)
        (self.dir / "result.json").write_text(json.dumps(self.result, indent=1))
        for c in self.callers:
            c.close()
        return self.result

    def analyse(self, since: float, until: float) -> None:
        a, bb = self.callers
        video, audio = [], []
        for rx, tx, cell in ((bb, a, 0), (a, bb, 1)):
            tag = f"{tx.name}-to-{rx.name}"
            v = video_latency(rx, tx, cell, self.dir, f"video-{tag}", since, until)
            au = audio_latency(rx, tx, self.b.sender_onsets, self.dir, f"audio-{tag}", since, until)
            self.result[f"video {tag}"] = {k: v[k] for k in v if k != "latency_ms"}
            self.result[f"audio {tag}"] = {k: au[k] for k in au if k != "latency_ms"}
            video += v["latency_ms"]
            audio += au["latency_ms"]
            log(f"  {tag}: video {len(v['latency_ms'])} frames p50 {pct(v['latency_ms'], 50):.1f} ms "
                f"({v['valid']}/{v['aus']} AUs read, {v['sent']} sent, {v['missing_packets']} packets missing); "
                f"audio {len(au['latency_ms'])}/{au['clicks_sent']} clicks p50 {pct(au['latency_ms'], 50):.1f} ms")
        self.result["video_ms"] = video
        self.result["audio_ms"] = audio

    def time_join(self, i: int) -> dict:
        """A new caller's POST -> the arrival of the last packet of the first IDR
        access unit (SPS and PPS seen before it) at its video port."""
        c = Caller(f"joiner{i}")
        try:
            for s in c.sockets():
                s.setblocking(False)
            sprop = False
            t_post = time.time()
            status, text = http("POST", f"{self.base}/v1/compositions/{self.cid}/participants",
                                json.dumps({"name": c.name, "sdp": c.offer(int(time.time()) * 10 + 5 + i)}).encode())
            t_resp = time.time()
            if status != 201:
                raise BenchError(f"joiner{i}: {status} {text}")
            body = json.loads(text)
            sprop = "sprop-parameter-sets" in body["sdp"]
            res = {"response_ms": (t_resp - t_post) * 1000}
            seen_sps, seen_pps, idr_ts = sprop, sprop, None
            deadline = time.monotonic() + JOIN_TIMEOUT
            while time.monotonic() < deadline and "idr_ms" not in res:
                ready, _, _ = select.select([c.video[0], c.audio[0]], [], [], 0.05)
                for s in ready:
                    while True:
                        try:
                            t, data = recv_stamped(s)
                        except (BlockingIOError, InterruptedError):
                            break
                        r = parse_rtp(data)
                        if not r:
                            continue
                        if s is c.audio[0]:
                            res.setdefault("first_audio_ms", (t - t_post) * 1000)
                            continue
                        _pt, marker, _seq, ts, payload = r
                        res.setdefault("first_video_ms", (t - t_post) * 1000)
                        if not payload:
                            continue
                        kind = payload[0] & 0x1F
                        types = [n[0] & 0x1F for n in depacketize(payload) if n] if kind != 28 else \
                            ([payload[1] & 0x1F] if payload[1] & 0x80 else [])
                        seen_sps |= 7 in types
                        seen_pps |= 8 in types
                        if 5 in types and seen_sps and seen_pps and idr_ts is None:
                            idr_ts = ts
                        if idr_ts is not None and ts == idr_ts and marker:
                            res["idr_ms"] = (t - t_post) * 1000
                            break
            http("DELETE", f"{self.base}/v1/compositions/{self.cid}/participants/{body['id']}")
            time.sleep(0.5)
            return res
        finally:
            c.close()

    def time_rtmp_output(self, i: int) -> dict:
        key = f"post-{self.index}-{i}"
        deadline = time.monotonic() + RTMP_TIMEOUT
        player = RtmpPlayer(self.b.nginx.port, "live", key, deadline)
        try:
            t_post = time.time()
            status, text = http("POST", f"{self.base}/v1/compositions/{self.cid}/outputs",
                                json.dumps({"kind": "rtmp", "url": self.b.nginx.url(key)}).encode())
            t_resp = time.time()
            if status != 201:
                raise BenchError(f"POST output: {status} {text}")
            res = {"response_ms": (t_resp - t_post) * 1000}
            try:
                got = player.first_keyframe()
                res.update({f"{k}_ms": (v - t_post) * 1000 for k, v in got.items()})
            except (TimeoutError, socket.timeout, ConnectionError) as e:
                res["error"] = str(e)
            oid = json.loads(text).get("id")
            if oid:
                http("DELETE", f"{self.base}/v1/compositions/{self.cid}/outputs/{oid}")
            time.sleep(0.3)
            return res
        finally:
            player.close()

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.workdir = Path(tempfile.mkdtemp(prefix="tutti-latency-"))
        self.runs: list[dict] = []
        self.file_seconds = SMOKE_FILE_SECONDS if self.smoke else FILE_SECONDS
        self.seconds = 6.0 if self.smoke else float(args.seconds)
        self.warmup = 2.0 if self.smoke else float(args.warmup)
        self.joins = 2 if self.smoke else args.joins
        self.rtmp_posts = 2 if self.smoke else args.rtmp_posts
        self.tutti_argv: list[str] = []
        self.lipsync_seconds = min(float(args.lipsync_seconds), SMOKE_LIPSYNC_SECONDS) if self.smoke else \
            float(args.lipsync_seconds)
        self.lipsync: dict | None = None

    def run(self) -> int:
        started = time.monotonic()
        self.commit, self.dirty = git_state()
        self.tutti = find_tutti(self.args.tutti, self.smoke, False)
        if self.warmup + self.seconds + 1 > self.file_seconds:
            raise BenchError(f"--warmup + --seconds must stay under {self.file_seconds - 1} s (the counter file's length)")
        video, audio = ensure_cache(self.file_seconds)
        self.aus = access_units(split_annexb(video.read_bytes()))
        self.opus = ogg_packets(audio.read_bytes())[2:]
        log(f"{len(self.aus)} access units, {len(self.opus)} Opus packets")
        self.sender_onsets = click_onsets(decode_opus(self.opus, self.workdir, "sender"))
        expected = click_positions(self.file_seconds * SAMPLE_RATE)
        if abs(len(self.sender_onsets) - len(expected)) > 2:
            raise BenchError(f"found {len(self.sender_onsets)} clicks in the sender's own Opus, {len(expected)} expected")
        self.nginx = Nginx(self.workdir)
        if self.lipsync_seconds:
            clip_seconds = lipsync.SMOKE_CLIP_SECONDS if self.smoke else lipsync.CLIP_SECONDS
            sync = lipsync.LipSync(self.tutti, self.workdir, self.nginx, self.lipsync_seconds, clip_seconds)
            try:
                self.lipsync = sync.execute()
            finally:
                sync.stop()
        plan = [] if self.args.lipsync_only else [(40, True)] * (1 if self.smoke else self.args.runs)
        if plan and not self.smoke:
            plan += [(j, False) for j in self.args.compare_jitter]
        for i, (jb, posts) in enumerate(plan, 1):
            run = Run(self, i, jb, posts)
            try:
                self.runs.append(run.execute())
            finally:
                run.stop()
                for c in run.callers:
                    c.close()
        self.elapsed = time.monotonic() - started
        if self.smoke:
            return self.smoke_verdict()
        self.write_results(started)
        return 0

    def smoke_verdict(self) -> int:
        fails = []
        if self.lipsync:
            fails += lipsync.verdict(self.lipsync)
            print("smoke: lip sync " + "; ".join(f"{name} {s['median']:+.0f} ms over {s['n']} flashes"
                                                 for name, s in lipsync.summary(self.lipsync).items() if s["n"]))
        if self.runs:
            fails += self.latency_verdict(self.runs[0])
        if fails:
            print("SMOKE FAILED:\n  " + "\n  ".join(fails))
            return 1
        print(f"smoke ok in {self.elapsed:.0f} s")
        return 0

    @staticmethod
    def latency_verdict(r: dict) -> list[str]:
        fails = []
        v, a = r["video_ms"], r["audio_ms"]
        if len(v) < 50 or not 0 < pct(v, 50) < 2000:
            fails.append(f"video: {len(v)} frames paired, p50 {pct(v, 50):.1f} ms")
        if len(a) < 10 or not 0 < pct(a, 50) < 2000:
            fails.append(f"audio: {len(a)} clicks paired, p50 {pct(a, 50):.1f} ms")
        joins = [j.get("idr_ms") for j in r["joins"]]
        if any(x is None for x in joins):
            fails.append(f"a joining caller got no decodable frame: {r['joins']}")
        rtmp = [x.get("keyframe_ms") for x in r["rtmp"]]
        if any(x is None for x in rtmp):
            fails.append(f"an RTMP output gave no decodable frame: {r['rtmp']}")
        print(f"smoke: video p50 {pct(v, 50):.1f} ms over {len(v)} frames, audio p50 {pct(a, 50):.1f} ms over "
              f"{len(a)} clicks, caller POST -> IDR {joins} ms, RTMP POST -> keyframe {rtmp} ms")
        return fails

    def cleanup(self) -> None:
        Proc.kill_all()
        if self.args.keep:
            log(f"kept {self.workdir}")
        else:
            import shutil
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- RESULTS.md

    def write_results(self, started: float) -> None:
        header = run_header(f"python3 bench/latency.py {' '.join(sys.argv[1:])}".strip(), started,
                            self.commit, self.dirty, self.tutti)
        if self.lipsync:
            write_section("lipsync", "## 3b. Lip sync on air (`latency.py --lipsync-seconds`)\n\n"
                          + "\n".join(header + [""] + lipsync.section(self.lipsync, self.lipsync_seconds)))
        if self.runs:
            self.write_latency(header)

    def write_latency(self, header: list[str]) -> None:
        main = [r for r in self.runs if r["jitter_ms"] == 40]
        extra = [r for r in self.runs if r["jitter_ms"] != 40]

        def across(values: list[float]) -> str:
            if not values:
                return "–"
            return f"**{statistics.median(values):.0f}** ({min(values):.0f}–{max(values):.0f})"

        def row(name: str, per_run: list[list[float]], target: str) -> str:
            counts = [len(x) for x in per_run]
            per_run = [x for x in per_run if x]
            if not per_run:
                return f"| {name} | – | – | – | 0 | {target} |"
            return (f"| {name} | {across([pct(x, 50) for x in per_run])} | {across([pct(x, 95) for x in per_run])} "
                    f"| {min(min(x) for x in per_run):.0f}–{max(max(x) for x in per_run):.0f} "
                    f"| {'/'.join(map(str, counts))} | {target} |")

        joins = [[j["idr_ms"] for j in r["joins"] if "idr_ms" in j] for r in main]
        join_resp = [[j["response_ms"] for j in r["joins"]] for r in main]
        join_first = [[j["first_video_ms"] for j in r["joins"] if "first_video_ms" in j] for r in main]
        rtmp = [[x["keyframe_ms"] for x in r["rtmp"] if "keyframe_ms" in x] for r in main]
        rtmp_first = [[x["first_video_ms"] for x in r["rtmp"] if "first_video_ms" in x] for r in main]
        rtmp_resp = [[x["response_ms"] for x in r["rtmp"]] for r in main]
        failures = sum(1 for r in main for j in r["joins"] if "idr_ms" not in j) + \
            sum(1 for r in main for x in r["rtmp"] if "keyframe_ms" not in x)
        v = [r["video_ms"] for r in main]
        a = [r["audio_ms"] for r in main]
        lines = list(header)

        def med(per_run: list[list[float]]) -> str:
            meds = [statistics.median(x) for x in per_run if x]
            return f"{statistics.median(meds):.0f}" if meds else "–"

        lines += [
            f"- tutti command line (last run): `{' '.join(self.tutti_argv)}`",
            f"- workload: 2 callers (A, B) in one composition 1280x720 {FPS} fps, 2500 kbit/s, 2-cell grid, "
            f"one RTMP output to a local nginx-rtmp; each caller sends 1280x720 {FPS} fps H.264 Constrained "
            f"Baseline ~{CALLER_VIDEO_KBPS} kbit/s (keyframe every {KEYFRAME_FRAMES} frames) with a frame counter, "
            f"and Opus 48 kHz 20 ms mono with a 5 ms 1 kHz click every 160–240 ms; "
            f"{len(main)} runs x {self.seconds:.0f} s measured after {self.warmup:.0f} s of warm-up, "
            f"both directions (A->B and B->A) pooled per run",
            "",
            "### Latency, default jitter buffer (`--jitter-buffer-ms 40`)",
            "",
            "Median of the per-run figures, (min–max over runs), in ms.",
            "",
            "| measure | p50 | p95 | min–max (all samples) | samples per run | target |",
            "|---|---|---|---|---|---|",
            row("video: RTP send (AU's last packet) -> return composite AU's last packet", v, "p50 ≤ 80"),
            row("audio: click in sent Opus -> click in the mix-minus", a, "p50 ≤ 40"),
            row("caller POST -> first decodable return frame (IDR + SPS/PPS, last packet)", joins, "≤ 1000"),
            row("RTMP output POST -> first decodable frame at an RTMP player on nginx", rtmp, "≤ 1000"),
            "",
            "Parts of the start-up figures (medians of run medians, ms): "
            f"caller POST answered after {med(join_resp)}, its first return video packet after {med(join_first)}; "
            f"RTMP output POST answered after {med(rtmp_resp)}, first FLV video message (sequence header) at the "
            f"player after {med(rtmp_first)}."
            + (f" **{failures} of {sum(len(r['joins']) + len(r['rtmp']) for r in main)} start-up attempts got no "
               f"decodable frame within the time limit ({JOIN_TIMEOUT:.0f} s for a caller, {RTMP_TIMEOUT:.0f} s "
               "for RTMP): see below.**" if failures else ""),
        ]
        if extra:
            lines += ["", "### Comparison: other jitter buffers (one run each, latency only)", "",
                      "| `--jitter-buffer-ms` | video p50 | video p95 | audio p50 | audio p95 | frames / clicks |",
                      "|---|---|---|---|---|---|"]
            for r in extra:
                lines.append(f"| {r['jitter_ms']} | {pct(r['video_ms'], 50):.0f} | {pct(r['video_ms'], 95):.0f} | "
                             f"{pct(r['audio_ms'], 50):.0f} | {pct(r['audio_ms'], 95):.0f} | "
                             f"{len(r['video_ms'])} / {len(r['audio_ms'])} |")
        lines += ["", "### Per run", "",
                  "| run | jitter buffer | video p50 / p95 | audio p50 / p95 | frames shown / sent | clicks heard / sent "
                  "| AUs read | packets missing | caller POST p50 / p95 | RTMP POST p50 / p95 |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.runs:
            dirs = [k for k in r if k.startswith("video ")]
            shown = sum(r[k]["shown"] for k in dirs)
            sent = sum(r[k]["sent"] for k in dirs)
            read = f"{sum(r[k]['valid'] for k in dirs)}/{sum(r[k]['aus'] for k in dirs)}"
            miss = sum(r[k]["missing_packets"] for k in r if k.startswith(("video ", "audio ")))
            clicks = f"{len(r['audio_ms'])}/{sum(r[k]['clicks_sent'] for k in r if k.startswith('audio '))}"
            jn = [j["idr_ms"] for j in r.get("joins", []) if "idr_ms" in j]
            rt = [x["keyframe_ms"] for x in r.get("rtmp", []) if "keyframe_ms" in x]
            lines.append(
                f"| {r['run']} | {r['jitter_ms']} ms | {pct(r['video_ms'], 50):.1f} / {pct(r['video_ms'], 95):.1f} | "
                f"{pct(r['audio_ms'], 50):.1f} / {pct(r['audio_ms'], 95):.1f} | {shown}/{sent} | {clicks} | {read} | "
                f"{miss} | " + (f"{pct(jn, 50):.0f} / {pct(jn, 95):.0f}" if jn else "–") + " | "
                + (f"{pct(rt, 50):.0f} / {pct(rt, 95):.0f}" if rt else "–") + " |")
        stalled = [r for r in self.runs if r.get("return_video_stalled")]
        if stalled or failures:
            lines += ["", "### Failures seen", ""]
            for r in self.runs:
                bad_j = [i for i, j in enumerate(r.get("joins", [])) if "idr_ms" not in j]
                bad_r = [i for i, x in enumerate(r.get("rtmp", [])) if "keyframe_ms" not in x]
                if bad_j or bad_r or r.get("return_video_stalled"):
                    lines.append(f"- run {r['run']}: joins without a return frame: {bad_j or 'none'} (of "
                                 f"{len(r.get('joins', []))}, each one joining then leaving); RTMP outputs without a "
                                 f"frame: {bad_r or 'none'}; return video to A/B stalled at the end: "
                                 f"{r.get('return_video_stalled') or 'no'}")
        lines += ["", "### What limits it", ""] + self.findings(main, extra)
        write_section("latency", "## 3. Latency and start-up times (`latency.py`)\n\n" + "\n".join(lines))

    def findings(self, main: list[dict], extra: list[dict]) -> list[str]:
        vp50 = [pct(r["video_ms"], 50) for r in main]
        ap50 = [pct(r["audio_ms"], 50) for r in main]
        vid, aud = statistics.median(vp50), statistics.median(ap50)
        spread = statistics.median([pct(r["video_ms"], 95) - pct(r["video_ms"], 5) for r in main])
        aspread = statistics.median([pct(r["audio_ms"], 95) - pct(r["audio_ms"], 5) for r in main])
        slopes = []
        for r in extra:
            dv = (pct(r["video_ms"], 50) - vid) / (r["jitter_ms"] - 40)
            da = (pct(r["audio_ms"], 50) - aud) / (r["jitter_ms"] - 40)
            slopes.append((r["jitter_ms"], pct(r["video_ms"], 50), pct(r["audio_ms"], 50), dv, da))
        jb = "; ".join(f"`--jitter-buffer-ms {j}`: video p50 {v:.0f} ms, audio p50 {a:.0f} ms "
                       f"({dv:+.2f} and {da:+.2f} ms per ms of jitter buffer against the 40 ms runs)"
                       for j, v, a, dv, da in slopes)
        out = [
            f"- **Video** p50 {vid:.0f} ms (per run {', '.join(f'{x:.0f}' for x in vp50)}). Within one run the "
            f"figures are tight (p95 - p5 = {spread:.0f} ms, median over runs) but the runs differ: the sender's "
            "30 fps frame clock and the compositor's 30 fps output clock keep a fixed phase for a whole run, "
            "and a frame waits for the next output tick, 0–33 ms, set by chance when the run starts. The rest "
            "is the caller's decode, the scale into the cell, the composite and the x264 zerolatency encode of "
            "1280x720 and the payloader. The jitter buffer is not in the path when nothing is lost: "
            "rtpjitterbuffer pushes in-order packets at once (its latency only bounds the wait for a missing "
            "one) and the compositor, a live aggregator, composes as soon as every input has a frame; its "
            "deadline (jitter buffer + 20 ms) only matters for a late caller."
            + (f" Evidence: {jb}." if slopes else ""),
            f"- **Audio** p50 {aud:.0f} ms (per run {', '.join(f'{x:.0f}' for x in ap50)}; target 40). Within a "
            f"run the spread is small (p95 - p5 = {aspread:.0f} ms, median over runs), between runs the p50 moves "
            "by steps: a state set at start-up and kept for the run, like the video phase. The path: the caller's "
            "20 ms packet, the jitter buffer (again not waiting when nothing is lost)"
            + (f" ({jb})" if slopes else "")
            + ", Opus decode, the mixer (one thread of Tutti's that takes a 20 ms block per caller every 20 ms, "
            "src/media/mixer.rs; its tick moves up to about 5 ms after the block of the caller closest to late "
            "is there, so the other caller's block waits that plus the two callers' phase difference, 0–20 ms, "
            "set when they start sending, and a caller whose block once came late keeps one 20 ms block in "
            "reserve), then the Opus encode (20 ms frames and the codec's ~6.5 ms look-ahead). Both ends are "
            "timed per packet, so the sender's own 20 ms of packetization is not counted: what exceeds the wait "
            "for the tick + look-ahead + a few ms of decode/encode is audio queued inside Tutti.",
        ]
        joins = [j for r in main for j in r["joins"] if "idr_ms" in j]
        if joins:
            same = sum(1 for j in joins if j["idr_ms"] - j.get("first_video_ms", 0) < 1)
            out.append(
                f"- **Caller POST -> first return frame**: the POST is answered after "
                f"{statistics.median(j['response_ms'] for j in joins):.0f} ms (p50); the first return packet "
                f"arrives {statistics.median(j['first_video_ms'] - j['response_ms'] for j in joins):.0f} ms "
                f"later, and in {same}/{len(joins)} joins it already belongs to the IDR (Tutti asks its encoder "
                "for a keyframe for the newcomer): the time goes into building the caller's branch and the "
                "forced keyframe, not into waiting for a periodic one.")
        rtmp = [x for r in main for x in r["rtmp"] if "keyframe_ms" in x]
        pub = [x for r in main for x in r.get("publisher_live_ms", [])]
        if rtmp:
            out.append(
                f"- **RTMP output POST -> first decodable frame**: p50 "
                f"{statistics.median(x['keyframe_ms'] for x in rtmp):.0f} ms. Tutti's log puts \"RTMP publisher "
                f"live\" (TCP connect, RTMP handshake, connect, publish to nginx) "
                + (f"{statistics.median(pub):.0f} ms (p50) " if pub else "")
                + "after \"output added\"; then the publisher asks the shared broadcast encoder for a keyframe, "
                "and metadata, sequence header and that keyframe reach the player together (the player is a "
                "~100-line RTMP client that timestamps each message when its last byte is received, so its "
                "own contribution is the loopback hop from nginx: well under 1 ms).")
        return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30, help="measured seconds per run (≥ 300 frames, clicks)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--joins", type=int, default=10, help="caller POST timings per run")
    ap.add_argument("--rtmp-posts", type=int, default=10, help="RTMP output POST timings per run")
    ap.add_argument("--compare-jitter", type=lambda s: [int(x) for x in s.split(",") if x], default=[10, 200],
                    help="extra one-run latency comparisons at these --jitter-buffer-ms (comma list; '' for none)")
    ap.add_argument("--lipsync-seconds", type=int, default=60,
                    help="seconds of each output recorded for the lip-sync measure (0: skip it; "
                         f"{SMOKE_LIPSYNC_SECONDS:.0f} at most with --smoke)")
    ap.add_argument("--lipsync-only", action="store_true", help="measure only lip sync (e.g. for 30 min: 1800)")
    ap.add_argument("--smoke", action="store_true", help="one short run that checks the figures are sane (CI)")
    ap.add_argument("--tutti", help="the tutti binary (default: target/release/tutti, built if missing)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, captured streams)")
    args = ap.parse_args()
    if args.runs < 1 or args.seconds < 1 or args.warmup < 0 or args.joins < 1 or args.rtmp_posts < 1:
        ap.error("--runs, --seconds, --joins, --rtmp-posts must be >= 1, --warmup >= 0")
    if args.lipsync_seconds < 0 or (args.lipsync_only and args.lipsync_seconds < lipsync.SETTLE_SECONDS + 5):
        ap.error(f"--lipsync-seconds must be >= 0, and >= {lipsync.SETTLE_SECONDS + 5:.0f} with --lipsync-only")

    return run_bench(lambda: Bench(args), args.smoke, SMOKE_DEADLINE)


if __name__ == "__main__":
    sys.exit(main())
