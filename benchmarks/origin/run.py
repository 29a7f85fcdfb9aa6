#!/usr/bin/env python3
"""Media origin benchmark: `lectern serve` /media against nginx serving the
same segment bytes from a plain directory, same run, same load.

Input: Big Buck Bunny (infra/dev/sample-clip) transcoded by `lectern
transcode` (default profile). Its init and media segments are staged twice:
  * as Lectern objects under an fs storage root, key
    assets/<id>/out/attempt-1/<file> (the fs backend's documented on-disk
    format: content, JSON metadata trailer, length, magic; the run checks
    every object through the origin — same bytes, ETag = SHA-256 — so a
    format change fails the run instead of measuring garbage);
  * as plain files under an nginx root (`sendfile on`, as a static origin
    or a CDN edge serves them).

Load: wrk, the same threads, connections and duration against both, each
request a whole segment, round-robin over every segment of every rung,
with a valid signed playback token on every URL (nginx ignores it).
Lectern checks the token (HMAC-SHA256) on every request; no session
binding, logging at `warn`. Two Lectern servers: the default (hot objects
from its memory cache, LECTERN_ORIGIN_CACHE_MIB=256, which holds this
whole ladder) and one with the cache off (every request reads the fs
store), so both paths are measured. Two alternating rounds per server
after a warm-up; the better round of each is reported.

Reported: requests/s, MB/s, p50/p99 latency, and lectern / nginx ratios
(goal >= 0.8). Results go to benchmarks/RESULTS.md (section replaced).

`--compare OTHER_BINARY` adds a third Lectern server (cache on) from another
build to the same alternating rounds, so two builds are compared in one
invocation on the same nginx: on a VM whose speed drifts between
invocations, that is the only comparison that means anything. An older
build that refuses a setting this one needs is started without it
(`--compare-unset LECTERN_DEV_OUTBOX`, e.g. for `db3eb6f`).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".lectern" / "bench" / "origin"
ASSET = uuid.UUID("0b1e5e6e-0000-4000-8000-00000000be9c")
PREFIX = f"assets/{ASSET}/out/attempt-1"
IMMUTABLE = "public, max-age=31536000, immutable"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)








def stage(ladder, fs_root, plain_root):
    """Segments and init segments as fs-backend objects and as plain files."""
    files = sorted(p for p in ladder.rglob("*") if p.suffix in (".m4s", ".mp4"))
    for d in (fs_root, plain_root):
        shutil.rmtree(d, ignore_errors=True)
    paths = []
    for f in files:
        rel = f.relative_to(ladder).as_posix()
        data = f.read_bytes()
        key = f"{PREFIX}/{rel}"
        content_type = "video/iso.segment" if f.suffix == ".m4s" else "video/mp4"
        trailer = json.dumps({
            "size": len(data), "etag": hashlib.sha256(data).hexdigest(),
            "content_type": content_type, "cache_control": IMMUTABLE,
        }, separators=(",", ":")).encode()
        obj = fs_root / "objects" / key
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data + trailer + struct.pack("<I", len(trailer)) + b"LCTNOBJ1")
        plain = plain_root / "media" / key
        plain.parent.mkdir(parents=True, exist_ok=True)
        plain.write_bytes(data)
        paths.append((f"/media/{key}", data))
    return paths


def wait_http(url, timeout=90):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return
        except Exception:
            time.sleep(0.2)
    raise SystemExit(f"{url} did not come up")




NGINX_CONF = """
worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/tmp;
    proxy_temp_path {prefix}/tmp;
    fastcgi_temp_path {prefix}/tmp;
    uwsgi_temp_path {prefix}/tmp;
    scgi_temp_path {prefix}/tmp;
    types {{ video/iso.segment m4s; video/mp4 mp4; }}
    server {{
        listen 127.0.0.1:{port};
        root {root};
        add_header Cache-Control "{cache}";
        add_header Access-Control-Allow-Origin "*";
    }}
}}
"""

WRK_LUA = """
local paths = {paths}
local i = 0
request = function()
  i = i + 1
  return wrk.format("GET", paths[(i % #paths) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {{"requests":%d,"bytes":%d,"duration_us":%d,"status_errors":%d,' ..
    '"socket_errors":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.bytes, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def wrk(url_base, paths, threads, connections, seconds, script_path):
    lua_paths = "{" + ",".join(json.dumps(p) for p in paths) + "}"
    script_path.write_text(WRK_LUA.format(paths=lua_paths))
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", str(script_path), url_base],
        check=True, capture_output=True, text=True).stdout
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(m.group(1))
    if r["status_errors"] or r["socket_errors"]:
        raise SystemExit(f"{url_base}: {r['status_errors']} non-2xx/3xx and {r['socket_errors']} socket errors")
    secs = r["duration_us"] / 1e6
    return {"rps": r["requests"] / secs, "mbps": r["bytes"] / secs / 1e6,
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lectern", default=None, help="lectern binary (default: release build)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per server (nginx varies between rounds on a shared VM)")
    ap.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    ap.add_argument("--compare", default=None, help="another lectern build, measured in the same rounds")
    ap.add_argument("--compare-unset", action="append", default=[],
                    help="a LECTERN_ setting the --compare build does not know (repeatable)")
    args = ap.parse_args()
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    lectern = Path(args.lectern) if args.lectern else target / "release" / "lectern"
    if not args.lectern:
        sh(["cargo", "build", "--release", "--locked", "--bin", "lectern"], cwd=ROOT)
    WORK.mkdir(parents=True, exist_ok=True)

    clip = subprocess.run([str(ROOT / "infra/dev/sample-clip")], check=True, capture_output=True,
                          text=True).stdout.strip()
    ladder = WORK / "ladder"
    if not (ladder / "master.m3u8").exists():
        shutil.rmtree(ladder, ignore_errors=True)
        sh([str(lectern), "transcode", clip, "--out", str(ladder)], stdout=subprocess.DEVNULL)
    # nginx workers run as `nobody` when nginx starts as root, so its files
    # live in a world-readable scratch directory, not under the checkout.
    scratch = Path(tempfile.mkdtemp(prefix="lectern-origin-bench-"))
    scratch.chmod(0o755)
    staged = stage(ladder, WORK / "fs", scratch / "plain")
    total = sum(len(d) for _, d in staged)

    secret = os.urandom(32)
    kid = "bench"
    token = benchlib.sign_playback(kid, secret, ASSET, int(time.time()) + 3600)
    paths = [f"{p}?token={token}" for p, _ in staged]

    # Embedded defaults only: each server its own private PostgreSQL (an
    # external DATABASE_URL would also need every deployment secret).
    env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_") and k != "DATABASE_URL"}
    lectern_port, uncached_port, nginx_port = free_port(), free_port(), free_port()
    env.update({
        "LECTERN_DATA_DIR": str(WORK / "data"),
        "LECTERN_FS_ROOT": str(WORK / "fs"),
        "LECTERN_SERVE_WORKERS": "0",
        "LECTERN_PLAYBACK_KEYS": f"{kid}:{base64.b64encode(secret).decode()}",
        "LECTERN_LOG": "warn",
        "LECTERN_DEV_OUTBOX": "true",
    })
    nginx_prefix = scratch / "nginx"
    (nginx_prefix / "tmp").mkdir(parents=True)
    for dirpath, _, filenames in os.walk(scratch):
        os.chmod(dirpath, 0o755)
        for f in filenames:
            os.chmod(os.path.join(dirpath, f), 0o644)
    conf = nginx_prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=os.cpu_count() or 1, prefix=nginx_prefix, port=nginx_port,
                                      root=scratch / "plain", cache=IMMUTABLE))

    server = subprocess.Popen([str(lectern), "serve"], cwd=WORK, stdout=subprocess.DEVNULL,
                              env=dict(env, LECTERN_HTTP_ADDR=f"127.0.0.1:{lectern_port}"),
                              stderr=open(WORK / "lectern.log", "w"))
    # Its own data dir: each embedded database has one server.
    uncached = subprocess.Popen([str(lectern), "serve"], cwd=WORK, stdout=subprocess.DEVNULL,
                                env=dict(env, LECTERN_HTTP_ADDR=f"127.0.0.1:{uncached_port}",
                                         LECTERN_DATA_DIR=str(WORK / "data-uncached"),
                                         LECTERN_ORIGIN_CACHE_MIB="0"),
                                stderr=open(WORK / "lectern-uncached.log", "w"))
    nginx = subprocess.Popen(["nginx", "-p", str(nginx_prefix), "-c", str(conf), "-g", "daemon off;"])
    processes = [server, uncached, nginx]
    compare_url = None
    if args.compare:
        compare_port = free_port()
        compare_env = {k: v for k, v in env.items() if k not in args.compare_unset}
        processes.append(subprocess.Popen(
            [args.compare, "serve"], cwd=WORK, stdout=subprocess.DEVNULL,
            env=dict(compare_env, LECTERN_HTTP_ADDR=f"127.0.0.1:{compare_port}",
                     LECTERN_DATA_DIR=str(WORK / "data-compare")),
            stderr=open(WORK / "lectern-compare.log", "w")))
        compare_url = f"http://127.0.0.1:{compare_port}"
    try:
        lectern_url = f"http://127.0.0.1:{lectern_port}"
        uncached_url = f"http://127.0.0.1:{uncached_port}"
        nginx_url = f"http://127.0.0.1:{nginx_port}"
        lecterns = [lectern_url, uncached_url] + ([compare_url] if compare_url else [])
        # /media reads each asset's encryption state (cached) from the
        # schema, so wait for readiness (migrations applied), as a load
        # balancer would.
        for base in lecterns:
            benchlib.wait_ready(f"{base}/readyz")
        wait_http(f"{nginx_url}/")
        # All serve the same bytes, and the origins' validators are right.
        for (path, data), url in zip(staged, paths):
            for base in lecterns + [nginx_url]:
                with urllib.request.urlopen(base + url) as r:
                    body = r.read()
                    if body != data:
                        raise SystemExit(f"{base}{path}: served bytes differ from the ladder's")
                    if base != nginx_url and r.headers["ETag"] != f'"{hashlib.sha256(data).hexdigest()}"':
                        raise SystemExit(f"{path}: unexpected ETag {r.headers['ETag']}")
        script = WORK / "wrk.lua"
        # The compared build right after this one, so each round's pair runs back to back.
        servers = {"lectern": lectern_url, **({"compare": compare_url} if compare_url else {}),
                   "uncached": uncached_url, "nginx": nginx_url}
        for base in servers.values():
            wrk(base, paths, args.threads, args.connections, 2, script)
        rounds = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, base in servers.items():
                rounds[name].append(wrk(base, paths, args.threads, args.connections, args.seconds, script))
    finally:
        for p in processes:
            p.terminate()
        for p in processes:
            p.wait(timeout=60)
        shutil.rmtree(scratch, ignore_errors=True)

    best = {k: max(v, key=lambda r: r["rps"]) for k, v in rounds.items()}
    l, u, n = best["lectern"], best["uncached"], best["nginx"]
    lines = [
        f"{len(staged)} objects (init + media segments of every rung), {total / len(staged) / 1024:.0f} KiB "
        f"on average; wrk -t{args.threads} -c{args.connections}, {args.seconds} s per round, {args.rounds} rounds each "
        "alternating after a 2 s warm-up, best round shown.\n",
        "| server | requests/s | MB/s | p50 ms | p99 ms | all rounds (req/s) |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for name, label in (("nginx", "nginx, plain files (`sendfile`)"),
                        ("lectern", "lectern serve `/media` (fs store, token checked, memory cache: default)"),
                        ("uncached", "lectern serve `/media`, `LECTERN_ORIGIN_CACHE_MIB=0` (reads the fs store)")):
        r = best[name]
        every = ", ".join(f"{x['rps']:.0f}" for x in rounds[name])
        lines.append(f"| {label} | {r['rps']:.0f} | {r['mbps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {every} |")
    if "compare" in best:
        r = best["compare"]
        every = ", ".join(f"{x['rps']:.0f}" for x in rounds["compare"])
        lines.append(f"| `--compare` build `{args.compare}` (memory cache: default) | {r['rps']:.0f} | "
                     f"{r['mbps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {every} |")
    lines.append("")
    lines.append(f"lectern / nginx: **{l['rps'] / n['rps']:.2f}×** requests/s, "
                 f"**{l['mbps'] / n['mbps']:.2f}×** MB/s (goal ≥ 0.8×); with the cache off "
                 f"{u['rps'] / n['rps']:.2f}× requests/s.\n")
    if "compare" in best:
        c = best["compare"]
        # Round by round too: each round's pair ran back to back.
        pairs = ", ".join(f"{a['rps'] / b['rps']:.2f}" for a, b in zip(rounds["lectern"], rounds["compare"]))
        lines.append(f"`--compare` build / nginx: {c['rps'] / n['rps']:.2f}×; this build / the `--compare` "
                     f"build: **{l['rps'] / c['rps']:.2f}×** requests/s (per round: {pairs}).\n")
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        command = " ".join(["benchmarks/origin/run"] + sys.argv[1:])
        benchlib.record("## Media origin (`benchmarks/origin`)",
                        f"Command: `{command}` — {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; "
                        "lectern release build; wrk, lectern and nginx share the machine's cores.", body)




if __name__ == "__main__":
    main()
