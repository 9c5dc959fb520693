"""Picture quality of a 2x2 composite against one reference, so that a
contender that is cheaper is not cheaper by being uglier.

The reference of each cell is its source file decoded and scaled to the cell
with Lanczos (ffmpeg), uncompressed: what a contender would show with a
perfect scaler and no encoding loss. Every contender starts from the same
decoded sources, so its score is what its scaling and its encode lost.

A live compositor shows, in output frame k, whichever source frame had
arrived: the offset between output and source is unknown, and a frame may be
repeated or skipped. So each cell is aligned frame by frame first, on
signatures of the output cell and of every source frame: small RGB
thumbnails and the corner where testsrc2 prints its frame number. A coarse
search over a short run of frames finds which source the cell shows and from
where, then each output frame takes the nearest-looking source frame at most
a few frames ahead of the last. The aligned reference frames are then piped
to ffmpeg's own `ssim` and `psnr` filters, with the cell cropped from the
output.

Only the standard library and ffmpeg.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from benchlib import FPS, BenchError, run_checked

THUMB = (64, 36)               # alignment thumbnails, RGB: the sources differ in hue only
COARSE = (16, 9)               # the coarse search's thumbnails
THUMB_BYTES = THUMB[0] * THUMB[1] * 3
COARSE_BYTES = COARSE[0] * COARSE[1] * 3
# testsrc2 prints its time and frame number in the top left corner; its moving
# shapes repeat, so without this the coarse search can take a frame seconds away.
STAMP = (48, 16)               # that corner of a cell, grey, unscaled
STAMP_BYTES = STAMP[0] * STAMP[1]
COARSE_RUN = 12                # consecutive output frames the coarse search matches at once
STEP_BACK, STEP_AHEAD = 1, 3   # how far the next matched source frame may be from the last one
FFMPEG_TIMEOUT = 300.0


def _frames(raw: bytes, size: int) -> list[bytes]:
    return [raw[i:i + size] for i in range(0, len(raw) - size + 1, size)]


def _sad(a: bytes, b: bytes) -> int:
    return sum(abs(x - y) for x, y in zip(a, b))


@dataclass
class Signatures:
    """Per frame of one cell: what the alignment compares."""
    thumbs: list[bytes]         # THUMB, RGB
    coarse: list[bytes]         # COARSE, RGB: which source
    stamps: list[bytes]         # STAMP, grey: where in the source


class _Signatures:
    """The three signature streams of one cell, written by ffmpeg next to `stem`."""

    def __init__(self, stem: Path):
        self.paths = [stem.with_name(stem.name + ext) for ext in (".thumb", ".coarse", ".stamp")]

    def graph(self, tag: str) -> str:
        """Filters from the pads [t{tag}][c{tag}][s{tag}] (the cell, three times) to three outputs."""
        return (f"[t{tag}]scale={THUMB[0]}:{THUMB[1]}:flags=area,format=rgb24[th{tag}];"
                f"[c{tag}]scale={COARSE[0]}:{COARSE[1]}:flags=area,format=rgb24[co{tag}];"
                f"[s{tag}]crop={STAMP[0]}:{STAMP[1]}:0:0,format=gray[st{tag}]")

    def maps(self, tag: str) -> list[str]:
        argv = []
        for pad, path in zip(("th", "co", "st"), self.paths):
            argv += ["-map", f"[{pad}{tag}]", "-fps_mode", "passthrough", "-f", "rawvideo", str(path)]
        return argv

    def read(self) -> Signatures:
        return Signatures(*(_frames(p.read_bytes(), size)
                            for p, size in zip(self.paths, (THUMB_BYTES, COARSE_BYTES, STAMP_BYTES))))


class References:
    """Every source decoded once: its cell-sized Lanczos frames (raw I420 on
    disk) and its thumbnails (in memory)."""

    def __init__(self, sources: list[Path], cell: tuple[int, int], workdir: Path):
        self.cell = cell
        self.frame_bytes = cell[0] * cell[1] * 3 // 2
        self.raw: list[Path] = []
        self.signatures: list[Signatures] = []
        for i, src in enumerate(sources):
            raw = workdir / f"ref{i}.yuv"
            cw, ch = cell
            graph = f"[0:v]scale={cw}:{ch}:flags=lanczos,format=yuv420p,split=4[f][t][c][s]"
            sigs = _Signatures(workdir / f"ref{i}")
            run_checked(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(src),
                         "-filter_complex", graph + ";" + sigs.graph(""),
                         "-map", "[f]", "-fps_mode", "passthrough", "-f", "rawvideo", str(raw)] + sigs.maps(""),
                        timeout=FFMPEG_TIMEOUT)
            self.raw.append(raw)
            self.signatures.append(sigs.read())

    def remove(self) -> None:
        for p in self.raw:
            p.unlink(missing_ok=True)


@dataclass
class CellQuality:
    cell: int                   # 0..3, row by row
    source: int                 # which source it shows
    ssim: float                 # ffmpeg ssim, All (Y, U, V weighted)
    psnr: float                 # ffmpeg psnr, average over the planes, dB
    repeated: int               # output frames that showed the previous frame's source frame again
    skipped: int                # source frames never shown between the first and last matched


@dataclass
class Quality:
    frames: int
    video_kbps: float           # the recording's H.264 over the evaluated frames
    cells: list[CellQuality]

    @property
    def ssim(self) -> float:
        return statistics.mean(c.ssim for c in self.cells)

    @property
    def psnr(self) -> float:
        return statistics.mean(c.psnr for c in self.cells)


def _cell_origins(width: int, height: int) -> list[tuple[int, int]]:
    cw, ch = width // 2, height // 2
    return [(0, 0), (cw, 0), (0, ch), (cw, ch)]


def _align(cell: Signatures, refs: References) -> tuple[int, list[int]]:
    """(source, source frame per output frame) for one cell."""
    best = None
    run = range(min(COARSE_RUN, len(cell.coarse)))
    for s, ref in enumerate(refs.signatures):
        n = len(ref.coarse)
        for start in range(n):
            cost = 0
            for k in run:
                j = (start + k) % n
                cost += _sad(cell.coarse[k], ref.coarse[j]) + _sad(cell.stamps[k], ref.stamps[j])
                if best is not None and cost >= best[0]:
                    break
            else:
                best = (cost, s, start)
    _, source, start = best
    ref = refs.signatures[source]
    n = len(ref.thumbs)
    matched = []
    last = start - 1
    for thumb, stamp in zip(cell.thumbs, cell.stamps):
        candidates = [(last + d) % n for d in range(-STEP_BACK, STEP_AHEAD + 1)]
        last = min(candidates, key=lambda j: _sad(thumb, ref.thumbs[j]) + _sad(stamp, ref.stamps[j]))
        matched.append(last)
    return source, matched


def _to_bt709(recording: Path) -> str:
    """A filter that brings the recording's pixels to BT.709, which the
    references are (untagged HD sources, read as BT.709 as players and
    GStreamer do): the matrix it is tagged with, as a player honouring the tag
    would show it. Untagged is taken as BT.709 as well."""
    space = run_checked(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                         "stream=color_space", "-of", "csv=p=0", str(recording)], timeout=60).strip()
    if space in ("", "unknown", "bt709"):
        return ""
    # fast=1: the matrix only, as GStreamer's and ffmpeg's converters do by default.
    return f",colorspace=all=bt709:iall={space}:fast=1"


def _ffmpeg_scores(recording: Path, first: int, count: int, origin: tuple[int, int], refs: References,
                   source: int, matched: list[int], to_bt709: str) -> tuple[float, float]:
    cw, ch = refs.cell
    x, y = origin
    graph = (f"[0:v]select='between(n\\,{first}\\,{first + count - 1})',crop={cw}:{ch}:{x}:{y}{to_bt709},"
             f"settb=1/{FPS},setpts=N,split[d1][d2];[1:v]settb=1/{FPS},setpts=N,split[r1][r2];"
             f"[d1][r1]ssim[s];[d2][r2]psnr[p]")
    argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "info", "-i", str(recording),
            "-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{cw}x{ch}", "-framerate", str(FPS), "-i", "pipe:0",
            "-filter_complex", graph, "-map", "[s]", "-f", "null", "-", "-map", "[p]", "-f", "null", "-"]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def feed():
        try:
            with open(refs.raw[source], "rb") as f:
                for j in matched:
                    f.seek(j * refs.frame_bytes)
                    proc.stdin.write(f.read(refs.frame_bytes))
            proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass

    # The reference goes in from a thread while ffmpeg's report is read here:
    # either side could block on a full pipe otherwise.
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    timer = threading.Timer(FFMPEG_TIMEOUT, proc.kill)
    timer.start()
    try:
        text = proc.stderr.read().decode(errors="replace")
        proc.wait()
    finally:
        timer.cancel()
    writer.join(timeout=5)
    ssim = re.search(r"SSIM .*All:([\d.]+)", text)
    psnr = re.search(r"PSNR .*average:([\d.]+|inf)", text)
    if proc.returncode != 0 or not ssim or not psnr:
        raise BenchError(f"ffmpeg ssim/psnr failed on {recording}:\n{text[-2000:]}")
    return float(ssim.group(1)), float(psnr.group(1))


def composite_quality(recording: Path, width: int, height: int, refs: References, skip_frames: int,
                      count: int, workdir: Path) -> Quality:
    """SSIM and PSNR of each cell of a 2x2 composite recording, frames
    [skip_frames, skip_frames + count), against the references."""
    origins = _cell_origins(width, height)
    cw, ch = refs.cell
    split = "".join(f"[cell{i}]" for i in range(4))
    graph = [f"[0:v]select='between(n\\,{skip_frames}\\,{skip_frames + count - 1})',split=4{split}"]
    maps, sigs = [], []
    to_bt709 = _to_bt709(recording)
    for i, (x, y) in enumerate(origins):
        cell = _Signatures(workdir / f"{recording.stem}-cell{i}")
        graph.append(f"[cell{i}]crop={cw}:{ch}:{x}:{y}{to_bt709},split=3[t{i}][c{i}][s{i}];" + cell.graph(str(i)))
        maps += cell.maps(str(i))
        sigs.append(cell)
    run_checked(["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y", "-i", str(recording),
                 "-filter_complex", ";".join(graph)] + maps, timeout=FFMPEG_TIMEOUT)
    cells = []
    for i, cell in enumerate(sigs):
        signatures = cell.read()
        if len(signatures.thumbs) < count:
            raise BenchError(f"{recording}: {len(signatures.thumbs)} frames after the first {skip_frames}, "
                             f"{count} wanted")
        source, matched = _align(signatures, refs)
        ssim, psnr = _ffmpeg_scores(recording, skip_frames, count, origins[i], refs, source, matched, to_bt709)
        repeated = sum(1 for a, b in zip(matched, matched[1:]) if a == b)
        n = len(refs.signatures[source].thumbs)
        span = (matched[-1] - matched[0]) % n + 1
        skipped = span - len(set(matched))
        cells.append(CellQuality(i, source, ssim, psnr, repeated, max(0, skipped)))
    return Quality(count, _video_kbps(recording, skip_frames, count), cells)


def _video_kbps(recording: Path, first: int, count: int) -> float:
    out = run_checked(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=size",
                       "-of", "csv=p=0", str(recording)], timeout=FFMPEG_TIMEOUT)
    sizes = [int(s) for s in out.split() if s.strip().isdigit()][first:first + count]
    return sum(sizes) * 8 / (len(sizes) / FPS) / 1000 if sizes else 0.0
