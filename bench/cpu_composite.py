#!/usr/bin/env python3
"""Benchmark 1: CPU per composition, side by side, in one run.

Four callers (1280x720 30 fps H.264 Constrained Baseline ~1.5 Mbit/s with
motion + Opus), pre-encoded once into bench/.cache/, composed into one 2x2
1280x720 30 fps picture + one audio mix, H.264 2500 kbit/s + AAC 128 kbit/s,
pushed as FLV to a local nginx-rtmp, by three contenders:

  (a) ffmpeg       4 files (-re) -> scale + xstack + amix -> libx264 + aac -> RTMP
  (b) gst-launch   4 files (sink syncs on the clock) -> avdec_h264 -> videoscale
                   -> compositor + audiomixer -> x264enc + avenc_aac -> flvmux -> rtmpsink
  (c) tutti serve  the whole job: 4 RTP callers (SDP offer/answer), jitter
                   buffers, decode, scale, compose, a return encode (H.264) sent
                   back to every caller, 4 mix-minus Opus encodes, one broadcast
                   encode (H.264 + AAC) to RTMP (nginx) and HLS.

  bench/.cache/callerN.mkv --(light senders: ffmpeg -re -c copy -f rtp)--> tutti
                                                    tutti --RTP--> drained UDP ports
  (a) | (b) | (c) --RTMP--> nginx-rtmp (127.0.0.1:free) --> ffmpeg -c copy -f null (fps watcher)

Measured over a steady window after a warm-up: user+sys CPU seconds of the
contender process (/proc/<pid>/stat utime+stime, all its threads), divided by
the window's wall-clock seconds = CPU seconds per media second, as long as the
output keeps real time (the watcher's output fps says whether it did).
The watcher also records the composite, and after all measurements each
run's picture is scored (SSIM, PSNR) against one reference for all three
(bench/quality.py): cheaper must not mean uglier.

    python3 bench/cpu_composite.py [--runs 3] [--seconds 20] [--warmup 5] [--smoke]
                                   [--no-profile] [--build] [--tutti PATH] [--keep]
                                   [--layout JSON]   (Tutti's layout; a section of its own)
                                   [--caller-size WxH]  (what Tutti's callers send; a section of its own)

Only the standard library. Every child runs in its own process group, dies
with this script (PR_SET_PDEATHSIG via setpriv) and is stopped (SIGTERM or
SIGINT, a bounded grace, then SIGKILL) on exit, error or signal. Everything
listens and sends on 127.0.0.1 only. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from quality import References, composite_quality
from benchlib import (CALLERS, CLK_TCK, FPS, KEYFRAME_FRAMES, REPO, BenchError, Drain, Nginx, Proc, Watcher,
                      Workload, cpu_ticks, describe_file, ensure_cache, find_tutti, free_tcp_port, free_udp_range,
                      git_state, http, log, machine_jiffies, machine_line, offer_sdp, parse_answer, run_bench,
                      run_checked, sender_argv, serve_argv, tail_file, thread_group, thread_ticks, tool_versions, write_section)

# The workload (caller files: see benchlib.Workload).
OUT_VIDEO_KBPS = 2500
OUT_AUDIO_KBPS = 128

# Frames of each run's window scored for picture quality (bench/quality.py).
QUALITY_FRAMES = 300

# Bounds on every wait.
STARTUP_TIMEOUT = 30.0      # first composite frame at nginx after a contender starts
PERF_EXTRA = 15.0
SMOKE_DEADLINE = 110.0       # whole smoke run, cache included (scripts/test.sh bounds it at 120 s)


# --------------------------------------------------------------------------- contenders

@dataclass
class Sample:
    contender: str
    run: int
    cpu_per_s: float            # CPU seconds per wall (= media) second of the contender process
    fps: float                  # composite frames per second received by the watcher
    window_s: float
    machine_busy_cores: float   # all processes, from /proc/stat
    others_cores: float         # busy minus everything this bench started
    senders_per_s: float = 0.0  # (c) only: the 4 light senders together
    helpers_per_s: float = 0.0  # nginx + watcher
    threads: dict[str, float] = field(default_factory=dict)   # per thread name, CPU s/s
    extra: dict = field(default_factory=dict)
    command: str = ""


class Contender:
    """Starts one contender, returns the pid to measure; `stop` ends everything."""
    key = "?"
    title = "?"

    def __init__(self, bench: "Bench", run: int):
        self.bench = bench
        self.run = run
        self.procs: list[Proc] = []
        self.stream_key = f"{self.key}-run{run}"
        self.senders: list[Proc] = []

    def start(self) -> int:
        raise NotImplementedError

    def at_window_start(self) -> None:
        pass

    def at_window_end(self, sample: Sample) -> None:
        pass

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


def shell_quote(argv: list[str]) -> str:
    import shlex
    return " ".join(shlex.quote(a) for a in argv)


class FfmpegComposite(Contender):
    key = "a"
    title = "(a) ffmpeg xstack + amix"

    def argv(self) -> list[str]:
        w = self.bench.workload
        cw, ch = w.cell
        argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "warning"]
        for f in w.files:
            argv += ["-re", "-i", str(f)]
        # Bilinear, as GStreamer's videoscale (Tutti's and (b)'s scaler) defaults to.
        scales = ";".join(f"[{i}:v]scale={cw}:{ch}:flags=bilinear[v{i}]" for i in range(CALLERS))
        graph = (f"{scales};{''.join(f'[v{i}]' for i in range(CALLERS))}"
                 f"xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0[v];"
                 f"{''.join(f'[{i}:a]' for i in range(CALLERS))}amix=inputs=4:normalize=0,"
                 f"aresample=48000,aformat=channel_layouts=stereo[a]")
        argv += ["-filter_complex", graph, "-map", "[v]", "-map", "[a]",
                 "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "baseline",
                 "-b:v", f"{OUT_VIDEO_KBPS}k", "-maxrate", f"{OUT_VIDEO_KBPS}k",
                 "-bufsize", f"{OUT_VIDEO_KBPS}k", "-g", str(KEYFRAME_FRAMES), "-pix_fmt", "yuv420p",
                 "-c:a", "aac", "-b:a", f"{OUT_AUDIO_KBPS}k",
                 "-f", "flv", self.bench.nginx.url(self.stream_key)]
        return argv

    def start(self) -> int:
        argv = self.argv()
        self.command = shell_quote(argv)
        p = Proc("ffmpeg-composite", argv, self.bench.rundir / f"a-run{self.run}.log",
                 stop_signal=signal.SIGINT)
        self.procs.append(p)
        return p.pid


class GstComposite(Contender):
    key = "b"
    title = "(b) gst-launch compositor + audiomixer"

    def argv(self) -> list[str]:
        w = self.bench.workload
        cw, ch = w.cell
        d = (f"compositor name=comp background=black "
             + " ".join(f"sink_{i}::xpos={(i % 2) * cw} sink_{i}::ypos={(i // 2) * ch}" for i in range(CALLERS))
             + f" ! video/x-raw,format=I420,width={w.width},height={w.height},framerate={FPS}/1"
             f" ! queue ! x264enc speed-preset=veryfast tune=zerolatency bitrate={OUT_VIDEO_KBPS}"
             f" key-int-max={KEYFRAME_FRAMES} ! video/x-h264,profile=constrained-baseline ! h264parse ! queue ! mux.video"
             f" audiomixer name=amix ! audio/x-raw,rate=48000,channels=2 ! audioconvert"
             f" ! avenc_aac bitrate={OUT_AUDIO_KBPS * 1000} ! aacparse ! queue ! mux.audio"
             f" flvmux name=mux streamable=true ! rtmpsink location={self.bench.nginx.url(self.stream_key)}")
        for i, f in enumerate(w.files):
            d += (f" filesrc location={f} ! matroskademux name=d{i}"
                  f" d{i}.video_0 ! queue ! h264parse ! avdec_h264 ! videoconvert ! videoscale"
                  f" ! video/x-raw,width={cw},height={ch} ! comp.sink_{i}"
                  f" d{i}.audio_0 ! queue ! opusdec ! audioconvert ! audioresample"
                  f" ! audio/x-raw,rate=48000,channels=2 ! amix.sink_{i}")
        return ["gst-launch-1.0", "-e"] + d.split()

    def start(self) -> int:
        argv = self.argv()
        self.command = shell_quote(argv)
        # SIGTERM ends gst-launch at once; nothing needs finishing (with SIGINT, -e
        # would first drain every queue in real time).
        p = Proc("gst-composite", argv, self.bench.rundir / f"b-run{self.run}.log")
        self.procs.append(p)
        return p.pid



class TuttiWholeJob(Contender):
    key = "c"
    title = "(c) tutti serve (whole job)"

    def start(self) -> int:
        b = self.bench
        w = b.workload
        self.dir = b.rundir / f"c-run{self.run}"
        self.dir.mkdir()
        self.tutti, self.base = start_tutti(b.tutti, self.dir)
        self.procs.append(self.tutti)
        self.composition = {
            "name": f"bench-run{self.run}",
            "video": {"width": w.width, "height": w.height, "fps": FPS, "bitrate_kbps": OUT_VIDEO_KBPS},
            "outputs": [{"kind": "rtmp", "url": b.nginx.url(self.stream_key)}, {"kind": "hls"}],
        }
        # (a) and (b) draw no names: without Tutti's labels the three pictures
        # can be scored against the same reference (a layout given may turn them on).
        self.composition["layout"] = {"kind": "grid", "labels": False, **(b.args.layout or {})}
        status, body = http("POST", self.base + "/v1/compositions", json.dumps(self.composition).encode())
        if status != 201:
            raise BenchError(f"POST /v1/compositions: {status} {body}\n{self.tutti.tail()}")
        self.cid = json.loads(body)["id"]
        self.drain = Drain()
        self.offers = []
        self.sender_cmds = []
        for i, f in enumerate(b.callers.files):
            audio, video = self.drain.pair(), self.drain.pair()
            offer = offer_sdp(f"caller{i}", audio, video, int(time.time()) * 10 + i)
            self.offers.append(offer)
            status, body = http("POST", f"{self.base}/v1/compositions/{self.cid}/participants",
                                json.dumps({"name": f"caller{i}", "sdp": offer}).encode())
            if status != 201:
                raise BenchError(f"joining caller{i}: {status} {body}\n{self.tutti.tail()}")
            answer = parse_answer(json.loads(body)["sdp"])
            if "audio" not in answer or "video" not in answer:
                raise BenchError(f"caller{i}: an m= line was rejected:\n{json.loads(body)['sdp']}")
            self.answer_example = json.loads(body)["sdp"]
            self.sender_cmds.append(sender_argv(f, answer))
        self.drain.start()
        for i, argv in enumerate(self.sender_cmds):
            p = Proc(f"sender{i}", argv, self.dir / f"sender{i}.log", stop_signal=signal.SIGINT)
            self.procs.insert(0, p)   # stopped after tutti (reversed order)
            self.senders.append(p)
        self.command = shell_quote(argv)
        return self.tutti.pid

    def stats(self) -> dict:
        try:
            status, body = http("GET", f"{self.base}/v1/compositions/{self.cid}")
            return json.loads(body) if status == 200 else {}
        except (urllib.error.URLError, OSError, ValueError):
            return {}

    def at_window_start(self) -> None:
        self.t0 = time.monotonic()
        self.drain0 = self.drain.snapshot()
        self.stats0 = self.stats()

    def at_window_end(self, sample: Sample) -> None:
        dt = time.monotonic() - self.t0
        drain1 = self.drain.snapshot()
        stats1 = self.stats()
        per_port = {p: (drain1[p] - self.drain0.get(p, 0)) * 8 / dt / 1000 for p in drain1}
        video_kbps, audio_kbps = [], []
        for i, (apair, vpair) in enumerate(zip(self.drain.pairs[0::2], self.drain.pairs[1::2])):
            audio_kbps.append(per_port[apair[0].getsockname()[1]])
            video_kbps.append(per_port[vpair[0].getsockname()[1]])
        sample.extra["return_video_kbps"] = video_kbps
        sample.extra["return_audio_kbps"] = audio_kbps
        lost, received = 0, 0
        for p0, p1 in zip(self.stats0.get("participants", []), stats1.get("participants", [])):
            for kind in ("audio", "video"):
                if p0.get(kind) and p1.get(kind):
                    received += p1[kind]["packets_received"] - p0[kind]["packets_received"]
                    lost += p1[kind]["packets_lost"] - p0[kind]["packets_lost"]
        sample.extra["rtp_in_packets"] = received
        sample.extra["rtp_in_lost"] = lost
        sample.extra["participant_states"] = [p.get("state") for p in stats1.get("participants", [])]
        outs = {o["kind"]: o for o in stats1.get("outputs", [])}
        outs0 = {o["kind"]: o for o in self.stats0.get("outputs", [])}
        if "rtmp" in outs and "rtmp" in outs0:
            sample.extra["rtmp_kbps"] = (outs["rtmp"]["bytes_sent"] - outs0["rtmp"]["bytes_sent"]) * 8 / dt / 1000
            sample.extra["rtmp_state"] = outs["rtmp"]["state"]
            sample.extra["rtmp_dropped_gops"] = outs["rtmp"].get("dropped_gops")
        hls = self.dir / "hls"
        sample.extra["hls_files"] = sorted(p.name for p in hls.rglob("*") if p.is_file()) if hls.exists() else []

    def log_problems(self) -> dict[str, list[str]]:
        """Warnings and errors in Tutti's log (its own, GStreamer's), by kind,
        with ANSI colours and timestamps removed, in order of appearance."""
        found: dict[str, list[str]] = {}
        try:
            text = self.tutti.logfile.read_text(errors="replace")
        except OSError:
            return found
        for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines():
            m = re.search(r"(GStreamer-\w+-?\w*|GLib-\w+-?\w*) \*\*: [\d:.]+: (.*)", line) or \
                re.search(r"\s(WARN|ERROR)\s+(.*)", line)
            if m:
                found.setdefault(m.group(1), []).append(m.group(2).strip())
        return found

    def stop(self) -> None:
        # Tutti first (SIGTERM: it releases everything), then the senders.
        try:
            self.tutti.stop()
        finally:
            for p in self.senders:
                p.stop(grace=2)
            if hasattr(self, "drain"):
                self.drain.close()


CONTENDERS = [FfmpegComposite, GstComposite, TuttiWholeJob]


def start_tutti(binary: Path, dir: Path) -> tuple[Proc, str]:
    """`tutti serve` on free ports, its files in `dir`, once it answers /healthz: (process, base URL)."""
    http_port = free_tcp_port()
    base = f"http://127.0.0.1:{http_port}"
    env = dict(os.environ)
    env.setdefault("RUST_LOG", "info")
    tutti = Proc("tutti", serve_argv(binary, http_port, free_udp_range(40), dir), dir / "tutti.log", env=env, cwd=REPO)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if not tutti.alive():
            raise BenchError(f"tutti exited during start-up\n{tutti.tail()}")
        try:
            if http("GET", base + "/healthz")[0] == 200:
                return tutti, base
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            tutti.stop()
            raise BenchError(f"tutti did not answer /healthz\n{tutti.tail()}")
        time.sleep(0.1)


@dataclass
class IdleSample:
    run: int
    cpu_per_s: float
    encoding: object            # the composition's broadcast.encoding at the window's end


def measure_idle(bench: "Bench", run: int, warmup: float, seconds: float) -> IdleSample:
    """(d) What a composition costs while it waits: Tutti with one composition at
    the workload's canvas, no caller and no output, over the same window."""
    w = bench.workload
    dir = bench.rundir / f"d-run{run}"
    dir.mkdir()
    tutti, base = start_tutti(bench.tutti, dir)
    try:
        composition = {"name": f"idle-run{run}", "video": {"width": w.width, "height": w.height, "fps": FPS,
                                                           "bitrate_kbps": OUT_VIDEO_KBPS}}
        status, body = http("POST", base + "/v1/compositions", json.dumps(composition).encode())
        if status != 201:
            raise BenchError(f"POST /v1/compositions: {status} {body}\n{tutti.tail()}")
        cid = json.loads(body)["id"]
        time.sleep(warmup)
        cpu0, t0 = cpu_ticks(tutti.pid), time.monotonic()
        time.sleep(seconds)
        cpu1, t1 = cpu_ticks(tutti.pid), time.monotonic()
        status, body = http("GET", f"{base}/v1/compositions/{cid}")
        encoding = json.loads(body).get("broadcast", {}).get("encoding") if status == 200 else None
        sample = IdleSample(run, (cpu1 - cpu0) / CLK_TCK / (t1 - t0), encoding)
        log(f"(d) an idle composition, run {run}: {sample.cpu_per_s:.3f} CPU s/s, broadcast encoding: {encoding}")
        return sample
    finally:
        tutti.stop()


# --------------------------------------------------------------------------- the bench

class Bench:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.workdir = Path(tempfile.mkdtemp(prefix="tutti-bench-"))
        self.rundir = self.workdir
        if self.smoke:
            self.workload = Workload(640, 360, 20)
        else:
            need = args.warmup + args.seconds + 30
            self.workload = Workload(1280, 720, max(60, -(-need // 10) * 10))
        # What Tutti's callers send: the canvas's size, or (--caller-size) the size
        # that an answer asking each caller for its cell would get; (a) and (b)
        # always read the canvas-sized files.
        size = args.caller_size or (self.workload.width, self.workload.height)
        self.callers = (self.workload if size == (self.workload.width, self.workload.height)
                        else Workload(*size, self.workload.duration))
        self.nginx: Nginx | None = None
        self.tutti: Path | None = None
        self.samples: list[Sample] = []
        self.idle: list[IdleSample] = []
        self.commands: dict[str, str] = {}
        self.profiles: dict[str, dict] = {}
        self.notes: list[str] = []

    # -- preparation

    def check_tools(self) -> None:
        missing = [t for t in ("ffmpeg", "ffprobe", "gst-launch-1.0", "gst-inspect-1.0", "nginx")
                   if not shutil.which(t)]
        if missing:
            raise BenchError(f"missing tools: {missing}; run scripts/install-deps.sh")
        for element in ("compositor", "audiomixer", "x264enc", "avenc_aac", "avdec_h264", "opusdec",
                        "flvmux", "rtmpsink", "matroskademux", "h264parse", "aacparse"):
            if subprocess.run(["gst-inspect-1.0", "--exists", element], timeout=30).returncode != 0:
                raise BenchError(f"GStreamer element {element} missing; run scripts/install-deps.sh")

    # -- one measurement

    def measure(self, cls, run: int, warmup: float, seconds: float, perf: bool = False) -> Sample:
        c = cls(self, run)
        watcher = None
        sample = None
        try:
            log(f"{c.title}, run {run}: starting")
            pid = c.start()
            watcher = Watcher(self.nginx.url(c.stream_key), self.workdir, f"{c.key}{run}",
                              record=run > 0 and not self.smoke)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while watcher.frames() == 0:
                if not all(p.alive() for p in c.procs):
                    dead = next(p for p in c.procs if not p.alive())
                    raise BenchError(f"{dead.name} exited early\n{dead.tail()}")
                if time.monotonic() > deadline:
                    procs = c.procs + [watcher.proc, self.nginx.proc]
                    nginx_log = self.nginx.dir / "error.log"
                    raise BenchError(f"{c.title}: no composite frame at nginx within {STARTUP_TIMEOUT:.0f} s "
                                     f"(watcher restarts: {watcher.restarts})\n"
                                     + "\n".join(f"  {p.name}:\n{p.tail(12)}" for p in procs)
                                     + f"\n  nginx error.log:\n{tail_file(nginx_log, 12)}")
                watcher.poll()
                time.sleep(0.2)
            time.sleep(warmup)
            self.check_alive(c)
            others_pids = [p.pid for p in c.senders]
            helper_pids = [self.nginx.proc.pid, watcher.proc.pid]
            c.at_window_start()
            t0 = time.monotonic()
            busy0, total0, steal0 = machine_jiffies()
            cpu0 = cpu_ticks(pid)
            send0 = sum(cpu_ticks(p) for p in others_pids)
            help0 = sum(cpu_ticks(p) for p in helper_pids)
            self0 = resource.getrusage(resource.RUSAGE_SELF)
            thr0 = thread_ticks(pid)
            perf_proc = None
            if perf:
                perf_proc = self.start_perf(c, pid, seconds)
            while time.monotonic() < t0 + seconds:
                self.check_alive(c)
                time.sleep(min(0.5, max(0.0, t0 + seconds - time.monotonic())))
            cpu1 = cpu_ticks(pid)
            send1 = sum(cpu_ticks(p) for p in others_pids)
            help1 = sum(cpu_ticks(p) for p in helper_pids)
            self1 = resource.getrusage(resource.RUSAGE_SELF)
            thr1 = thread_ticks(pid)
            busy1, total1, steal1 = machine_jiffies()
            t1 = time.monotonic()
            dt = t1 - t0
            w0, f0 = watcher.frames_at(t0)
            w1, f1 = watcher.frames_at(t1)
            fps = (f1 - f0) / (w1 - w0) if w1 > w0 else 0.0
            ncpu = os.cpu_count() or 1
            busy_cores = (busy1 - busy0) / (total1 - total0) * ncpu if total1 > total0 else 0.0
            mine = ((cpu1 - cpu0) + (send1 - send0) + (help1 - help0)) / CLK_TCK / dt
            mine += ((self1.ru_utime + self1.ru_stime) - (self0.ru_utime + self0.ru_stime)) / dt
            threads: dict[str, float] = {}
            for tid, (comm, ticks) in thr1.items():
                before = thr0.get(tid, (comm, 0))[1]
                g = thread_group(comm)
                threads[g] = threads.get(g, 0.0) + (ticks - before) / CLK_TCK / dt
            s = Sample(c.key, run, (cpu1 - cpu0) / CLK_TCK / dt, fps, dt, busy_cores,
                       max(0.0, busy_cores - mine), (send1 - send0) / CLK_TCK / dt,
                       (help1 - help0) / CLK_TCK / dt, threads)
            s.command = c.command
            s.extra["steal_cores"] = (steal1 - steal0) / (total1 - total0) * ncpu if total1 > total0 else 0.0
            c.at_window_end(s)
            has_video, has_audio = watcher.has_streams()
            s.extra["watcher_video"] = has_video
            s.extra["watcher_audio"] = has_audio
            if watcher.record:
                # The window's first frame in the current player's recording.
                s.extra["recording"] = (watcher.recording, f0 - watcher.base)
            if c.key == "c":
                self.commands["c_serve"] = shell_quote(c.tutti.argv)
                self.commands["c_composition"] = json.dumps(c.composition)
                self.commands["c_offer"] = c.offers[0]
                self.commands["c_answer"] = c.answer_example
                self.commands["c_sender"] = shell_quote(c.sender_cmds[0])
            else:
                self.commands[c.key] = c.command
            if perf_proc is not None:
                self.finish_perf(c, perf_proc, s)
            sample = s
            log(f"{c.title}, run {run}: {s.cpu_per_s:.2f} CPU s/s, {fps:.1f} fps, "
                f"machine busy {busy_cores:.2f} cores (others {s.others_cores:.2f})")
            return s
        finally:
            try:
                c.stop()
                if sample is not None and isinstance(c, TuttiWholeJob):
                    # Read after it stopped, so that shutdown is included.
                    sample.extra["log_problems"] = c.log_problems()
            finally:
                if watcher:
                    watcher.stop()

    def check_alive(self, c: Contender) -> None:
        for p in c.procs:
            if not p.alive():
                raise BenchError(f"{p.name} exited during the measurement\n{p.tail()}")

    # -- perf profile (optional)

    def start_perf(self, c: Contender, pid: int, seconds: float) -> Proc | None:
        if not shutil.which("perf"):
            return None
        data = self.workdir / f"perf-{c.key}.data"
        return Proc(f"perf-{c.key}", ["perf", "record", "-F", "499", "-p", str(pid), "-o", str(data),
                                       "--", "sleep", str(int(seconds))],
                    self.workdir / f"perf-{c.key}.log", stop_signal=signal.SIGINT)

    def finish_perf(self, c: Contender, perf: Proc, sample: Sample) -> None:
        try:
            perf.popen.wait(timeout=PERF_EXTRA)
        except subprocess.TimeoutExpired:
            pass
        perf.stop(grace=5)
        data = self.workdir / f"perf-{c.key}.data"
        if not data.exists():
            self.notes.append(f"perf produced nothing for {c.key}:\n{perf.tail()}")
            return
        try:
            # Self time by thread and library: the libraries are stripped (symbols
            # would mislead), but thread x library says which element did what.
            report = run_checked(["perf", "report", "-i", str(data), "--no-children", "--sort", "comm,dso",
                                  "--stdio", "-q"], timeout=120)
        except BenchError as e:
            self.notes.append(f"perf report failed for {c.key}: {e}")
            return
        rows = []
        for line in report.splitlines():
            m = re.match(r"\s*([\d.]+)%\s+(.+?)\s{2,}(\S.*?)\s*$", line)
            if m:
                rows.append((float(m.group(1)), thread_group(m.group(2)), m.group(3)))
        cats: dict[str, float] = {}
        threads: dict[str, dict[str, float]] = {}
        for pct, comm, dso in rows:
            cat = categorize(comm, dso)
            cats[cat] = cats.get(cat, 0.0) + pct
            t = threads.setdefault(comm, {})
            t[cat] = t.get(cat, 0.0) + pct
        self.profiles[c.key] = {"cpu_per_s": sample.cpu_per_s, "categories": cats, "threads": threads,
                                "samples": sum(p for p, _, _ in rows)}

    # -- the whole thing

    def run(self) -> int:
        self.t_start = time.time()
        # Read before anything runs: others may commit while the bench runs.
        self.commit, self.dirty = git_state()
        self.check_tools()
        self.tutti = find_tutti(self.args.tutti, self.smoke, self.args.build)
        ensure_cache(self.workload)
        if self.callers is not self.workload:
            ensure_cache(self.callers)
        self.nginx = Nginx(self.workdir)
        runs = 1 if self.smoke else self.args.runs
        warmup = 2.0 if self.smoke else float(self.args.warmup)
        seconds = 5.0 if self.smoke else float(self.args.seconds)
        started = time.time()
        self.load_before = open("/proc/loadavg").read().split()[:3]
        for run in range(1, runs + 1):
            # Rotated each run, so that a drifting background load hits each contender alike.
            order = CONTENDERS[(run - 1) % 3:] + CONTENDERS[:(run - 1) % 3]
            for cls in order:
                self.samples.append(self.measure(cls, run, warmup, seconds))
            self.idle.append(measure_idle(self, run, warmup, seconds))
        if not self.smoke and self.args.profile:
            if shutil.which("perf"):
                for cls in CONTENDERS:
                    self.measure(cls, 0, warmup, seconds, perf=True)
            else:
                self.notes.append("perf is not installed (apt-get install linux-perf): no profile.")
        self.load_after = open("/proc/loadavg").read().split()[:3]
        self.elapsed = time.time() - started
        # The score reads a 2x2 grid of the canvas-sized sources: another layout of
        # Tutti's, or other sources, have no reference to hold it to.
        if (not self.smoke and (self.args.layout or {}).get("kind", "grid") == "grid"
                and self.callers is self.workload):
            self.score_quality()
        self.elapsed_all = time.time() - self.t_start
        if self.smoke:
            return self.smoke_verdict()
        self.write_results()
        return 0

    def score_quality(self) -> None:
        """SSIM/PSNR of every measured run's composite against one reference
        (bench/quality.py), after all measurements: scoring is heavy."""
        w = self.workload
        log("scoring picture quality (SSIM/PSNR against the Lanczos-scaled sources)")
        refs = References(w.files, w.cell, self.workdir)
        try:
            for s in self.samples:
                recording, first = s.extra["recording"]
                try:
                    frames = min(QUALITY_FRAMES, int((s.window_s - 1) * FPS))
                    s.extra["quality"] = composite_quality(recording, w.width, w.height, refs, first,
                                                           frames, self.workdir)
                except BenchError as e:
                    self.notes.append(f"no quality score for {s.contender} run {s.run}: {e}")
        finally:
            refs.remove()

    def smoke_verdict(self) -> int:
        failures = []
        for s in self.samples:
            if s.fps < 5:
                failures.append(f"{s.contender}: only {s.fps:.1f} fps reached nginx")
            if not (s.extra.get("watcher_video") and s.extra.get("watcher_audio")):
                failures.append(f"{s.contender}: nginx did not carry both H.264 and AAC")
            if s.cpu_per_s <= 0:
                failures.append(f"{s.contender}: no CPU time measured")
            if s.contender == "c":
                if not any(n.endswith(".m3u8") for n in s.extra.get("hls_files", [])):
                    failures.append("c: no HLS playlist written")
                if min(s.extra.get("return_video_kbps", [0])) <= 0 or min(s.extra.get("return_audio_kbps", [0])) <= 0:
                    failures.append("c: a caller got no return stream")
        for s in self.idle:
            if s.encoding is not False:
                failures.append(f"d: an idle composition's broadcast encoding is {s.encoding!r}, not false")
        for s in self.samples:
            print(f"smoke {s.contender}: {s.cpu_per_s:.2f} CPU s/s, {s.fps:.1f} fps over {s.window_s:.1f} s"
                  + (f", senders {s.senders_per_s:.2f} CPU s/s, return video kbps "
                     f"{[round(x) for x in s.extra['return_video_kbps']]}" if s.contender == "c" else ""))
        for s in self.idle:
            print(f"smoke d: an idle composition {s.cpu_per_s:.3f} CPU s/s, broadcast encoding {s.encoding}")
        if failures:
            print("SMOKE FAILED:\n  " + "\n  ".join(failures))
            return 1
        print(f"smoke ok in {self.elapsed:.0f} s (measurement) — the three contenders ran and produced output")
        return 0

    def cleanup(self) -> None:
        Proc.kill_all()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"kept {self.workdir}")

    # -- RESULTS.md

    def write_results(self) -> None:
        by = {k: [s for s in self.samples if s.contender == k] for k in ("a", "b", "c")}

        def stat(values):
            return statistics.median(values), min(values), max(values)

        def fmt(values, digits=2):
            m, lo, hi = stat(values)
            return f"**{m:.{digits}f}** ({lo:.{digits}f}–{hi:.{digits}f})"

        med = {k: statistics.median(s.cpu_per_s for s in v) for k, v in by.items()}
        pair_ratios = {o: [] for o in ("a", "b")}
        for run in range(1, self.args.runs + 1):
            c = next(s for s in by["c"] if s.run == run)
            for o in ("a", "b"):
                pair_ratios[o].append(c.cpu_per_s / next(s for s in by[o] if s.run == run).cpu_per_s)
        commit, dirty = self.commit, self.dirty
        commit_end = run_checked(["git", "rev-parse", "HEAD"], 30, cwd=REPO).strip()
        tutti_mtime = datetime.datetime.fromtimestamp(self.tutti.stat().st_mtime, datetime.timezone.utc)
        src_mtime = max((p.stat().st_mtime for p in (REPO / "src").rglob("*.rs")), default=0)
        names = {"a": FfmpegComposite.title, "b": GstComposite.title, "c": TuttiWholeJob.title}
        L = []
        w = self.workload
        layout = self.args.layout
        callers = self.callers
        own_callers = callers is not self.workload
        variant, variant_args, section = [], "", "cpu_composite"
        if layout:
            variant.append(f"Tutti's layout `{layout['kind']}`")
            variant_args += f" --layout '{json.dumps(layout)}'"
            section += f"-layout-{layout['kind']}"
        if own_callers:
            variant.append(f"Tutti's callers sending {callers.width}x{callers.height}")
            variant_args += f" --caller-size {callers.width}x{callers.height}"
            section += f"-callers-{callers.width}x{callers.height}"
        stay = "(a) and (b) stay 2x2" + (f" on the {w.width}x{w.height} files" if own_callers else "")
        heading = (f"## Benchmark 1, {', '.join(variant)} (4 callers, {w.width}x{w.height} 30 fps; {stay})" if variant
                   else f"## Benchmark 1: CPU per composition (4 callers, 2x2, {w.width}x{w.height} 30 fps)")
        L += [heading, "",
              "Generated by `python3 bench/cpu_composite.py "
              f"--runs {self.args.runs} --seconds {self.args.seconds} --warmup {self.args.warmup}{variant_args}` — "
              "do not edit by hand; see bench/README.md.", "",
              f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; "
              f"the command took {self.elapsed_all / 60:.1f} min ({self.elapsed / 60:.1f} min of "
              "measurements; the rest: building, pre-encoding, start-up)",
              f"- machine: {machine_line()}",
              f"- load average before/after: {' '.join(self.load_before)} / {' '.join(self.load_after)}",
              f"- git commit: `{commit}` (HEAD when the run started)"
              + (" (**uncommitted changes** in src/ etc. at run time)" if dirty else "")
              + (f"; HEAD was `{commit_end}` when it ended" if commit_end != commit else ""),
              f"- tutti: `{self.tutti.relative_to(REPO) if self.tutti.is_relative_to(REPO) else self.tutti}`, "
              f"built {tutti_mtime.strftime('%Y-%m-%d %H:%M UTC')}"
              + (" (**older than the newest src/*.rs**: rebuild for the current code)"
                 if src_mtime > self.tutti.stat().st_mtime else ""),
              f"- {tool_versions()}",
              f"- window: {self.args.seconds} s after a {self.args.warmup} s warm-up (from the first composite "
              f"frame at nginx), {self.args.runs} runs, contenders interleaved (a b c, b c a, c a b, ...)",
              "", "### Workload (pre-encoded once, bench/.cache/)", ""]
        L += [f"- {describe_file(f)}" for f in w.files]
        if own_callers:
            L += ["", f"Tutti's callers (c) send {callers.width}x{callers.height} instead, the size of their cell: "
                  "what they would send if Tutti's answer asked each for its cell (it does not yet), at the "
                  "same bitrate:", ""]
            L += [f"- {describe_file(f)}" for f in callers.files]
        L += ["", "### Results", "",
              "CPU = user+sys seconds of the contender's process (all threads) per second of media "
              "(= wall-clock second: every contender runs in real time); median **bold** (min–max) over the runs.",
              "fps = composite frames per second nginx handed to a stream-copy ffmpeg player over the same window.",
              "",
              "| contender | CPU s / media s | cores of 2 | output fps | runs (CPU s/s) |",
              "|---|---|---|---|---|"]
        for k in ("a", "b", "c"):
            v = by[k]
            L.append(f"| {names[k]} | {fmt([s.cpu_per_s for s in v])} | "
                     f"{100 * med[k] / (os.cpu_count() or 1):.0f} % | {fmt([s.fps for s in v], 1)} | "
                     f"{', '.join(f'{s.cpu_per_s:.2f}' for s in sorted(v, key=lambda s: s.run))} |")
        L += ["",
              f"- **c/a = {med['c'] / med['a']:.2f}** (ratio of medians; per-run "
              f"{min(pair_ratios['a']):.2f}–{max(pair_ratios['a']):.2f})",
              f"- **c/b = {med['c'] / med['b']:.2f}** (ratio of medians; per-run "
              f"{min(pair_ratios['b']):.2f}–{max(pair_ratios['b']):.2f})",
              f"- **(d) an idle composition** (Tutti with one {w.width}x{w.height} composition, no caller, no output, "
              f"same window): {fmt([s.cpu_per_s for s in self.idle], 3)} CPU s/s (target: under 0.02); its broadcast "
              f"encode `encoding`: {', '.join(str(s.encoding).lower() for s in self.idle)}",
              f"- light senders of (c) (4 × `ffmpeg -re -c copy -f rtp`, not counted above): "
              f"{fmt([s.senders_per_s for s in by['c']])} CPU s/s together",
              f"- nginx + the fps watcher (not counted above): {fmt([s.helpers_per_s for s in self.samples])} CPU s/s",
              f"- rest of the machine during the windows (other processes: not this bench): "
              f"{fmt([s.others_cores for s in self.samples])} cores busy; stolen by the hypervisor: "
              f"{fmt([s.extra['steal_cores'] for s in self.samples])} cores",
              ""]
        L += self.quality_section(by, names)
        c_s = by["c"]
        L += ["### What Tutti did meanwhile (c)", "",
              f"- return composite H.264 received per caller: "
              + "; ".join(f"run {s.run}: " + "/".join(f"{x:.0f}" for x in s.extra["return_video_kbps"]) + " kbit/s"
                          for s in c_s),
              f"- mix-minus Opus received per caller: "
              + "; ".join(f"run {s.run}: " + "/".join(f"{x:.0f}" for x in s.extra["return_audio_kbps"]) + " kbit/s"
                          for s in c_s),
              f"- RTP packets received by Tutti in the window: "
              + "; ".join(f"run {s.run}: {s.extra['rtp_in_packets']} ({s.extra['rtp_in_lost']} lost)" for s in c_s),
              f"- RTMP output as Tutti counts it: "
              + "; ".join(f"run {s.run}: {s.extra.get('rtmp_kbps', 0):.0f} kbit/s, {s.extra.get('rtmp_state')}, "
                          f"dropped GOPs {s.extra.get('rtmp_dropped_gops')}" for s in c_s),
              f"- HLS files at the end of each run: "
              + "; ".join(f"run {s.run}: {len(s.extra['hls_files'])}" for s in c_s),
              ""]
        L += self.findings(by, med, names)
        warnings = []
        for s in self.samples:
            if s.fps < FPS - 1:
                warnings.append(f"{names[s.contender]} run {s.run}: {s.fps:.1f} fps at nginx (below real time)")
            if s.others_cores > 0.3:
                warnings.append(f"{names[s.contender]} run {s.run}: other processes kept {s.others_cores:.2f} "
                                "cores busy (noisy machine)")
        if warnings or self.notes:
            L += ["### Warnings", ""] + [f"- {x}" for x in warnings + self.notes] + [""]
        if self.profiles:
            L += self.profile_section(names)
        else:
            # Without perf: Tutti's threads from /proc/<pid>/task/*/stat, last run.
            last = max(c_s, key=lambda s: s.run)
            L += [f"### Tutti's threads (run {last.run}, /proc/<pid>/task, CPU s/s; names folded)", "",
                  "| thread | CPU s/s |", "|---|---|"]
            L += [f"| `{n}` | {v:.3f} |" for n, v in sorted(last.threads.items(), key=lambda kv: -kv[1]) if v >= 0.005]
            L.append("")
        L += ["### Exact commands (last run; ports and paths are per run)", "",
              "(a)", "```sh", self.commands.get("a", ""), "```", "",
              "(b)", "```sh", self.commands.get("b", ""), "```", "",
              "(c) the server:", "```sh", self.commands.get("c_serve", ""), "```",
              "then `POST /v1/compositions` with", "```json", self.commands.get("c_composition", ""), "```",
              "then per caller `POST /v1/compositions/{id}/participants` with "
              "`{\"name\": \"callerN\", \"sdp\": OFFER}`; caller 0's offer (its ports are bound and drained by "
              "the bench):", "```", self.commands.get("c_offer", "").replace("\r\n", "\n").strip(), "```",
              "the answer Tutti gave the last caller:", "```",
              self.commands.get("c_answer", "").replace("\r\n", "\n").strip(), "```",
              "and the light sender of caller 0 (one per caller):", "```sh", self.commands.get("c_sender", ""),
              "```", "",
              "Each fps watcher: `ffmpeg -i rtmp://127.0.0.1:PORT/live/KEY -map 0 -c copy -f null - "
              "-progress pipe:1 -stats_period 0.5`.", ""]
        write_section(section, "\n".join(L))

    def quality_section(self, by: dict[str, list[Sample]], names: dict[str, str]) -> list[str]:
        scored = {k: [s.extra["quality"] for s in v if "quality" in s.extra] for k, v in by.items()}
        if not any(scored.values()):
            return []
        frames = max(q.frames for v in scored.values() for q in v)
        L = ["### Picture quality (the same reference for every contender)", "",
             f"Each run's composite as nginx handed it out, {frames} frames from the window's start, against one "
             "reference: each source file decoded and scaled to its cell with Lanczos, uncompressed. Each cell is "
             "aligned frame by frame to the source frame it shows (bench/quality.py), then scored by ffmpeg's "
             "`ssim` (All: Y, U and V) and `psnr` (average of the planes) filters; a contender's score is the mean "
             "of its four cells. Higher is better: it is what the contender's scaling and encode lost. "
             "Repeated = output frames that showed the same source frame again; skipped = source frames never "
             "shown (both summed over the four cells).", "",
             "| contender | SSIM | PSNR dB | H.264 kbit/s | repeated / skipped frames | runs (SSIM) |",
             "|---|---|---|---|---|---|"]
        for k in ("a", "b", "c"):
            v = scored[k]
            if not v:
                L.append(f"| {names[k]} | – | – | – | – | – |")
                continue

            def span(values, digits):
                m = statistics.median(values)
                return f"**{m:.{digits}f}** ({min(values):.{digits}f}–{max(values):.{digits}f})"

            L.append(f"| {names[k]} | {span([q.ssim for q in v], 4)} | {span([q.psnr for q in v], 2)} | "
                     f"{statistics.median(q.video_kbps for q in v):.0f} | "
                     + ", ".join(f"{sum(c.repeated for c in q.cells)} / {sum(c.skipped for c in q.cells)}" for q in v)
                     + f" | {', '.join(f'{q.ssim:.4f}' for q in v)} |")
        if scored["a"] and scored["c"]:
            ssim = {k: statistics.median(q.ssim for q in scored[k]) for k in ("a", "c")}
            psnr = {k: statistics.median(q.psnr for q in scored[k]) for k in ("a", "c")}
            L += ["", f"- Tutti against ffmpeg's composite (a): SSIM {ssim['c']:.4f} vs {ssim['a']:.4f} "
                      f"({ssim['c'] - ssim['a']:+.4f}), PSNR {psnr['c']:.2f} vs {psnr['a']:.2f} dB "
                      f"({psnr['c'] - psnr['a']:+.2f})."]
        return L + [""]

    def findings(self, by: dict[str, list[Sample]], med: dict[str, float], names: dict[str, str]) -> list[str]:
        """What the figures say, computed from them (so that it stays true when they change)."""
        c_s = by["c"]
        F = []

        def than(difference):
            return f"{abs(difference):.2f} CPU s/s {'more' if difference >= 0 else 'less'} than"

        fps = [s.fps for s in c_s]
        lost = sum(s.extra.get("rtp_in_lost", 0) for s in c_s)
        gops = sum(s.extra.get("rtmp_dropped_gops") or 0 for s in c_s)
        F.append(f"Tutti kept real time: {min(fps):.1f}–{max(fps):.1f} composite fps at nginx, {lost} RTP packets "
                 f"lost, {gops} GOPs dropped by its RTMP output, in {len(c_s)} measured runs.")
        F.append(f"Tutti needs {than(med['c'] - med['b'])} (b) and {than(med['c'] - med['a'])} (a) (medians).")
        p = self.profiles

        def cpu(k, cat):
            if k not in p or not p[k]["samples"]:
                return 0.0
            return p[k]["categories"].get(cat, 0.0) * p[k]["cpu_per_s"] / p[k]["samples"]

        if "b" in p and "c" in p:
            ret = cpu("c", "H.264 encode: return stream to callers (x264)")
            bc = cpu("c", "H.264 encode: broadcast (x264)")
            diff = p["c"]["cpu_per_s"] - p["b"]["cpu_per_s"]
            encodes = (f"the callers' H.264 return stream rides the broadcast encode (its own x264 took {ret:.2f}), "
                       f"so one x264 serves callers and outputs: {bc:.2f}"
                       if ret < 0.05 else
                       f"a second H.264 encode (the composite sent back to the callers) took {ret:.2f}, "
                       f"the broadcast encode {bc:.2f}")
            F.append(f"In the profiled runs Tutti spent {than(diff)} (b); {encodes}. Opus "
                     f"(4 decodes + 4 mix-minus encodes) took {cpu('c', 'Opus decode/encode (libopus)'):.2f}, "
                     f"GStreamer core/RTP/jitter buffers {cpu('c', 'GStreamer/GLib core, RTP, queues, element glue'):.2f} "
                     f"(vs {cpu('b', 'GStreamer/GLib core, RTP, queues, element glue'):.2f} in (b)), "
                     f"the kernel (UDP in and out) {cpu('c', 'kernel (syscalls, UDP/TCP, scheduling)'):.2f} "
                     f"(vs {cpu('b', 'kernel (syscalls, UDP/TCP, scheduling)'):.2f}).")
        if "a" in p and "b" in p:
            sws = cpu("a", "video scale (swscale)")
            gsc = cpu("b", "video convert/scale/blend (GStreamer: ORC JIT code, libgstvideo)")
            csc = cpu("c", "video convert/scale/blend (GStreamer: ORC JIT code, libgstvideo)")
            F.append(f"Scaling the four 1280x720 pictures to 640x360 (and blending) costs {gsc:.2f} CPU s/s with "
                     f"GStreamer's videoconvert/videoscale/compositor in (b) and {csc:.2f} in Tutti, against "
                     f"{sws:.2f} with ffmpeg's swscale (bilinear too) in (a)"
                     + (f": {gsc / sws:.1f}× as much" if sws > 0 else "")
                     + ". That, more than decoding or encoding, is why (b) costs more than (a). "
                     f"H.264 decoding: {cpu('a', 'H.264 decode + AAC encode (libavcodec)'):.2f} in (a) (AAC "
                     f"included, frame threads), {cpu('b', 'H.264 decode (libavcodec)'):.2f} in (b), "
                     f"{cpu('c', 'H.264 decode (libavcodec)'):.2f} in Tutti. The broadcast x264 encode: "
                     f"{cpu('a', 'H.264 encode (x264)'):.2f} / {cpu('b', 'H.264 encode (x264)'):.2f} / "
                     f"{cpu('c', 'H.264 encode: broadcast (x264)'):.2f}.")
        if "a" in p and "c" in p:
            # The target c/a <= 0.8 against what Tutti cannot do without: one H.264
            # encode and decoding what the callers send, which (a) does too.
            a_cpu, c_cpu = p["a"]["cpu_per_s"], p["c"]["cpu_per_s"]
            codec = sum(cpu("c", cat) for cat in ("H.264 encode: broadcast (x264)",
                                                   "H.264 encode: return stream to callers (x264)",
                                                   "H.264 decode (libavcodec)"))
            a_codec = cpu("a", "H.264 encode (x264)") + cpu("a", "H.264 decode + AAC encode (libavcodec)")
            rest = c_cpu - codec
            F.append(f"What limits c/a (target 0.8): in the profiled runs Tutti's H.264 encode and its four decodes "
                     f"took {codec:.2f} CPU s/s, {codec / a_cpu:.2f} × all of (a) ({a_cpu:.2f}; its own encode and "
                     f"decodes, AAC included, {a_codec:.2f}). 0.8 × (a) leaves {0.8 * a_cpu - codec:.2f} for "
                     f"everything else, where Tutti spent {rest:.2f}: the kernel "
                     f"{cpu('c', 'kernel (syscalls, UDP/TCP, scheduling)'):.2f} "
                     f"(UDP in and out, and waking its threads), libc {cpu('c', 'libc (memcpy, malloc, locks)'):.2f}, "
                     f"GStreamer core {cpu('c', 'GStreamer/GLib core, RTP, queues, element glue'):.2f}, Opus "
                     f"{cpu('c', 'Opus decode/encode (libopus)'):.2f}, AAC {cpu('c', 'AAC encode (libavcodec)'):.2f}, "
                     f"scaling {cpu('c', 'video convert/scale/blend (GStreamer: ORC JIT code, libgstvideo)'):.2f}.")
        problems: dict[str, list[str]] = {}
        for s in c_s:
            for kind, lines in s.extra.get("log_problems", {}).items():
                problems.setdefault(kind, []).extend(re.sub(r"\b[0-9a-f]{8,}\b", "{id}", x) for x in lines)
        for kind, lines in sorted(problems.items()):
            distinct = list(dict.fromkeys(lines))
            F.append(f"Tutti's log over its {len(c_s)} measured runs (start-up, measurement, SIGTERM): "
                     f"{len(lines)} `{kind}` lines, e.g. "
                     + "; ".join(f"`{x[:120]}`" for x in distinct[:3]) + ".")
        return ["### Findings (computed from the figures of this run)", ""] + [f"- {x}" for x in F] + [""]

    def profile_section(self, names: dict[str, str]) -> list[str]:
        keys = [k for k in ("a", "b", "c") if k in self.profiles]

        def rate(p, share):
            return share * p["cpu_per_s"] / p["samples"] if p["samples"] else 0.0

        cats = sorted({c for p in self.profiles.values() for c in p["categories"]},
                      key=lambda c: -max(rate(p, p["categories"].get(c, 0)) for p in self.profiles.values()))
        diff = "b" in self.profiles and "c" in self.profiles
        L = ["### Where the time goes (perf profile)", "",
             "One extra run of each contender with `perf record -F 499 -p PID` over the window. Self time by "
             "thread and library (the distribution's libraries are stripped, so symbols would mislead), "
             "sorted into categories by `categorize()` in the script. CPU s/s = share of samples × that "
             "run's CPU s/s; percentages are of the contender's own CPU."
             + (" The last column is what Tutti spends more (or less) than (b) on the same thing; (b)'s one "
                "x264 is set against Tutti's broadcast encode." if diff else ""), "",
             "| category | " + " | ".join(names[k] for k in keys) + (" | c − b |" if diff else " |"),
             "|---|" + "---|" * (len(keys) + diff)]

        def cpu(k, cat):
            p = self.profiles[k]
            return rate(p, p["categories"].get(cat, 0.0))

        for cat in cats:
            cells = []
            for k in keys:
                p = self.profiles[k]
                share = p["categories"].get(cat, 0.0)
                pct = 100 * share / p["samples"] if p["samples"] else 0
                cells.append(f"{rate(p, share):.3f} ({pct:.0f} %)" if pct >= 0.3 else "–")
            if diff:
                if cat == "H.264 encode (x264)":
                    cells.append("(see broadcast)")
                else:
                    b_cat = "H.264 encode (x264)" if cat == "H.264 encode: broadcast (x264)" else cat
                    d = cpu("c", cat) - cpu("b", b_cat)
                    cells.append(f"{d:+.3f}" if abs(d) >= 0.003 else "–")
            if any(cell != "–" for cell in cells[:len(keys)]):
                L.append(f"| {cat} | " + " | ".join(cells) + " |")
        L.append("| **total CPU s/s** | " + " | ".join(f"**{self.profiles[k]['cpu_per_s']:.2f}**" for k in keys)
                 + (f" | **{self.profiles['c']['cpu_per_s'] - self.profiles['b']['cpu_per_s']:+.2f}** |"
                    if diff else " |"))
        L.append("")
        for k in ("c", "b"):
            if k not in self.profiles:
                continue
            p = self.profiles[k]
            L += [f"{names[k]}, by thread (names folded: `{{id}}` = one of several ids; "
                  "the libraries' worker threads count under the thread that started them):", "",
                  "| thread | CPU s/s | of which |", "|---|---|---|"]
            rows = sorted(p["threads"].items(), key=lambda kv: -sum(kv[1].values()))
            for name, parts in rows:
                total = rate(p, sum(parts.values()))
                if total < 0.005:
                    continue
                detail = ", ".join(f"{cat} {rate(p, v):.3f}" for cat, v in sorted(parts.items(), key=lambda kv: -kv[1])
                                   if rate(p, v) >= 0.005)
                L.append(f"| `{name}` | {total:.3f} | {detail} |")
            L.append("")
        return L


def categorize(comm: str, dso: str) -> str:
    """What a thread was doing in a library (perf self time), for the profile."""
    d, t = dso.lower(), comm.lower()
    if "x264" in d:
        if t.startswith("enc-"):
            return "H.264 encode: return stream to callers (x264)"
        if t.startswith("comp-"):
            return "H.264 encode: broadcast (x264)"
        return "H.264 encode (x264)"
    if "libavcodec" in d:
        if t.startswith("comp-") or t.startswith("amix"):
            return "AAC encode (libavcodec)"
        if t.startswith("ffmpeg"):
            return "H.264 decode + AAC encode (libavcodec)"
        return "H.264 decode (libavcodec)"
    if "orcexec" in d or "liborc" in d or "libgstvideo" in d or "compositor" in d:
        return "video convert/scale/blend (GStreamer: ORC JIT code, libgstvideo)"
    if "swscale" in d:
        return "video scale (swscale)"
    if "libopus" in d:
        return "Opus decode/encode (libopus)"
    if any(x in d for x in ("libgstaudio", "audiomixer", "audioconvert", "audioresample", "swresample")):
        return "audio mix/convert/resample"
    if "kernel" in d:
        return "kernel (syscalls, UDP/TCP, scheduling)"
    if d.startswith("libc.") or d.startswith("libc-") or "ld-linux" in d or d.startswith("libm."):
        return "libc (memcpy, malloc, locks)"
    if any(x in d for x in ("libgstflv", "librtmp", "libgstrtmp", "mpegts", "libgsthls", "libavformat")):
        return "muxing + RTMP/HLS"
    if any(x in d for x in ("libglib", "libgobject", "libgio", "libgstreamer", "libgstbase", "libgstrtp",
                            "libgstudp", "libgstcoreelements", "libgstapp", "libgstpbutils", "libgstlibav",
                            "libgstvideoparsers", "libgstaudioparsers", "libgstopus", "libgstx264",
                            "libgstmatroska", "libgstplayback", "libgstvideoconvertscale")):
        return "GStreamer/GLib core, RTP, queues, element glue"
    if "libavutil" in d or "libavfilter" in d:
        return "libavutil/libavfilter (frame copies, xstack, amix)"
    if d in ("tutti", "ffmpeg", "gst-launch-1.0"):
        return "the program's own code"
    return "other"


def frame_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)x(\d+)", text)
    if not m or int(m[1]) % 2 or int(m[2]) % 2 or not (16 <= int(m[1]) <= 1280 and 16 <= int(m[2]) <= 720):
        raise argparse.ArgumentTypeError(f"{text!r}: WxH with even sides, at most 1280x720")
    return int(m[1]), int(m[2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20, help="measurement window")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--smoke", action="store_true",
                    help="one short run at 640x360 that only checks that the three contenders run (CI)")
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the extra perf-profiled run of each contender")
    ap.add_argument("--tutti", help="the tutti binary (default: target/release/tutti, built if missing)")
    ap.add_argument("--build", action="store_true", help="cargo build --release first (else only if missing)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs, HLS, perf data)")
    ap.add_argument("--layout", type=json.loads, default=None,
                    help="Tutti's layout, as the API takes it (JSON), e.g. '{\"kind\": \"speaker\"}'; "
                         "(a) and (b) keep their 2x2; the figures go to a section of their own")
    ap.add_argument("--caller-size", type=frame_size, default=None, metavar="WxH",
                    help="what Tutti's callers send (default: the canvas's size), e.g. 640x360, a cell of the 2x2; "
                         "(a) and (b) keep the canvas-sized files; the figures go to a section of their own")
    args = ap.parse_args()
    if args.smoke and args.caller_size:
        ap.error("--caller-size is for full runs (the smoke workload is already 640x360)")
    if args.layout is not None and not isinstance(args.layout, dict):
        ap.error("--layout must be a JSON object")
    if args.layout is not None:
        args.layout.setdefault("kind", "grid")
    if args.runs < 1 or args.seconds < 1 or args.warmup < 0:
        ap.error("--runs and --seconds must be >= 1, --warmup >= 0")

    return run_bench(lambda: Bench(args), args.smoke, SMOKE_DEADLINE)


if __name__ == "__main__":
    sys.exit(main())
