#!/usr/bin/env python3
"""Benchmark 4: soak. Half an hour of churn on this machine, and whether
Tutti stays answerable and gives back what it takes.

Churn, all at random moments: two compositions (640x360, 1 s GOPs) live at a
time, the older one deleted and a new one created every `--replace` seconds;
callers (light senders replaying the cached 640x360 files) join and leave
every 2-5 s, about three per composition; outputs of every kind (HLS, a
recording, RTMP to a local nginx) added every 2-6 s and removed 0-6 s later.

Measured:
  - every API request's response time, the churn's own and a watcher's that
    asks /healthz and each composition every 0.5 s: p50, p99, max, and how
    many took over 1 s (the bar: none);
  - the server's RSS, open file descriptors and threads every 10 s;
  - idle before and idle after: RSS, file descriptors, threads and the UDP
    ports bound in its RTP range, once a first composition with every kind
    of part has come and gone (plugins loaded), and again once every
    composition is deleted, every part has stopped and GLib's thread pool
    has retired its idle threads (the bar: fds and ports back to the start,
    threads within the two GLib keeps, RSS within 10 %);
  - under load, RSS after the warm-up and at the end of the churn.

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
WARMUP = 60.0                 # s of churn before the 'under load, start' reading
SMOKE_MINUTES = 0.75
SMOKE_REPLACE = 20.0
SMOKE_WARMUP = 10.0
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
        self.samples: list[dict] = []
        self.watch_stop = threading.Event()
        self.watch_error: list[str] = []

    def watch(self, comps: list[Composition]) -> None:
        """The watcher: /healthz and each live composition, every 0.5 s."""
        while not self.watch_stop.wait(WATCH_EVERY):
            try:
                self.server.request("GET", "/healthz")
                for comp in list(comps):
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
        idle_before = self.prime()
        log(f"idle before: {idle_before}")

        comps: list[Composition] = [Composition(self, i) for i in range(COMPOSITIONS)]
        self.serial_comps = COMPOSITIONS
        watcher = threading.Thread(target=self.watch, args=(comps,), daemon=True)
        watcher.start()
        end = self.t_start + 60 * self.minutes
        next_sample = time.monotonic()
        next_join = next_output = time.monotonic()
        load_start = None
        while time.monotonic() < end:
            now = time.monotonic()
            if self.watch_error:
                raise BenchError(f"the watcher: {self.watch_error[0]}\n{self.server.proc.tail()}")
            if not self.server.proc.alive():
                raise BenchError(f"tutti exited\n{self.server.proc.tail()}")
            if now >= next_sample:
                self.samples.append({"t": now - self.t_start, **self.server.footprint()})
                next_sample = now + SAMPLE_EVERY
            if load_start is None and now - self.t_start >= self.warmup:
                load_start = self.server.footprint()
                log(f"under load, after the warm-up: {load_start}")
            oldest = min(comps, key=lambda c: c.born)
            if now - oldest.born >= self.replace:
                comps.remove(oldest)
                oldest.delete()
                comps.append(Composition(self, self.serial_comps))
                self.serial_comps += 1
            for comp in comps:
                comp.remove_due_outputs()
            if now >= next_join:
                comp = random.choice(comps)
                if len(comp.callers) < CALLERS_PER_COMP or not comp.callers:
                    comp.join()
                if len(comp.callers) > CALLERS_PER_COMP - 1 and random.random() < 0.7:
                    comp.leave()
                next_join = now + random.uniform(2.0, 5.0)
            if now >= next_output:
                random.choice(comps).add_output()
                next_output = now + random.uniform(2.0, 6.0)
            time.sleep(0.05)
        load_end = self.server.footprint()
        log(f"under load, at the end: {load_end}")

        for comp in comps:
            comp.remove_due_outputs(everything=True)
        for comp in comps:
            comp.delete()
        self.watch_stop.set()
        watcher.join(timeout=5)
        idle_after = self.settle(idle_before)
        log(f"idle after: {idle_after}")
        self.figures = {"idle_before": idle_before, "idle_after": idle_after, "load_start": load_start or load_end,
                        "load_end": load_end, "counts": self.counts, "slow": self.server.slow,
                        "times": self.time_figures(), "samples": self.samples}
        verdict = self.verdict()
        if not self.smoke:
            self.write()
        return verdict

    def prime(self) -> dict:
        """The start line: idle, after one composition with every kind of part
        came and went, so that plugins are loaded and one-time allocations made
        (a fresh server is ~60 MiB smaller, and that is not what churn costs)."""
        fresh = self.server.footprint()
        comp = Composition(self, -1)
        for _ in range(2):
            comp.join()
        for kind in ("hls", "record", "record", "rtmp"):
            comp.add_output(kind)
        time.sleep(3)
        comp.remove_due_outputs(everything=True)
        comp.delete()
        self.counts = {k: 0 for k in self.counts}
        self.server.times.clear()
        return self.settle(fresh)

    def settle(self, before: dict) -> dict:
        """Waits (bounded) for every part to stop and GLib to retire idle threads."""
        deadline = time.monotonic() + RETIRE_TIMEOUT
        while True:
            health = self.server.request("GET", "/healthz", timed=False)[1]
            now = self.server.footprint()
            stopped = isinstance(health, dict) and health.get("parts_stopping") == 0
            if stopped and now["threads"] <= before["threads"] + GLIB_KEPT_IDLE_THREADS and now["ports"] == 0:
                return {**now, "parts_stuck": health.get("parts_stuck")}
            if time.monotonic() > deadline:
                return {**now, "parts_stuck": health.get("parts_stuck") if isinstance(health, dict) else None}
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
        # Memory is judged over the full run only: a minute of smoke is mostly first uses.
        if not self.smoke and after["rss_mib"] > before["rss_mib"] * (1 + RSS_FLAT):
            p.append(f"idle RSS {before['rss_mib']:.0f} MiB before, {after['rss_mib']:.0f} MiB after")
        start, end = f["load_start"], f["load_end"]
        if not self.smoke and end["rss_mib"] > start["rss_mib"] * (1 + RSS_FLAT):
            p.append(f"RSS under load {start['rss_mib']:.0f} MiB after the warm-up, {end['rss_mib']:.0f} MiB at the end")
        return p

    def verdict(self) -> int:
        f = self.figures
        t = f["times"]
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
        t, b, a, s, e = f["times"], f["idle_before"], f["idle_after"], f["load_start"], f["load_end"]
        c = f["counts"]
        rss = [x["rss_mib"] for x in f["samples"]]
        later = [x["rss_mib"] for x in f["samples"] if x["t"] >= self.warmup]
        L = ["## 4. Soak: half an hour of churn (`soak.py`)", ""]
        L += run_header(self.command(), self.t_start, self.commit, self.dirty, self.tutti) + [""]
        L += [f"Churn over {self.minutes:g} min: {c['joins']} joins and {c['leaves']} leaves (senders replaying 640x360 "
              f"H.264 + Opus), {c['outputs_added']} outputs added and {c['outputs_removed']} removed (HLS, recordings, "
              f"RTMP to nginx, each after 0-6 s), two compositions at a time with the older replaced every "
              f"{self.replace:g} s ({c['compositions_replaced']} replaced), and a watcher asking `/healthz` and each "
              f"composition every {WATCH_EVERY} s.", "",
              "| API response time | requests | p50 | p99 | max | over 1 s |", "|---|---|---|---|---|---|",
              f"| every request | {t['requests']} | {t['p50_ms']:.1f} ms | {t['p99_ms']:.1f} ms | **{t['max_ms']:.0f} ms** "
              f"| **{t['over_1s']}** |", "",
              "| | RSS | open fds | threads | RTP ports bound |", "|---|---|---|---|---|",
              f"| idle, after a first composition came and went | {b['rss_mib']:.0f} MiB | {b['fds']} | {b['threads']} | {b['ports']} |",
              f"| idle, after the churn | {a['rss_mib']:.0f} MiB | {a['fds']} | {a['threads']} | {a['ports']} |",
              f"| under load, after {self.warmup:.0f} s | {s['rss_mib']:.0f} MiB | {s['fds']} | {s['threads']} | {s['ports']} |",
              f"| under load, at the end | {e['rss_mib']:.0f} MiB | {e['fds']} | {e['threads']} | {e['ports']} |", ""]
        if later:
            L.append(f"RSS every {SAMPLE_EVERY:.0f} s after the warm-up: min {min(later):.0f}, median "
                     f"{statistics.median(later):.0f}, max {max(later):.0f} MiB (whole run: max {max(rss):.0f} MiB).")
        problems = self.problems()
        L += ["", "Verdict: " + ("**flat**: no request over 1 s, fds and ports back to the start, threads within the two "
                                 "GLib keeps idle, RSS within 10 %." if not problems else "**not flat**: " + "; ".join(problems))]
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
