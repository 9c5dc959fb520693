"""Shared pieces of Tutti's benchmarks: child processes that die with the
script, CPU accounting from /proc, free loopback ports, nginx-rtmp, an RTMP
fps watcher, the REST/SDP calls a caller makes, and the sectioned RESULTS.md.

Only the standard library. See bench/README.md.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import random
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE = BENCH_DIR / ".cache"
RESULTS = BENCH_DIR / "RESULTS.md"
NGINX_RTMP_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
CLK_TCK = os.sysconf("SC_CLK_TCK")

# Payload types offered (and used by the light senders).
PT_H264 = 96
PT_OPUS = 111

# The callers' pre-encoded files (see Workload, ensure_cache).
CALLERS = 4            # distinct files; benchmarks with more callers cycle them
FPS = 30
CALLER_VIDEO_KBPS = 1500
CALLER_OPUS_KBPS = 32
KEYFRAME_FRAMES = 60
# Tones per caller, so the mixes are not silence.
TONES_HZ = [440, 554, 659, 880]

# Bounds on every wait.
HTTP_TIMEOUT = 10.0
STOP_GRACE = 5.0
NGINX_READY_TIMEOUT = 5.0
CARGO_TIMEOUT = 1800.0
ENCODE_TIMEOUT = 600.0      # pre-encoding one cache file
WATCHER_RESTART_AFTER = 12.0  # a player with no frame yet is restarted after this long

class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- processes

# Even if this script dies of SIGKILL, the kernel kills its children (util-linux's
# setpriv sets PR_SET_PDEATHSIG, then execs the command: same pid, nothing in between).
PDEATHSIG = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []


class Proc:
    """A child in its own process group, output to a log file. Tracked so that
    `kill_all` can end every one of them."""

    live: list["Proc"] = []

    def __init__(self, name: str, argv: list[str], logfile: Path, stdout_pipe: bool = False,
                 env: dict | None = None, cwd: Path | None = None, stop_signal: int = signal.SIGTERM):
        self.name = name
        self.argv = argv
        self.logfile = logfile
        self.stop_signal = stop_signal
        self._log = open(logfile, "wb")
        self.popen = subprocess.Popen(
            PDEATHSIG + argv, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE if stdout_pipe else self._log,
            stderr=self._log, start_new_session=True, env=env, cwd=cwd)
        self.pid = self.popen.pid
        Proc.live.append(self)

    def alive(self) -> bool:
        return self.popen.poll() is None

    def _signal_group(self, sig: int) -> None:
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def stop(self, grace: float = STOP_GRACE) -> None:
        if self.alive():
            self._signal_group(self.stop_signal)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                log(f"{self.name} (pid {self.pid}) ignored {signal.Signals(self.stop_signal).name} "
                    f"for {grace:.0f} s: SIGKILL")
        # Whatever is left of the group (the leader's children too), then reap.
        self._signal_group(signal.SIGKILL)
        try:
            self.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log(f"{self.name} (pid {self.pid}) did not die after SIGKILL")
        if self.popen.stdout:
            self.popen.stdout.close()
        self._log.close()
        if self in Proc.live:
            Proc.live.remove(self)

    def tail(self, lines: int = 25) -> str:
        return tail_file(self.logfile, lines)

    @classmethod
    def kill_all(cls) -> None:
        for p in list(cls.live):
            p.stop(grace=2.0)


def tail_file(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(f"    | {line}" for line in text[-lines:])


def run_checked(argv: list[str], timeout: float, cwd: Path | None = None) -> str:
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                           stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"timed out after {timeout:.0f} s: {' '.join(argv)}") from e
    if r.returncode != 0:
        raise BenchError(f"failed ({r.returncode}): {' '.join(argv)}\n{r.stderr[-3000:]}")
    return r.stdout


def cpu_ticks(pid: int) -> int:
    """utime + stime of every thread of `pid`, in clock ticks."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def thread_ticks(pid: int) -> dict[int, tuple[str, int]]:
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                raw = f.read()
            comm = raw[raw.index("(") + 1: raw.rindex(")")]
            fields = raw.rsplit(")", 1)[1].split()
            out[int(tid)] = (comm, int(fields[11]) + int(fields[12]))
        except (OSError, ValueError):
            pass
    return out


def thread_group(comm: str) -> str:
    """Folds thread names that differ only by an id or a counter (the
    callers' threads) into one row. Linux keeps 15 characters of a thread
    name; GStreamer names a streaming thread after its element and pad, Tutti
    names elements comp-{id}-..., caller-{id}-..., enc-{codec}-{id}-...; x264's
    and libavcodec's workers inherit the name of the thread that created them."""
    return re.sub(r"(?<=-)[0-9a-f]{4,}\b", "{id}", comm)


def machine_jiffies() -> tuple[int, int, int]:
    """(busy, total, steal) jiffies of all cores from /proc/stat; busy includes
    steal (time the hypervisor gave to other guests)."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]  # idle + iowait
    total = sum(parts[:8])      # guest time is already inside user
    return total - idle, total, parts[7]


# --------------------------------------------------------------------------- ports

def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def udp_range_free(first: int, count: int) -> bool:
    socks = []
    try:
        for port in range(first, first + count):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        for s in socks:
            s.close()


def free_udp_range(count: int) -> tuple[int, int]:
    """A range below the ephemeral ports (32768+), so that no port picked by the
    kernel for some other socket lands in it after the check."""
    for _ in range(200):
        first = random.randrange(20000, 32000 - count, 2)
        if udp_range_free(first, count):
            return first, first + count - 1
    raise BenchError("no free UDP port range")


def bind_rtp_pair() -> tuple[socket.socket, socket.socket]:
    for _ in range(200):
        port = random.randrange(33000, 60000, 2)
        a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            a.bind(("127.0.0.1", port))
            b.bind(("127.0.0.1", port + 1))
            for s in (a, b):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            return a, b
        except OSError:
            a.close()
            b.close()
    raise BenchError("no free UDP port pair")


class Drain:
    """Binds the ports a caller's offer advertises and drains (counts) what
    Tutti sends back there: composite H.264, mix-minus Opus, RTCP.

    Per port: packets, bytes, RTP marker bits (one per video frame). A port
    bound with `timing=True` also keeps (arrival, RTP timestamp) of its marked
    packets (video) or of every packet (`every=True`, audio), so that
    `delay_growth` can tell whether the stream falls behind the wall clock.
    epoll (selectors), so it drains thousands of sockets."""

    TIMING_KEEP = 6000  # samples kept per timed port

    def __init__(self):
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.bytes: dict[int, int] = {}
        self.packets: dict[int, int] = {}
        self.markers: dict[int, int] = {}
        self.timing: dict[int, list[tuple[float, int]]] = {}
        self._every: set[int] = set()
        self._last_ts: dict[int, tuple[int, int]] = {}   # port -> (last raw ts, wraps * 2^32)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sel = selectors.DefaultSelector()
        self._lock = threading.Lock()

    def pair(self, timing: bool = False, every: bool = False) -> tuple[int, int]:
        a, b = bind_rtp_pair()
        with self._lock:
            self.pairs.append((a, b))
            for s in (a, b):
                port = s.getsockname()[1]
                self.bytes[port] = 0
                self.packets[port] = 0
                self.markers[port] = 0
                s.setblocking(False)
                self._sel.register(s, selectors.EVENT_READ, port)
            if timing:
                self.timing[a.getsockname()[1]] = []
                if every:
                    self._every.add(a.getsockname()[1])
        return a.getsockname()[1], b.getsockname()[1]

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                events = self._sel.select(0.2)
            except (OSError, ValueError):
                if self._stop.is_set():
                    return
                raise
            now = time.monotonic()
            for key, _ in events:
                s, port = key.fileobj, key.data
                timed = self.timing.get(port)
                while True:
                    try:
                        data = s.recv(65536)
                    except (BlockingIOError, OSError):
                        break
                    self.bytes[port] += len(data)
                    self.packets[port] += 1
                    if len(data) >= 12 and data[0] >> 6 == 2 and not 72 <= (data[1] & 0x7f) <= 79:
                        marker = data[1] & 0x80
                        if marker:
                            self.markers[port] += 1
                        if timed is not None and (marker or port in self._every):
                            ts = int.from_bytes(data[4:8], "big")
                            last, base = self._last_ts.get(port, (ts, 0))
                            if ts < last and last - ts > 1 << 31:
                                base += 1 << 32
                            elif ts > last and ts - last > 1 << 31:
                                base -= 1 << 32   # a late packet from before a wrap
                            self._last_ts[port] = (ts, base)
                            timed.append((now, ts + base))
                            if len(timed) > self.TIMING_KEEP:
                                del timed[:len(timed) - self.TIMING_KEEP // 2]

    def snapshot(self) -> dict[int, int]:
        return dict(self.bytes)

    def counts(self) -> tuple[dict[int, int], dict[int, int], dict[int, int]]:
        """(bytes, packets, markers) per port."""
        return dict(self.bytes), dict(self.packets), dict(self.markers)

    def delay_growth(self, port: int, t0: float, t1: float, clock: int, edge: float = 2.0) -> float | None:
        """How much later, in seconds, the stream on `port` arrived relative to
        its own RTP timestamps at the end of [t0, t1] than at its start: the
        least transit delay (arrival - timestamp / clock) over the last `edge`
        seconds minus that over the first. About 0 for a stream that keeps
        real time; a growing queue upstream makes it positive. None without
        samples at both ends."""
        samples = [x for x in list(self.timing.get(port, [])) if t0 <= x[0] <= t1]
        head = [t - ts / clock for t, ts in samples if t <= t0 + edge]
        tail = [t - ts / clock for t, ts in samples if t >= t1 - edge]
        if not head or not tail:
            return None
        return min(tail) - min(head)

    def close(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)
        for pair in self.pairs:
            for s in pair:
                s.close()
        self._sel.close()


# --------------------------------------------------------------------------- nginx and the watcher

class Nginx:
    def __init__(self, workdir: Path):
        if not Path(NGINX_RTMP_MODULE).exists():
            raise BenchError(f"{NGINX_RTMP_MODULE} missing: run scripts/install-deps.sh")
        self.dir = workdir / "nginx"
        self.dir.mkdir()
        self.port = free_tcp_port()
        (self.dir / "nginx.conf").write_text(
            f"load_module {NGINX_RTMP_MODULE};\n"
            "daemon off;\nmaster_process off;\nworker_processes 1;\n"
            f"error_log {self.dir}/error.log info;\npid {self.dir}/nginx.pid;\n"
            "events { worker_connections 64; }\n"
            f"rtmp {{ server {{ listen 127.0.0.1:{self.port}; application live {{ live on; }} }} }}\n")
        self.proc = Proc("nginx", ["nginx", "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"),
                                   "-e", str(self.dir / "error.log")], self.dir / "stderr.log")
        deadline = time.monotonic() + NGINX_READY_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                break
            except OSError:
                if not self.proc.alive() or time.monotonic() > deadline:
                    raise BenchError(f"nginx did not listen on {self.port}\n{self.proc.tail()}")
                time.sleep(0.05)

    def url(self, key: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}"


class Watcher:
    """ffmpeg playing the composite from nginx (stream copy, no decode) and
    reporting its frame count twice a second: the output frame rate, as
    received by a third party. With `record`, it also keeps what it received
    (`recording`), for the picture-quality score."""

    def __init__(self, url: str, workdir: Path, tag: str, record: bool = False):
        self.url = url
        self.record = record
        self.workdir = workdir
        self.tag = tag
        self.samples: list[tuple[float, int]] = []
        self.lock = threading.Lock()
        self.proc: Proc | None = None
        self.base = 0      # frames counted by earlier (restarted) watcher processes
        self.restarts = 0
        self.generation = 0
        self._start()

    def _start(self) -> None:
        argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info", "-nostats",
                "-progress", "pipe:1", "-stats_period", "0.5",
                "-i", self.url, "-map", "0", "-c", "copy"]
        # Matroska survives the SIGKILL that stops the watcher: no index needed to read it.
        argv += ["-f", "matroska", str(self.recording)] if self.record else ["-f", "null", "-"]
        # SIGKILL to stop: it has nothing to finish, and a blocked RTMP read ignores SIGTERM.
        self.proc = Proc(f"watcher-{self.tag}", argv, self.workdir / f"watcher-{self.tag}-{self.restarts}.log",
                         stdout_pipe=True, stop_signal=signal.SIGKILL)
        self.started = time.monotonic()
        threading.Thread(target=self._read, args=(self.proc, self.generation), daemon=True).start()

    def _read(self, proc: Proc, generation: int) -> None:
        last = 0
        try:
            for line in proc.popen.stdout:
                line = line.decode(errors="replace").strip()
                if line.startswith("frame="):
                    try:
                        last = int(line[6:])
                    except ValueError:
                        continue
                    with self.lock:
                        if generation == self.generation:
                            self.samples.append((time.monotonic(), self.base + last))
        except (ValueError, OSError):
            pass

    def poll(self) -> None:
        """Restarts the player if it gave up, or if it has waited for a first
        frame for a long time (a player stuck before the publisher came)."""
        stuck = self.frames() == 0 and time.monotonic() - self.started > WATCHER_RESTART_AFTER
        if self.proc and (stuck or not self.proc.alive()):
            log(f"watcher-{self.tag}: {'no frame yet' if stuck else 'exited'}, restarting it")
            with self.lock:
                self.base = self.samples[-1][1] if self.samples else 0
                self.generation += 1
            self.proc.stop(grace=1)
            self.restarts += 1
            time.sleep(0.5)
            self._start()

    def frames(self) -> int:
        with self.lock:
            return self.samples[-1][1] if self.samples else 0

    def frames_at(self, t: float) -> tuple[float, int]:
        """The progress report closest to monotonic time `t`."""
        with self.lock:
            if not self.samples:
                return t, 0
            return min(self.samples, key=lambda s: abs(s[0] - t))

    @property
    def recording(self) -> Path:
        """What the current player writes, with `record`: the stream as it came, from its first frame."""
        return self.workdir / f"watcher-{self.tag}-{self.restarts}.mkv"

    def has_streams(self) -> tuple[bool, bool]:
        text = ""
        for i in range(self.restarts + 1):
            try:
                text += (self.workdir / f"watcher-{self.tag}-{i}.log").read_text(errors="replace")
            except OSError:
                pass
        return ("Video: h264" in text, "Audio: aac" in text)

    def stop(self) -> None:
        if self.proc:
            self.proc.stop(grace=2)


# --------------------------------------------------------------------------- the media files

@dataclass
class Workload:
    width: int           # caller picture = canvas size
    height: int
    duration: int        # seconds of each cached file
    files: list[Path] = field(default_factory=list)

    @property
    def cell(self) -> tuple[int, int]:
        return self.width // 2, self.height // 2


def ensure_cache(w: Workload) -> None:
    """Pre-encodes the callers' files once (bench/.cache/, gitignored)."""
    CACHE.mkdir(exist_ok=True)
    for i in range(CALLERS):
        path = CACHE / f"caller{i}-{w.width}x{w.height}-{w.duration}s-v1.mkv"
        w.files.append(path)
        if path.exists():
            continue
        log(f"pre-encoding {path.name} (once; cached)")
        # testsrc2 moves (a scrolling gradient bar, bouncing dots, a checkerboard),
        # a different hue per caller, and light temporal noise like a camera's,
        # so that the encoder really spends ~1.5 Mbit/s and decoding has work to do.
        video = (f"testsrc2=size={w.width}x{w.height}:rate={FPS},hue=h={i * 90},"
                 f"noise=alls=6:allf=t")
        tmp = path.with_suffix(".tmp.mkv")
        run_checked(
            ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
             "-f", "lavfi", "-i", video,
             "-f", "lavfi", "-i", f"sine=frequency={TONES_HZ[i]}:sample_rate=48000",
             "-t", str(w.duration), "-map", "0:v", "-map", "1:a",
             "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast",
             "-b:v", f"{CALLER_VIDEO_KBPS}k", "-maxrate", f"{CALLER_VIDEO_KBPS}k",
             "-bufsize", f"{CALLER_VIDEO_KBPS}k", "-g", str(KEYFRAME_FRAMES),
             "-keyint_min", str(KEYFRAME_FRAMES), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
             "-c:a", "libopus", "-b:a", f"{CALLER_OPUS_KBPS}k", "-ac", "2", "-frame_duration", "20",
             str(tmp)], timeout=ENCODE_TIMEOUT)
        tmp.rename(path)


def describe_file(path: Path) -> str:
    out = run_checked(["ffprobe", "-v", "error", "-show_entries",
                       "format=duration,bit_rate:stream=codec_name,profile,width,height,r_frame_rate,channels",
                       "-of", "json", str(path)], timeout=30)
    info = json.loads(out)
    v = next(s for s in info["streams"] if s["codec_name"] == "h264")
    a = next(s for s in info["streams"] if s["codec_name"] == "opus")
    kbps = int(info["format"]["bit_rate"]) / 1000
    return (f"{path.name}: H.264 {v['profile']} {v['width']}x{v['height']} {v['r_frame_rate']} fps, "
            f"Opus {a['channels']} ch, {float(info['format']['duration']):.0f} s, {kbps:.0f} kbit/s overall")


def sender_argv(path: Path, answer: dict[str, dict], headers_in_band: bool = False) -> list[str]:
    """One light sender per caller: no decoding, no encoding; the file's packets
    are replayed in real time (-re) as RTP (-c copy). h264_mp4toannexb puts
    SPS/PPS in band before every IDR, as a real endpoint does (there is no SDP
    to carry sprop-parameter-sets towards Tutti), unless the file already
    carries them (`headers_in_band`, x264's repeat-headers): ffmpeg 5.1's
    filter fails at -stream_loop's loop and the video stops after one pass."""
    v, a = answer["video"], answer["audio"]
    annexb = [] if headers_in_band else ["-bsf:v", "h264_mp4toannexb"]
    return ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re", "-stream_loop", "-1",
            "-i", str(path),
            "-map", "0:v", "-c", "copy", *annexb, "-payload_type", str(v["pt"]),
            "-f", "rtp", f"rtp://{v['addr']}:{v['rtp']}?rtcpport={v['rtcp']}&pkt_size=1200",
            "-map", "0:a", "-c", "copy", "-payload_type", str(a["pt"]),
            "-f", "rtp", f"rtp://{a['addr']}:{a['rtp']}?rtcpport={a['rtcp']}"]


# --------------------------------------------------------------------------- REST and SDP

def http(method: str, url: str, body: bytes | None = None, ctype: str = "application/json") -> tuple[int, str]:
    req = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        req.add_header("content-type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def offer_sdp(name: str, audio: tuple[int, int], video: tuple[int, int], session: int) -> str:
    lines = [
        "v=0", f"o=- {session} 1 IN IP4 127.0.0.1", f"s={name}", "c=IN IP4 127.0.0.1", "t=0 0",
        f"m=audio {audio[0]} RTP/AVP {PT_OPUS}", f"a=rtpmap:{PT_OPUS} opus/48000/2",
        f"a=fmtp:{PT_OPUS} minptime=10;useinbandfec=1", "a=ptime:20", f"a=rtcp:{audio[1]}", "a=sendrecv",
        f"m=video {video[0]} RTP/AVPF {PT_H264}", f"a=rtpmap:{PT_H264} H264/90000",
        f"a=fmtp:{PT_H264} profile-level-id=42e01f;packetization-mode=1",
        f"a=rtcp-fb:{PT_H264} nack", f"a=rtcp-fb:{PT_H264} nack pli", f"a=rtcp-fb:{PT_H264} ccm fir",
        f"a=rtcp:{video[1]}", "a=sendrecv",
    ]
    return "\r\n".join(lines) + "\r\n"


def parse_answer(sdp: str) -> dict[str, dict]:
    """media -> {addr, rtp, rtcp, pt, usedtx} for each accepted m= line."""
    session_addr = None
    media: dict[str, dict] = {}
    current = None
    for line in sdp.replace("\r\n", "\n").split("\n"):
        if line.startswith("m="):
            kind, port, _proto, *fmts = line[2:].split()
            current = {"rtp": int(port), "pt": int(fmts[0]) if fmts else None, "addr": None, "rtcp": None,
                       "usedtx": False}
            media[kind] = current
        elif line.startswith(f"a=fmtp:{current and current['pt']} ") and current is not None:
            # RFC 7587: the answerer asks the sender for Opus DTX
            current["usedtx"] = "usedtx=1" in line.split(" ", 1)[1].split(";")
        elif line.startswith("c=IN IP4 "):
            addr = line.split()[2].split("/")[0]
            if current is None:
                session_addr = addr
            else:
                current["addr"] = addr
        elif line.startswith("a=rtcp:") and current is not None:
            current["rtcp"] = int(line[7:].split()[0])
        elif line.startswith("a=rtcp-mux") and current is not None:
            current["rtcp"] = current["rtp"]
    for m in media.values():
        m["addr"] = m["addr"] or session_addr
        m["rtcp"] = m["rtcp"] or m["rtp"] + 1
    return {k: v for k, v in media.items() if v["rtp"] != 0}



# --------------------------------------------------------------------------- tutti, the machine, RESULTS.md

def serve_argv(tutti: Path, http_port: int, ports: tuple[int, int], workdir: Path) -> list[str]:
    """`tutti serve` on loopback only: the API on `http_port`, RTP on `ports`,
    the embedded RTMP server on a free port, SIP off (no benchmark calls over
    SIP, and its fixed port 5060 would keep a second instance from starting),
    files under `workdir`; admission by cost off (`--cpu-budget 0`): the
    benchmarks push a node past it on purpose."""
    return [str(tutti), "serve", "--http", f"127.0.0.1:{http_port}",
            "--rtp-ports", f"{ports[0]}-{ports[1]}", "--public-ip", "127.0.0.1", "--rtp-bind", "127.0.0.1",
            "--rtmp-listen", "127.0.0.1:0", "--sip-listen", "", "--hls-dir", str(workdir / "hls"),
            "--recordings", str(workdir / "recordings"), "--pipelines", str(REPO / "pipelines"),
            "--cpu-budget", "0"]


def find_tutti(explicit: str | None, smoke: bool, build: bool) -> Path:
    """The binary to measure: `explicit`; in smoke mode the freshest of the
    release and debug builds (scripts/test.sh has just built the debug one with
    cargo test); else target/release/tutti, built if missing or if `build`."""
    if explicit:
        p = Path(explicit).resolve()
        if not p.exists():
            raise BenchError(f"{p} does not exist")
        return p
    release, debug = REPO / "target/release/tutti", REPO / "target/debug/tutti"
    if smoke:
        found = [p for p in (release, debug) if p.exists()]
        if found:
            return max(found, key=lambda p: p.stat().st_mtime)
        log("no tutti binary: cargo build")
        run_checked(["cargo", "build", "--locked", "--bin", "tutti"], CARGO_TIMEOUT, cwd=REPO)
        return debug
    if build or not release.exists():
        log("cargo build --release")
        run_checked(["cargo", "build", "--release", "--locked", "--bin", "tutti"], CARGO_TIMEOUT, cwd=REPO)
    return release


def machine_line() -> str:
    cpuinfo = open("/proc/cpuinfo").read()
    model = re.search(r"model name\s*:\s*(.*)", cpuinfo)
    mhz = re.search(r"cpu MHz\s*:\s*(.*)", cpuinfo)
    flags = re.search(r"flags\s*:\s*(.*)", cpuinfo)
    avx = " ".join(f for f in ("avx2", "avx512f") if flags and f in flags.group(1).split())
    mem = re.search(r"MemTotal:\s*(\d+)", open("/proc/meminfo").read())
    return (f"{os.cpu_count()} cores, {model.group(1) if model else '?'}"
            f" ({mhz.group(1).strip() if mhz else '?'} MHz, {avx or 'no AVX2'}), "
            f"{int(mem.group(1)) // 1024 if mem else '?'} MiB RAM, {platform.platform()}")


def git_state() -> tuple[str, bool]:
    """HEAD, and whether the sources had uncommitted changes (RESULTS.md,
    which an earlier benchmark of the same session may have just written,
    is not a source)."""
    commit = run_checked(["git", "rev-parse", "HEAD"], 30, cwd=REPO).strip()
    dirty = bool(run_checked(["git", "status", "--porcelain", "--", "src", "pipelines", "Cargo.toml", "Cargo.lock",
                              "bench", ":(exclude)bench/RESULTS.md"], 30, cwd=REPO).strip())
    return commit, dirty


def tool_versions() -> str:
    versions = {
        "ffmpeg": run_checked(["ffmpeg", "-hide_banner", "-version"], 30).splitlines()[0],
        "GStreamer": run_checked(["gst-launch-1.0", "--version"], 30).splitlines()[1],
        "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True, timeout=30).stderr.strip(),
    }
    return "; ".join(f"{k}: {v}" for k, v in versions.items())


def run_header(command: str, started: float, commit: str, dirty: bool, tutti: Path | None) -> list[str]:
    """The lines every benchmark's section opens with: date, machine, commit,
    binary, versions, the exact command."""
    lines = [f"Generated by `{command}` — do not edit by hand; see bench/README.md.", "",
             f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
             f"the command took {(time.monotonic() - started) / 60:.1f} min",
             f"- machine: {machine_line()}",
             f"- load average at the end: {' '.join(open('/proc/loadavg').read().split()[:3])}",
             f"- git commit: `{commit}` (HEAD when the run started)"
             + (" (**uncommitted changes** at run time)" if dirty else "")]
    if tutti is not None:
        built = datetime.datetime.fromtimestamp(tutti.stat().st_mtime, datetime.timezone.utc)
        src_mtime = max((p.stat().st_mtime for p in (REPO / "src").rglob("*.rs")), default=0)
        lines.append(f"- tutti: `{tutti.relative_to(REPO) if tutti.is_relative_to(REPO) else tutti}`, "
                     f"built {built.strftime('%Y-%m-%d %H:%M UTC')}"
                     + (" (**older than the newest src/*.rs**: rebuild for the current code)"
                        if src_mtime > tutti.stat().st_mtime else ""))
    lines.append(f"- {tool_versions()}")
    return lines


RESULTS_TITLE = "# Benchmark results"


def write_section(key: str, body: str) -> None:
    """Replaces benchmark `key`'s section of RESULTS.md (between its markers),
    or appends it: each benchmark rewrites only its own figures."""
    begin, end = f"<!-- begin {key} -->", f"<!-- end {key} -->"
    text = RESULTS.read_text() if RESULTS.exists() else ""
    if not text.startswith(RESULTS_TITLE):
        text = (f"{RESULTS_TITLE}\n\nEach section is written by the benchmark it names (see bench/README.md) "
                "and replaced only by that benchmark's next full run.\n")
    block = f"{begin}\n{body.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    RESULTS.write_text(text)
    log(f"wrote {RESULTS} (section {key})")


# --------------------------------------------------------------------------- running a benchmark

def run_bench(make_bench, smoke: bool, smoke_deadline: float) -> int:
    """Runs `make_bench().run()` with what every benchmark needs around it:
    SIGTERM/SIGINT (and, in smoke mode, a deadline of its own under the one
    scripts/test.sh puts around it) end the run, a BenchError becomes a
    one-line verdict, and every child is stopped whatever happens."""
    def on_signal(signum, _frame):
        raise Interrupted(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    if smoke:
        signal.signal(signal.SIGALRM, on_signal)
        signal.alarm(int(smoke_deadline))
    bench = make_bench()
    try:
        return bench.run()
    except BenchError as e:
        headline, _, details = str(e).partition("\n")
        print(f"{details}\nbench failed: {headline}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"bench interrupted ({e}); stopping every child", file=sys.stderr)
        return 130
    finally:
        signal.alarm(0)
        bench.cleanup()
