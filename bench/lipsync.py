"""Lip sync on air, part of benchmark 3 (bench/latency.py --lipsync-seconds).

One caller replays a clip whose picture flashes white and whose sound
clicks (10 ms of 1 kHz) at the same instant every second. Tutti composes it
next to a second caller that only listens, and every place its sound and
picture come out together is recorded for the whole run, as a viewer or a
caller gets it:

  - RTMP: an ffmpeg reading the stream back from nginx-rtmp (stream copy);
  - HLS: an ffmpeg reading Tutti's own playlist over HTTP (stream copy);
  - the recording: Tutti's Matroska file output;
  - a caller's return stream: what the listening caller receives, put
    together as an endpoint does: GStreamer's rtpbin lines audio and video up
    by Tutti's RTCP sender reports, then the depayloaded streams are muxed
    into Matroska without decoding.

Afterwards each file is decoded by ffmpeg: the flash is the first frame
whose mean luma crosses half-way between the darkest and the brightest
frames, the click the first sample above -20 dBFS after silence; each
flash is paired with the nearest click. The source file is measured the same
way, so its own offset (the codec's) is taken out: the figure is the skew
Tutti adds, positive when sound comes after picture.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from pathlib import Path

from benchlib import (CACHE, REPO, BenchError, Nginx, Proc, bind_rtp_pair, free_tcp_port, free_udp_range, http, log,
                      offer_sdp, parse_answer, run_checked, sender_argv, serve_argv)

CLIP_SECONDS = 60
SMOKE_CLIP_SECONDS = 20      # the smoke records 10 s, within one pass of the clip
FPS = 30
CLICK_SECONDS = 0.010
DRIFT_SPAN = 600.0           # s of pairs needed to give a drift
PAIR_WITHIN = 0.25           # a flash and a click further apart than this are not one event
LOUD_DBFS = -20.0
# Each output is measured from this long after its first flash: a caller's
# stamps settle within a few seconds of its first packets, and an endpoint
# lines audio up with video only once it has had RTCP sender reports for both.
SETTLE_SECONDS = 4.0
TARGET_MS = 20.0
STARTUP_TIMEOUT = 30.0
PLAYLIST_TIMEOUT = 15.0
ANALYSIS_TIMEOUT = 3600.0
CACHE_VERSION = "v2"

OUTPUTS = ("RTMP (nginx, read back)", "HLS (Tutti's playlist)", "recording (Matroska)", "a caller's return stream")


def ensure_clip(seconds: int) -> Path:
    """The flash-and-click clip, encoded once like the callers' files (bench/.cache/)."""
    CACHE.mkdir(exist_ok=True)
    path = CACHE / f"flash-1280x720-{seconds}s-{CACHE_VERSION}.mkv"
    if path.exists():
        return path
    log(f"encoding {path.name} (once; cached)")
    # One white frame at the start of every second; the click starts on the same sample.
    video = f"color=c=black:s=1280x720:r={FPS},drawbox=c=white:t=fill:enable='lt(mod(n\\,{FPS})\\,1)'"
    tone = f"if(lt(mod(t\\,1)\\,{CLICK_SECONDS})\\,0.5*sin(2*PI*1000*t)\\,0)"
    tmp = path.with_suffix(".tmp.mkv")
    run_checked(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                 "-f", "lavfi", "-i", video, "-f", "lavfi", "-i", f"aevalsrc={tone}|{tone}:s=48000",
                 "-t", str(seconds), "-map", "0:v", "-map", "1:a",
                 "-c:v", "libx264", "-profile:v", "baseline", "-preset", "veryfast", "-b:v", "1500k",
                 "-g", str(FPS), "-keyint_min", str(FPS), "-sc_threshold", "0", "-pix_fmt", "yuv420p",
                 # SPS/PPS inside every keyframe, so that the sender needs no bitstream filter (see sender_argv).
                 "-x264-params", "repeat-headers=1",
                 "-c:a", "libopus", "-b:a", "64k", "-ac", "2", "-frame_duration", "20", str(tmp)], timeout=600)
    tmp.rename(path)
    return path


def flashes(path: Path) -> list[float]:
    """The first frame of each flash: mean luma crossing half-way between the
    darkest and the brightest frames, on the file's own timestamps."""
    quoted = str(path).replace("\\", "\\\\").replace(":", "\\:").replace("'", "\\'")
    out = run_checked(["ffprobe", "-v", "error", "-f", "lavfi", "-i", f"movie='{quoted}',scale=160:90,signalstats",
                       "-show_entries", "frame=pts_time:frame_tags=lavfi.signalstats.YAVG", "-of", "csv=p=0"],
                      timeout=ANALYSIS_TIMEOUT)
    luma = [(float(t), float(y)) for t, _, y in (line.partition(",") for line in out.split())]
    if not luma or max(y for _, y in luma) - min(y for _, y in luma) < 20:
        return []
    threshold = (max(y for _, y in luma) + min(y for _, y in luma)) / 2
    return [t for (t, y), (_, before) in zip(luma[1:], luma) if y > threshold >= before]


def click_onsets(path: Path) -> list[float]:
    """The first sample of each click (after 100 ms below the threshold), on the file's own timestamps."""
    out = subprocess.run(["ffmpeg", "-hide_banner", "-nostdin", "-copyts", "-i", str(path), "-map", "0:a",
                          "-af", f"silencedetect=noise={LOUD_DBFS:.0f}dB:d=0.1", "-f", "null", "-"],
                         capture_output=True, text=True, timeout=ANALYSIS_TIMEOUT)
    return [float(m) for m in re.findall(r"silence_end: ([0-9.]+)", out.stderr)]


def offsets(path: Path) -> list[tuple[float, float]]:
    """(flash time s, click − flash ms) for each flash of `path` that has a click near it."""
    clicks = click_onsets(path)
    pairs = []
    for flash in flashes(path):
        near = min(clicks, key=lambda c: abs(c - flash), default=None)
        if near is not None and abs(near - flash) <= PAIR_WITHIN:
            pairs.append((flash, (near - flash) * 1000))
    return pairs


def source_offset(clip: Path, seconds: int) -> float:
    """Click − flash in the clip itself (ms), measured once and cached next to it."""
    cached = clip.with_suffix(".offset.json")
    if cached.exists():
        return json.loads(cached.read_text())["offset_ms"]
    log("lip sync: measuring the clip's own offset (once; cached)")
    pairs = offsets(clip)
    if len(pairs) < seconds - 2:
        raise BenchError(f"lip sync: {len(pairs)} flashes paired with a click in {clip}, {seconds} expected")
    offset = statistics.median(ms for _, ms in pairs)
    cached.write_text(json.dumps({"offset_ms": offset}))
    return offset


def drift_ms_per_10min(pairs: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of the offset over the run; None for runs under
    10 min, where a millisecond of noise would read as a drift."""
    if len(pairs) < 10 or pairs[-1][0] - pairs[0][0] < DRIFT_SPAN:
        return None
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return slope * 600


class LipSync:
    """One run: Tutti, the two callers, the four recorders; then the analysis."""

    def __init__(self, tutti: Path, workdir: Path, nginx: Nginx, seconds: float, clip_seconds: int):
        self.tutti_path = tutti
        self.clip_seconds = clip_seconds
        self.dir = workdir / "lipsync"
        self.dir.mkdir()
        self.nginx = nginx
        self.seconds = seconds
        self.procs: list[Proc] = []

    def api(self, method: str, path: str, body: dict | None = None, expect: int = 201) -> dict:
        status, text = http(method, self.base + path, json.dumps(body).encode() if body is not None else None)
        if status != expect:
            raise BenchError(f"lip sync: {method} {path}: {status} {text}")
        return json.loads(text) if text.strip() else {}

    def start(self, proc: Proc) -> Proc:
        self.procs.append(proc)
        return proc

    def join(self, name: str, session: int) -> tuple[dict, tuple[int, int]]:
        """A caller; returns Tutti's answer and the (audio, video) RTP ports offered."""
        ports = []
        for _ in range(2):
            rtp, rtcp = bind_rtp_pair()
            ports.append(rtp.getsockname()[1])
            rtp.close()
            rtcp.close()
        audio, video = ports
        r = self.api("POST", f"/v1/compositions/{self.cid}/participants",
                     {"name": name, "sdp": offer_sdp(name, (audio, audio + 1), (video, video + 1), session)})
        return parse_answer(r["sdp"]), (audio, video)

    def receiver(self, answer: dict, ports: tuple[int, int], path: Path) -> Proc:
        """The listening caller's endpoint: rtpbin syncs by RTCP, the streams go to Matroska undecoded."""
        audio, video = ports
        v, a = answer["video"], answer["audio"]
        argv = ["gst-launch-1.0", "-e", "rtpbin", "name=rb", "latency=100",
                "udpsrc", f"port={video}", "caps=application/x-rtp,media=video,clock-rate=90000,"
                f"encoding-name=H264,payload={v['pt']}", "!", "rb.recv_rtp_sink_0",
                "udpsrc", f"port={video + 1}", "!", "rb.recv_rtcp_sink_0",
                "udpsrc", f"port={audio}", "caps=application/x-rtp,media=audio,clock-rate=48000,"
                f"encoding-name=OPUS,payload={a['pt']}", "!", "rb.recv_rtp_sink_1",
                "udpsrc", f"port={audio + 1}", "!", "rb.recv_rtcp_sink_1",
                "rb.", "!", "rtph264depay", "!", "h264parse", "!", "queue", "!", "mux.",
                "rb.", "!", "rtpopusdepay", "!", "opusparse", "!", "queue", "!", "mux.",
                "matroskamux", "name=mux", "!", "filesink", f"location={path}"]
        return self.start(Proc("return-recorder", argv, self.dir / "return-recorder.log"))

    def execute(self) -> dict:
        clip = ensure_clip(self.clip_seconds)
        http_port = free_tcp_port()
        first, last = free_udp_range(20)
        self.base = f"http://127.0.0.1:{http_port}"
        tutti = self.start(Proc("tutti", serve_argv(self.tutti_path, http_port, (first, last), self.dir),
                                self.dir / "tutti.log", cwd=REPO))
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            try:
                if http("GET", self.base + "/healthz")[0] == 200:
                    break
            except OSError:
                pass
            if not tutti.alive() or time.monotonic() > deadline:
                raise BenchError(f"lip sync: tutti did not start\n{tutti.tail()}")
            time.sleep(0.1)
        comp = self.api("POST", "/v1/compositions", {
            "name": "lipsync", "video": {"width": 1280, "height": 720, "fps": FPS, "bitrate_kbps": 2500},
            "outputs": [{"kind": "rtmp", "url": self.nginx.url("lipsync")}, {"kind": "hls"},
                        {"kind": "record", "path": "lipsync.mkv"}]})
        self.cid = comp["id"]
        hls = next(o for o in comp["outputs"] if o["kind"] == "hls")
        record = next(o for o in comp["outputs"] if o["kind"] == "record")
        flash_answer, _ = self.join("flash", 1)
        ear_answer, ear_ports = self.join("ear", 2)
        files = [self.dir / "rtmp.flv", self.dir / "hls.ts", self.dir / "recordings" / "lipsync.mkv",
                 self.dir / "return.mkv"]
        self.receiver(ear_answer, ear_ports, files[3])
        self.start(Proc("sender", sender_argv(clip, flash_answer, headers_in_band=True), self.dir / "sender.log"))
        playlist = f"{self.base}/hls/{self.cid}/{hls['id']}/index.m3u8"
        deadline = time.monotonic() + PLAYLIST_TIMEOUT
        while http("GET", playlist)[0] != 200:    # written once the first segment is complete
            if time.monotonic() > deadline:
                raise BenchError(f"lip sync: no HLS playlist after {PLAYLIST_TIMEOUT:.0f} s\n{tutti.tail()}")
            time.sleep(0.2)
        for name, url, path in (("rtmp-reader", self.nginx.url("lipsync"), files[0]),
                                ("hls-reader", playlist, files[1])):
            self.start(Proc(name, ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-i", url,
                                   "-map", "0", "-c", "copy", "-t", str(self.seconds), str(path)],
                            self.dir / f"{name}.log"))
        log(f"lip sync: recording {self.seconds:.0f} s of RTMP, HLS, the recording and a return stream")
        time.sleep(self.seconds + 2)
        if not tutti.alive():
            raise BenchError(f"lip sync: tutti died\n{tutti.tail()}")
        self.api("DELETE", f"/v1/compositions/{self.cid}/outputs/{record['id']}", expect=204)
        self.stop()
        source = source_offset(clip, self.clip_seconds)
        result = {}
        for name, path in zip(OUTPUTS, files):
            if not path.exists():
                raise BenchError(f"lip sync: nothing recorded for {name} ({path})")
            log(f"lip sync: analysing {name}")
            pairs = offsets(path)
            pairs = [p for p in pairs if p[0] - pairs[0][0] >= SETTLE_SECONDS]
            result[name] = {"skew": [(t, ms - source) for t, ms in pairs], "drift": drift_ms_per_10min(pairs)}
        result["source_ms"] = source
        # Every pair, for a look at when the outliers fall (kept with --keep).
        (self.dir / "skew.json").write_text(json.dumps(result))
        return result

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def summary(result: dict) -> dict[str, dict]:
    out = {}
    for name in OUTPUTS:
        skews = [ms for _, ms in result[name]["skew"]]
        out[name] = {"n": len(skews), "median": statistics.median(skews) if skews else None,
                     "min": min(skews, default=None), "max": max(skews, default=None),
                     "outside": sum(1 for ms in skews if abs(ms) > TARGET_MS), "drift": result[name]["drift"]}
    return out


def verdict(result: dict) -> list[str]:
    """What misses the target: every output within ±20 ms of the source's own sync."""
    fails = []
    for name, s in summary(result).items():
        if not s["n"]:
            fails.append(f"{name}: no flash paired with a click")
        elif max(abs(s["min"]), abs(s["max"])) > TARGET_MS:
            fails.append(f"{name}: skew {s['min']:+.0f}..{s['max']:+.0f} ms (target ±{TARGET_MS:.0f})")
    return fails


def section(result: dict, seconds: float) -> list[str]:
    lines = [
        "### Lip sync on air",
        "",
        f"One caller replays a clip that flashes white and clicks at the same instant every second; "
        f"{seconds:.0f} s of each output recorded as a viewer or caller gets it, then decoded (see bench/lipsync.py). "
        f"Skew = click − flash in the output minus the same in the source file ({result['source_ms']:+.0f} ms, "
        f"Opus's own offset); positive: sound after picture. Target: within ±{TARGET_MS:.0f} ms (EBU R37 allows "
        "sound up to 60 ms late).",
        "",
        f"| output | skew median | min–max | flashes paired | outside ±{TARGET_MS:.0f} ms | drift (ms per 10 min) |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in summary(result).items():
        if not s["n"]:
            lines.append(f"| {name} | – | – | 0 | – | – |")
            continue
        drift = f"{s['drift']:+.2f}" if s["drift"] is not None else "– (run under 10 min)"
        lines.append(f"| {name} | **{s['median']:+.1f} ms** | {s['min']:+.0f}..{s['max']:+.0f} ms | {s['n']} | "
                     f"{s['outside']} | {drift} |")
    lines += ["", f"Each output is counted from {SETTLE_SECONDS:.0f} s after its first flash: a joining caller's "
              "stamps settle within a few seconds (up to 10 ms off before), and the receiving endpoint lines a "
              "return stream's audio up with its video only once it has had Tutti's RTCP sender reports for both "
              "(sent about every half second)."]
    return lines
