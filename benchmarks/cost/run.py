#!/usr/bin/env python3
"""Cost benchmark: bytes per learner-hour and quality, Lectern's content-aware
ladder against a fixed Apple-style ladder, same run, same source.

Corpus (generated here, nothing downloaded):
  * slides:       a deck of six slides with fine 18 px text, a chart and a
                  slide number, a new slide every 20 s; one voice on both
                  channels
  * talking head: a speaker-sized moving picture (Big Buck Bunny, 400x400)
                  on a still background with a slide beside it; one voice
  * motion:       Big Buck Bunny 720p, 32 s (infra/dev/sample-clip), stereo

Fixed ladder ("Apple-style", after Apple's HLS authoring specification):
1280x720 3000k, 960x540 2000k, 768x432 1100k, 640x360 365k, 416x234 145k,
x264 at the same preset as Lectern's profile, average bitrate held within
10 % (maxrate 1.1x, buffer 2x), keyframes every 2 s, 6 s segments, AAC-LC
stereo 128 kb/s.

Lectern: `lectern transcode --profile default` (content rules decide the
rungs, CRF, tune, segment length and audio per title).

Figures per title:
  * stored bytes per media hour: every rendition (video and audio);
  * streamed bytes per learner-hour: the top rung plus audio, what a learner
    on a good connection fetches;
  * quality at each of the fixed ladder's bandwidths: the fixed rung's SSIM
    against the SSIM of the Lectern rung a player with that bandwidth would
    pick (the highest whose BANDWIDTH fits). Both sides' bandwidths are the
    BANDWIDTH their masters declare (peak, audio included), so a tier is the
    connection a learner needs to play the fixed rung. Quality is each
    rung scaled back to the source size with lanczos and compared with the
    source, every second frame.

Goal (issue #22): on lecture content (slides, talking head) Lectern's bytes
are at most 0.5x the fixed ladder's, at equal or better quality at every
bandwidth; on motion no quality is lost.
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

ROOT = benchlib.ROOT
WORK = ROOT / ".lectern" / "bench" / "cost"
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
FIXED_LADDER = [(1280, 720, 3000), (960, 540, 2000), (768, 432, 1100), (640, 360, 365), (416, 234, 145)]
FIXED_AUDIO_KBPS = 128
FIXED_SEGMENT_S = 6
FIXED_GOP_S = 2

WORDS = ("myocardial perfusion imaging stress protocol adenosine regadenoson ischaemia "
         "troponin biomarker sensitivity specificity guideline recommendation dosage "
         "contraindication renal clearance interaction cohort randomised placebo "
         "endpoint hazard ratio confidence interval mortality readmission").split()


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def ffmpeg(*args):
    sh(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args])


def slide_texts(n, lines):
    """Deterministic bullet text: the same deck on every run."""
    out = []
    k = 0
    for s in range(n):
        body = []
        for _ in range(lines):
            words = [WORDS[(k * 7 + j * 3) % len(WORDS)] for j in range(9)]
            k += 1
            body.append("• " + " ".join(words))
        out.append((f"Lecture 3 - Cardiac imaging ({s + 1}/{n})", body))
    return out


def draw_slides(seconds, x0=60, width_chars=None):
    """A drawtext/drawbox filter chain drawing one slide per 20 s."""
    n = max(1, seconds // 20)
    parts = []
    for s, (title, body) in enumerate(slide_texts(n, 14)):
        on = f"between(t,{s * 20},{s * 20 + 20})"
        tfile = WORK / f"slide{s}.txt"
        tfile.write_text("\n".join(b[:width_chars] if width_chars else b for b in body))
        parts.append(f"drawtext=fontfile={FONT}:text='{title}':fontsize=40:fontcolor=0x1a3d7c:"
                     f"x={x0}:y=40:enable='{on}'")
        parts.append(f"drawtext=fontfile={FONT}:textfile={tfile}:fontsize=18:line_spacing=14:"
                     f"fontcolor=black:x={x0}:y=120:enable='{on}'")
        for b in range(5):
            h = 40 + ((s * 37 + b * 53) % 140)
            parts.append(f"drawbox=x={x0 + 900 + b * 45}:y={640 - h}:w=30:h={h}:color=0x3b7dd8@1:t=fill:"
                         f"enable='{on}'")
    return ",".join(parts)


def voice(seconds):
    """A wandering tone with breath noise, identical on both channels."""
    return (f"aevalsrc='0.25*sin(2*PI*(170+50*sin(2*PI*t/3))*t)*(0.6+0.4*sin(2*PI*t/1.7))"
            f"+0.01*random(0)':s=48000:d={seconds},pan=stereo|c0=c0|c1=c0")


def make_corpus(real):
    WORK.mkdir(parents=True, exist_ok=True)
    slides = WORK / "slides-120s.mp4"
    if not slides.exists():
        ffmpeg("-f", "lavfi", "-i", "color=white:size=1280x720:rate=30:duration=120",
               "-f", "lavfi", "-i", voice(120),
               "-vf", draw_slides(120), "-c:v", "libx264", "-preset", "veryfast", "-crf", "12",
               "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "256k", "-shortest", str(slides))
    head = WORK / "talking-head-120s.mp4"
    if not head.exists():
        ffmpeg("-f", "lavfi", "-i", "color=0xf4f1ea:size=1280x720:rate=30:duration=120",
               "-stream_loop", "-1", "-i", str(real),
               "-f", "lavfi", "-i", voice(120),
               "-filter_complex",
               f"[0:v]{draw_slides(120, x0=40, width_chars=48)}[bg];"
               "[1:v]fps=30,crop=400:400:440:160[spk];[bg][spk]overlay=x=840:y=160:shortest=1[v]",
               "-map", "[v]", "-map", "2:a", "-t", "120",
               "-c:v", "libx264", "-preset", "veryfast", "-crf", "12", "-pix_fmt", "yuv420p",
               "-c:a", "aac", "-b:a", "256k", str(head))
    return [("slides", slides), ("talking head", head), ("motion", real)]


def profile(name):
    with open(ROOT / "pipelines" / "profiles" / f"{name}.toml", "rb") as f:
        return tomllib.load(f)


def duration(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                          str(path)], check=True, capture_output=True, text=True).stdout
    return float(out.strip())


def fps_of(src):
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                          "stream=avg_frame_rate", "-of", "csv=p=0", str(src)],
                         check=True, capture_output=True, text=True).stdout.strip()
    num, den = out.split("/")
    return float(num) / float(den)


def run_fixed(src, out, preset):
    """The fixed ladder: one ffmpeg, decode once, every rung at its fixed rate."""
    gop = round(FIXED_GOP_S * min(fps_of(src), 30))
    n = len(FIXED_LADDER)
    graph = f"[0:v]split={n}" + "".join(f"[s{i}]" for i in range(n)) + ";" + ";".join(
        f"[s{i}]scale={w}:{h}[o{i}]" for i, (w, h, _) in enumerate(FIXED_LADDER))
    cmd = ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(src), "-filter_complex", graph]
    for i in range(n):
        cmd += ["-map", f"[o{i}]"]
    # One output frame per source frame: ffmpeg's default frame-rate mode
    # duplicates frames at the start of multi-variant HLS output, which
    # shifts every later frame and would cost the fixed ladder SSIM.
    cmd += ["-fps_mode", "passthrough"]
    for i, (_, _, kbps) in enumerate(FIXED_LADDER):
        cmd += [f"-c:v:{i}", "libx264", f"-preset:v:{i}", preset, f"-b:v:{i}", f"{kbps}k",
                f"-maxrate:v:{i}", f"{round(kbps * 1.1)}k", f"-bufsize:v:{i}", f"{kbps * 2}k",
                f"-g:v:{i}", str(gop), f"-keyint_min:v:{i}", str(gop), f"-sc_threshold:v:{i}", "0",
                f"-profile:v:{i}", "high", f"-pix_fmt:v:{i}", "yuv420p"]
    cmd += ["-map", "0:a:0", "-c:a", "aac", "-b:a", f"{FIXED_AUDIO_KBPS}k", "-ac", "2"]
    cmd += ["-var_stream_map", " ".join(f"v:{i},agroup:aud" for i in range(n)) + " a:0,agroup:aud",
            "-master_pl_name", "master.m3u8",
            "-f", "hls", "-hls_time", str(FIXED_SEGMENT_S), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-hls_flags", "independent_segments",
            "-hls_segment_filename", str(out / "%v" / "seg_%05d.m4s"), str(out / "%v" / "index.m3u8")]
    sh(cmd)
    # A tier is the connection a player needs for that rung: the BANDWIDTH
    # ffmpeg declares in the master (peak, with the audio), compared below
    # with Lectern's own declared BANDWIDTH, never a nominal video rate.
    declared = {m.group(2).strip(): int(re.search(r"(?<![-A-Z])BANDWIDTH=(\d+)", m.group(1)).group(1))
                for m in re.finditer(r"#EXT-X-STREAM-INF:([^\n]*)\n([^\n]+)", (out / "master.m3u8").read_text())}
    video = [{"height": h, "nominal_kbps": kbps, "bandwidth": declared[f"{i}/index.m3u8"],
              "playlist": out / str(i) / "index.m3u8", "bytes": dir_bytes(out / str(i))}
             for i, (_, h, kbps) in enumerate(FIXED_LADDER)]
    audio_bytes = dir_bytes(out / str(n))
    return video, audio_bytes


def run_lectern(lectern, src, out, profile_name):
    res = subprocess.run([str(lectern), "transcode", str(src), "--out", str(out), "--profile", profile_name],
                         check=True, capture_output=True, text=True)
    master = (out / "master.m3u8").read_text()
    video = []
    for m in re.finditer(r"#EXT-X-STREAM-INF:([^\n]*)\n([^\n]+)", master):
        attrs, uri = m.group(1), m.group(2).strip()
        res_m = re.search(r"RESOLUTION=(\d+)x(\d+)", attrs)
        if not res_m:
            continue  # the audio-only variant
        playlist = out / uri
        video.append({"height": int(res_m.group(2)),
                      "bandwidth": int(re.search(r"(?<![-A-Z])BANDWIDTH=(\d+)", attrs).group(1)),
                      "playlist": playlist, "bytes": dir_bytes(playlist.parent)})
    audio_bytes = sum(dir_bytes(d) for d in (out / "a").iterdir())
    content = {}
    m = re.search(r"^content: (.*)$", res.stdout, re.M)
    if m:
        content = dict(kv.split("=", 1) for kv in m.group(1).split())
        content = {"class": content["class"], "still_share": float(content["still_share"]),
                   "moving_area": float(content["moving_area"]), "single_voice": content["single_voice"] == "true"}
    return video, audio_bytes, content


def dir_bytes(directory):
    return sum(p.stat().st_size for p in Path(directory).rglob("*") if p.suffix in (".mp4", ".m4s"))


def quality(rendition, src):
    """SSIM of a rung scaled back to the source's size, every second frame.
    Both start at time zero: the HLS muxer may shift a ladder's first
    timestamp, and the filter pairs frames by timestamp."""
    w, h = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                           "stream=width,height", "-of", "csv=p=0", str(src)],
                          check=True, capture_output=True, text=True).stdout.strip().split(",")
    res = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostats", "-i", str(rendition), "-i", str(src), "-lavfi",
         f"[0:v]setpts=PTS-STARTPTS,scale={w}:{h}:flags=lanczos,format=yuv420p,framestep=2[up];"
         f"[1:v]setpts=PTS-STARTPTS,format=yuv420p,framestep=2[ref];[up][ref]ssim", "-f", "null", "-"],
        capture_output=True, text=True)
    m = re.search(r"SSIM .*All:([0-9.]+)", res.stderr)
    if not m:
        raise SystemExit(f"ssim failed for {rendition}: {res.stderr[-400:]}")
    return float(m.group(1))


def bench(name, src, lectern, profile_name):
    media_s = duration(src)
    per_hour = 3600.0 / media_s
    out_f, out_l = WORK / "out" / name / "fixed", WORK / "out" / name / "lectern"
    for d in (out_f, out_l):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    print(f"[{name}] fixed ladder …", file=sys.stderr)
    fixed, fixed_audio = run_fixed(src, out_f, profile(profile_name)["x264_preset"])
    print(f"[{name}] lectern …", file=sys.stderr)
    ours, our_audio, content = run_lectern(lectern, src, out_l, profile_name)
    for r in fixed + ours:
        r["ssim"] = quality(r["playlist"], src)
    ours.sort(key=lambda r: r["bandwidth"])
    tiers = []
    for f in fixed:
        fitting = [r for r in ours if r["bandwidth"] <= f["bandwidth"]]
        # None: no Lectern rung fits this bandwidth (reported, not compared).
        tiers.append((f, fitting[-1] if fitting else None))
    top_fixed, top_ours = max(fixed, key=lambda r: r["bandwidth"]), ours[-1]
    return {
        "media_s": media_s,
        "content": content,
        "stored_fixed": (sum(r["bytes"] for r in fixed) + fixed_audio) * per_hour,
        "stored_ours": (sum(r["bytes"] for r in ours) + our_audio) * per_hour,
        "streamed_fixed": (top_fixed["bytes"] + fixed_audio) * per_hour,
        "streamed_ours": (top_ours["bytes"] + our_audio) * per_hour,
        "tiers": tiers,
        "ours": ours,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lectern", default=None, help="lectern binary (default: release build)")
    ap.add_argument("--profile", default="default")
    ap.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    lectern = Path(args.lectern) if args.lectern else target / "release" / "lectern"
    if not args.lectern:
        sh(["cargo", "build", "--release", "--locked", "--bin", "lectern"], cwd=ROOT)
    real = Path(subprocess.run([str(ROOT / "infra/dev/sample-clip"), "--seconds", "32"],
                               check=True, capture_output=True, text=True).stdout.strip())
    results = [(name, bench(name, src, lectern, args.profile)) for name, src in make_corpus(real)]

    mb = lambda b: f"{b / 1e6:,.1f}"  # noqa: E731
    lines = ["| title | class (still / moving) | Lectern rungs | stored MB/h fixed → Lectern (ratio) "
             "| streamed MB per learner-hour fixed → Lectern (ratio) | worst SSIM Lectern − fixed |",
             "| --- | --- | --- | ---: | ---: | ---: |"]
    detail = []
    for name, r in results:
        c = r["content"]
        cls = (f"{c.get('class', '?')} ({c.get('still_share', 0):.2f} / {c.get('moving_area', 0):.3f})"
               + (", one voice" if c.get("single_voice") else "")) if c else "?"
        rungs = ", ".join(f"{x['height']}p {x['bandwidth'] // 1000}k" for x in reversed(r["ours"]))
        compared = [p["ssim"] - f["ssim"] for f, p in r["tiers"] if p]
        worst = min(compared) if compared else float("nan")
        lines.append(f"| {name} | {cls} | {rungs} | {mb(r['stored_fixed'])} → {mb(r['stored_ours'])} "
                     f"({r['stored_ours'] / r['stored_fixed']:.2f}×) | {mb(r['streamed_fixed'])} → "
                     f"{mb(r['streamed_ours'])} ({r['streamed_ours'] / r['streamed_fixed']:.2f}×) | {worst:+.4f} |")
        detail.append(f"\n{name}, quality at each fixed bandwidth (fixed rung SSIM → the Lectern rung a "
                      "player picks at that bandwidth):\n")
        detail.append("| BANDWIDTH (declared) | fixed rung | SSIM | Lectern rung | SSIM |")
        detail.append("| ---: | --- | ---: | --- | ---: |")
        for f, p in r["tiers"]:
            ours_cell = (f"{p['height']}p ({p['bandwidth'] // 1000}k peak) | {p['ssim']:.4f}" if p else
                         f"no rung fits (lowest peaks at {r['ours'][0]['bandwidth'] // 1000}k) | —")
            detail.append(f"| {f['bandwidth'] // 1000}k | {f['height']}p {f['nominal_kbps']}k | {f['ssim']:.4f} "
                          f"| {ours_cell} |")
    body = "\n".join(lines + detail)
    print(body)
    if not args.no_record:
        preamble = (f"Command: `{' '.join(['benchmarks/cost/run'] + sys.argv[1:])}` — {os.cpu_count()} cores, "
                    f"{time.strftime('%Y-%m-%d')}; lectern release build; profile `{args.profile}`.")
        benchlib.record("## Cost per learner-hour (`benchmarks/cost`)", preamble, body)


if __name__ == "__main__":
    main()
