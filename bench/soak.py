#!/usr/bin/env python3
"""Benchmark 4: soak. Half an hour of churn on this machine, and whether
Tutti stays answerable and gives back what it takes.

Churn, all at random moments: two compositions (640x360, 1 s GOPs) live at a
time, the older one deleted and a new one created every `--replace` seconds;
callers (light senders replaying the cached 640x360 files) join and leave
every 2-5 s, about three per composition; outputs of every kind (HLS, a
recording, RTMP to a local nginx) added every 2-6 s and removed 0-6 s later.
Two minutes of it first (the warm-up: plugins loaded, pools and allocator
grown), then everything removed and the start line read, then `--minutes`
of it measured, then everything removed again and the end line read.

Measured:
  - every API request's response time, the churn's own and a watcher's that
    asks /healthz and each composition every 0.5 s: p50, p99, max, and how
    many took over 1 s (the bar: none);
  - idle before and after the measured churn: RSS, open file descriptors,
    threads, and the UDP ports bound in its RTP range, once every part has
    stopped and GLib's thread pool has retired its idle threads (the bar:
    fds and ports back to the start, threads within the two GLib keeps,
    RSS within 10 %);
  - RSS under load every 10 s: the median of the first five minutes against
    that of the last five (the bar: within 10 %).

    python3 bench/soak.py [--minutes 30] [--replace 60] [--smoke] [--tutti PATH] [--build] [--keep]

Only the standard library. Every child runs in its own process group and
dies with this script; everything is on 127.0.0.1. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from benchlib import (CACHE, REPO, BenchError, Drain, Nginx, Proc, Workload, ensure_cache, find_tutti, free_tcp_port,
                      free_udp_range, git_state, log, offer_sdp, parse_answer, run_bench, run_header, sender_argv,
                      serve_argv, write_section)

API_DEADLINE = 1.0            # s: every request answered within this
WATCH_EVERY = 0.5             # s: the watcher's period
SAMPLE_EVERY = 10.0           # s: RSS, fds, threads
RSS_FLAT = 0.10               # idle RSS after vs before, and under load end vs start
GLIB_KEPT_IDLE_THREADS = 2    # GLib's thread pool keeps two idle threads
RETIRE_TIMEOUT = 25.0         # s: parts stop, GLib retires idle threads (15 s)
CALLERS_PER_COMP = 3
COMPOSITIONS = 2
WARMUP = 120.0                # s of churn before the idle start line
LOAD_WINDOW = 300.0           # s: RSS under load, median of the first and of the last window
LOAD_WINDOW_SMOKE = 5.0
SMOKE_MINUTES = 0.25
SMOKE_REPLACE = 8.0
SMOKE_WARMUP = 5.0
SMOKE_DEADLINE = 140.0
REQUEST_TIMEOUT = 10.0


class Slow(BenchError):
    pass


class Server:
    """`tutti serve` on free loopback ports, and every request to it timed."""

    def __init__(self, bench: "Soak"):
        self.dir = bench.workdir / "tutti"
        self.dir.mkdir()
        http_port = free_tcp_port()
        self.first, self.last = free_udp_range(200)
        self.base = f"http://127.0.0.1:{http_port}"
        self.argv = serve_argv(bench.tutti, http_port, (self.first, self.last), self.dir)
        env = dict(os.environ)
        env.setdefault("RUST_LOG", "info")
        self.proc = Proc("tutti", self.argv, self.dir / "tutti.log", env=env, cwd=REPO)
        self.times: list[float] = []
        self.slow: list[str] = []
        self.lock = threading.Lock()
        deadline = time.monotonic() + 30
        while True:
            try:
                if self.request("GET", "/healthz", timed=False)[0] == 200:
                    break
            except Slow:
                pass
            if not self.proc.alive() or time.monotonic() > deadline:
                raise BenchError(f"tutti did not answer /healthz\n{self.proc.tail()}")
            time.sleep(0.1)
        self.pid = self.proc.pid

    def request(self, method: str, path: str, body: dict | None = None, timed: bool = True) -> tuple[int, dict | str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            req.add_header("content-type", "application/json")
        started = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=REQUEST_TIMEOUT) as r:
                status, text = r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            status, text = e.code, e.read().decode(errors="replace")
        except (urllib.error.URLError, OSError) as e:
            raise Slow(f"{method} {path}: no answer within {REQUEST_TIMEOUT:.0f} s ({e!r})") from e
        took = time.monotonic() - started
        if timed:
            with self.lock:
                self.times.append(took)
                if took > API_DEADLINE:
                    self.slow.append(f"{method} {path} took {took:.2f} s")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def expect(self, status: set[int], method: str, path: str, body: dict | None = None) -> dict | str:
        got, reply = self.request(method, path, body)
        if got not in status:
            raise BenchError(f"{method} {path}: {got} {reply}\n{self.proc.tail()}")
        return reply

    def footprint(self) -> dict:
        status = dict(line.split(":", 1) for line in open(f"/proc/{self.pid}/status") if ":" in line)
        return {"rss_mib": int(status["VmRSS"].split()[0]) / 1024,
                "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
                "threads": int(status["Threads"]),
                "ports": self.bound_ports()}

    def bound_ports(self) -> int:
        """UDP ports of its RTP range that some socket has bound (from /proc)."""
        bound = 0
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                rows = open(table).read().splitlines()[1:]
            except OSError:
                continue
            for row in rows:
                port = int(row.split()[1].rsplit(":", 1)[1], 16)
                bound += self.first <= port <= self.last
        return bound


class Composition:
    def __init__(self, soak: "Soak", n: int):
        self.soak, self.server = soak, soak.server
        reply = self.server.expect({201}, "POST", "/v1/compositions", {
            "name": f"soak-{n}", "video": {"width": 640, "height": 360, "keyframe_interval_secs": 1}})
        self.id = reply["id"]
        self.born = time.monotonic()
        self.callers: list[dict] = []      # {pid, sender}
        self.outputs: list[tuple[str, float]] = []   # (id, due)

    def join(self) -> None:
        s = self.soak
        s.serial += 1
        audio, video = s.drain.pair(), s.drain.pair()
        name = f"soak-caller-{s.serial}"
        reply = self.server.expect({201}, "POST", f"/v1/compositions/{self.id}/participants",
                                   {"name": name, "sdp": offer_sdp(name, audio, video, s.serial)})
        answer = parse_answer(reply["sdp"])
        sender = Proc(f"sender-{s.serial}", sender_argv(s.workload.files[s.serial % len(s.workload.files)], answer),
                      s.workdir / f"sender-{s.serial}.log", stop_signal=signal.SIGKILL)
        self.callers.append({"pid": reply["id"], "sender": sender})
        s.counts["joins"] += 1

    def leave(self) -> None:
        caller = self.callers.pop(random.randrange(len(self.callers)))
        self.server.expect({204, 202}, "DELETE", f"/v1/compositions/{self.id}/participants/{caller['pid']}")
        caller["sender"].stop(grace=1)
        self.soak.counts["leaves"] += 1

    def add_output(self, kind: str | None = None) -> None:
        s = self.soak
        kind = kind or random.choice(["hls", "record", "rtmp"])
        body = {"kind": kind}
        if kind == "record":
            s.recordings += 1
            body["path"] = f"soak-{s.recordings}.{['mkv', 'mp4'][s.recordings % 2]}"
        elif kind == "rtmp":
            body["url"] = s.nginx.url(f"soak{s.counts['outputs_added']}")
        reply = self.server.expect({201}, "POST", f"/v1/compositions/{self.id}/outputs", body)
        self.outputs.append((reply["id"], time.monotonic() + random.choice([0.0, random.uniform(0.2, 6.0)])))
        s.counts["outputs_added"] += 1

    def remove_due_outputs(self, everything: bool = False) -> None:
        now = time.monotonic()
        for oid, due in list(self.outputs):
            if everything or due <= now:
                self.server.expect({204, 202}, "DELETE", f"/v1/compositions/{self.id}/outputs/{oid}")
                self.outputs.remove((oid, due))
                self.soak.counts["outputs_removed"] += 1

    def delete(self) -> None:
        self.server.expect({204, 202}, "DELETE", f"/v1/compositions/{self.id}")
        for caller in self.callers:
            caller["sender"].stop(grace=1)
        self.soak.counts["compositions_replaced"] += 1


class Soak:
    def __init__(self, args):
        self.args = args
        self.smoke = args.smoke
        self.minutes = SMOKE_MINUTES if self.smoke else args.minutes
        self.replace = SMOKE_REPLACE if self.smoke else args.replace
        self.warmup = SMOKE_WARMUP if self.smoke else WARMUP
        self.workdir = Path(tempfile.mkdtemp(prefix="tutti-soak-"))
        self.counts = {k: 0 for k in ("joins", "leaves", "outputs_added", "outputs_removed", "compositions_replaced")}
        self.serial = 0
        self.recordings = 0
        self.composition_serial = 0
        self.comps: list[Composition] = []
        self.samples: list[dict] = []
        self.watch_stop = threading.Event()
        self.watch_error: list[str] = []

    def watch(self) -> None:
        """The watcher: /healthz and each live composition, every 0.5 s."""
        while not self.watch_stop.wait(WATCH_EVERY):
            try:
                self.server.request("GET", "/healthz")
                for comp in list(self.comps):
                    self.server.request("GET", f"/v1/compositions/{comp.id}")
            except BenchError as e:
                self.watch_error.append(str(e))
                return

    def run(self) -> int:
        self.t_start = time.monotonic()
        self.commit, self.dirty = git_state()
        for tool in ("ffmpeg", "nginx"):
            if not shutil.which(tool):
                raise BenchError(f"missing tool {tool}; run scripts/install-deps.sh")
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))   # four drained sockets per caller ever joined
        self.tutti = find_tutti(self.args.tutti, self.smoke, self.args.build)
        self.workload = Workload(640, 360, 20 if self.smoke else 60)
        ensure_cache(self.workload)
        self.nginx = Nginx(self.workdir)
        self.drain = Drain()
        self.drain.start()
        self.server = Server(self)
        fresh = self.server.footprint()
        watcher = threading.Thread(target=self.watch, daemon=True)
        watcher.start()

        # Warm-up: the server reaches its working set (plugins loaded, pools and
        # allocator grown), then everything goes and the idle start line is read.
        self.churn(self.warmup)
        self.close_all()
        idle_before = self.settle(fresh)
        log(f"idle before, after {self.warmup:.0f} s of warm-up churn: {idle_before}")

        self.churn(60 * self.minutes, sample=True)
        self.close_all()
        self.watch_stop.set()
        watcher.join(timeout=5)
        idle_after = self.settle(idle_before)
        log(f"idle after: {idle_after}")
        window = LOAD_WINDOW_SMOKE if self.smoke else LOAD_WINDOW
        measured = self.samples[-1]["t"] if self.samples else 0
        median = lambda xs: statistics.median(xs) if xs else 0.0
        load = {"start": median([x["rss_mib"] for x in self.samples if x["t"] <= window]),
                "end": median([x["rss_mib"] for x in self.samples if x["t"] >= measured - window]),
                "window_s": window}
        self.figures = {"idle_before": idle_before, "idle_after": idle_after, "load": load, "counts": self.counts,
                        "slow": self.server.slow, "times": self.time_figures(), "samples": self.samples}
        verdict = self.verdict()
        if not self.smoke:
            self.write()
        return verdict

    def churn(self, seconds: float, sample: bool = False) -> None:
        """Two compositions, the older replaced every `--replace` s; callers
        joining and leaving every 2-5 s; outputs added every 2-6 s."""
        started = time.monotonic()
        self.comps = [self.new_composition() for _ in range(COMPOSITIONS)]
        next_sample = next_join = next_output = started
        while time.monotonic() < started + seconds:
            now = time.monotonic()
            if self.watch_error:
                raise BenchError(f"the watcher: {self.watch_error[0]}\n{self.server.proc.tail()}")
            if not self.server.proc.alive():
                raise BenchError(f"tutti exited\n{self.server.proc.tail()}")
            if sample and now >= next_sample:
                self.samples.append({"t": now - started, **self.server.footprint()})
                next_sample = now + SAMPLE_EVERY
            oldest = min(self.comps, key=lambda c: c.born)
            if now - oldest.born >= self.replace:
                self.comps.remove(oldest)
                oldest.delete()
                self.comps.append(self.new_composition())
            for comp in self.comps:
                comp.remove_due_outputs()
            if now >= next_join:
                comp = random.choice(self.comps)
                if len(comp.callers) < CALLERS_PER_COMP:
                    comp.join()
                if len(comp.callers) >= CALLERS_PER_COMP and random.random() < 0.7:
                    comp.leave()
                next_join = now + random.uniform(2.0, 5.0)
            if now >= next_output:
                random.choice(self.comps).add_output()
                next_output = now + random.uniform(2.0, 6.0)
            time.sleep(0.05)

    def new_composition(self) -> Composition:
        self.composition_serial += 1
        return Composition(self, self.composition_serial)

    def close_all(self) -> None:
        comps, self.comps = self.comps, []
        for comp in comps:
            comp.remove_due_outputs(everything=True)
            comp.delete()

    def settle(self, before: dict) -> dict:
        """Waits (bounded) for every part to stop and GLib to retire idle threads.

        The footprint is read between two `/healthz` answers that both say no
        part is stopping, and 0.5 s after the first: read right after a
        request, it counted the server's side of that request's connection
        (seen 6 times in 2000 such reads), a false "open fds" leak."""
        deadline = time.monotonic() + RETIRE_TIMEOUT
        was_stopped = False
        while True:
            now = self.server.footprint()
            health = self.server.request("GET", "/healthz", timed=False)[1]
            stopped = isinstance(health, dict) and health.get("parts_stopping") == 0
            if was_stopped and stopped and now["threads"] <= before["threads"] + GLIB_KEPT_IDLE_THREADS and now["ports"] == 0:
                return {**now, "parts_stuck": health.get("parts_stuck")}
            if time.monotonic() > deadline:
                return {**now, "parts_stuck": health.get("parts_stuck") if isinstance(health, dict) else None}
            was_stopped = stopped
            time.sleep(0.5)

    def time_figures(self) -> dict:
        t = sorted(self.server.times)
        if not t:
            return {}
        q = lambda p: t[min(len(t) - 1, int(p * len(t)))]
        return {"requests": len(t), "p50_ms": 1000 * statistics.median(t), "p99_ms": 1000 * q(0.99),
                "max_ms": 1000 * t[-1], "over_1s": sum(x > API_DEADLINE for x in t)}

    def problems(self) -> list[str]:
        f = self.figures
        before, after = f["idle_before"], f["idle_after"]
        p = []
        if f["times"].get("over_1s"):
            p.append(f"{f['times']['over_1s']} requests took over 1 s: {'; '.join(f['slow'][:3])}")
        if after["fds"] > before["fds"]:
            p.append(f"open fds {before['fds']} before, {after['fds']} after")
        if after["ports"]:
            p.append(f"{after['ports']} RTP ports still bound after every composition was deleted")
        if after["threads"] > before["threads"] + GLIB_KEPT_IDLE_THREADS:
            p.append(f"threads {before['threads']} before, {after['threads']} after")
        if after.get("parts_stuck"):
            p.append(f"{after['parts_stuck']} parts stuck")
        # Memory is judged over the full run only: half a minute tells nothing.
        if not self.smoke and after["rss_mib"] > before["rss_mib"] * (1 + RSS_FLAT):
            p.append(f"idle RSS {before['rss_mib']:.0f} MiB before, {after['rss_mib']:.0f} MiB after")
        load = f["load"]
        if not self.smoke and load["end"] > load["start"] * (1 + RSS_FLAT):
            p.append(f"RSS under load, median of the first {load['window_s']:.0f} s {load['start']:.0f} MiB, "
                     f"of the last {load['end']:.0f} MiB")
        return p

    def verdict(self) -> int:
        f = self.figures
        t = f["times"]
        print(f"soak: RSS under load, median of the first and the last {f['load']['window_s']:.0f} s: "
              f"{f['load']['start']:.0f} and {f['load']['end']:.0f} MiB")
        print(f"soak: {self.minutes:g} min, {f['counts']}")
        print(f"soak: {t.get('requests', 0)} requests, p50 {t.get('p50_ms', 0):.1f} ms, p99 {t.get('p99_ms', 0):.1f} ms, "
              f"max {t.get('max_ms', 0):.1f} ms, over 1 s: {t.get('over_1s', 0)}")
        print(f"soak: idle before {f['idle_before']}, after {f['idle_after']}")
        problems = self.problems()
        if self.smoke and f["counts"]["joins"] < 5:
            problems.append(f"too little churn: {f['counts']}")
        if problems:
            print(("SMOKE FAILED" if self.smoke else "SOAK FAILED") + ":\n  " + "\n  ".join(problems))
            return 1
        print(f"soak ok in {time.monotonic() - self.t_start:.0f} s")
        return 0

    def write(self) -> None:
        f = self.figures
        t, b, a, load, c = f["times"], f["idle_before"], f["idle_after"], f["load"], f["counts"]
        rss = [x["rss_mib"] for x in f["samples"]]
        windows = []
        for start in range(0, int(60 * self.minutes), 300):
            xs = [x["rss_mib"] for x in f["samples"] if start <= x["t"] < start + 300]
            if xs:
                windows.append(f"{min(xs):.0f}–{max(xs):.0f}")
        L = ["## 4. Soak: half an hour of churn (`soak.py`)", ""]
        L += run_header(self.command(), self.t_start, self.commit, self.dirty, self.tutti) + [""]
        L += [f"{self.warmup:.0f} s of warm-up churn, then {self.minutes:g} min measured: in all {c['joins']} joins and "
              f"{c['leaves']} leaves (senders replaying 640x360 H.264 + Opus), {c['outputs_added']} outputs added and "
              f"{c['outputs_removed']} removed (HLS, recordings, RTMP to nginx, each after 0-6 s), two compositions at "
              f"a time with the older replaced every {self.replace:g} s ({c['compositions_replaced']} deleted), and a "
              f"watcher asking `/healthz` and each composition every {WATCH_EVERY} s.", "",
              "| API response time | requests | p50 | p99 | max | over 1 s |", "|---|---|---|---|---|---|",
              f"| every request | {t['requests']} | {t['p50_ms']:.1f} ms | {t['p99_ms']:.1f} ms | **{t['max_ms']:.0f} ms** "
              f"| **{t['over_1s']}** |", "",
              "| idle | RSS | open fds | threads | RTP ports bound |", "|---|---|---|---|---|",
              f"| before (after the warm-up, everything removed) | {b['rss_mib']:.0f} MiB | {b['fds']} | {b['threads']} "
              f"| {b['ports']} |",
              f"| after the {self.minutes:g} min, everything removed | {a['rss_mib']:.0f} MiB | {a['fds']} | "
              f"{a['threads']} | {a['ports']} |", "",
              f"RSS under load, median of the first {load['window_s'] / 60:.0f} min {load['start']:.0f} MiB, of the last "
              f"{load['window_s'] / 60:.0f} min {load['end']:.0f} MiB; min–max per 5 min: {', '.join(windows)} MiB "
              f"(whole run max {max(rss):.0f} MiB; how many parts are alive at a sample varies)."]
        problems = self.problems()
        L += ["", "Verdict: " + ("**flat**: no request over 1 s, no part stuck, fds and ports back to the start, threads "
                                 "within the two GLib keeps idle, RSS within 10 % (idle, and under load)."
                                 if not problems else "**not flat**: " + "; ".join(problems))]
        write_section("soak", "\n".join(L))
        (CACHE / "soak-results.json").write_text(json.dumps(f, indent=1))

    def command(self) -> str:
        return f"python3 bench/soak.py --minutes {self.args.minutes:g} --replace {self.args.replace:g}"

    def cleanup(self) -> None:
        self.watch_stop.set()
        Proc.kill_all()
        if getattr(self, "drain", None):
            self.drain.close()
        if not self.args.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"kept {self.workdir}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0, help="how long the churn lasts")
    ap.add_argument("--replace", type=float, default=60.0, help="seconds between composition replacements")
    ap.add_argument("--smoke", action="store_true", help=f"{SMOKE_MINUTES:g} min, compositions replaced every "
                    f"{SMOKE_REPLACE:g} s, nothing written (CI)")
    ap.add_argument("--tutti", help="the tutti binary (default: target/release/tutti, built if missing)")
    ap.add_argument("--build", action="store_true", help="cargo build --release first (else only if missing)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs of every process)")
    args = ap.parse_args()
    if args.minutes <= 0 or args.replace < 5:
        ap.error("--minutes > 0, --replace >= 5")
    return run_bench(lambda: Soak(args), args.smoke, SMOKE_DEADLINE)


if __name__ == "__main__":
    sys.exit(main())
