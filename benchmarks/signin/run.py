#!/usr/bin/env python3
"""Sign-in burst benchmark: does password hashing stall the server?

Every sign-in runs argon2id (19 MiB, tens of milliseconds of a core, by
design). Lectern runs it on tokio's blocking pool, at most
LECTERN_PASSWORD_HASH_CONCURRENCY at once (default: the cores), so a burst
of sign-ins should queue for argon2 without delaying other requests. This
measures exactly that, in one invocation:

Setup: a fresh database (`lectern_bench_signin` on the server named by
DATABASE_URL, from .lectern/env), one organisation and one learner made
with `lectern admin create-user`; one 512 KiB media segment staged in the
fs store (the fs backend's on-disk format, as benchmarks/origin does; the
run checks the origin serves its exact bytes) under
`assets/<id>/out/attempt-1/`, fetched with a valid signed playback token.
`lectern serve` is a release build, logging at warn, no in-process worker.

Probes: two client processes, one per endpoint, each sending one request
every --probe-ms on its own keep-alive connection and timing it:
`GET /healthz`, and `GET /media/assets/<id>/out/attempt-1/seg.m4s?token=…`
(token checked, bytes from the origin's memory cache after the first
request). Phases, per server configuration:
  1. idle: probes only, --idle-seconds (the baseline);
  2. burst: wrk keeps --burst concurrent sign-ins in flight (closed
     loop: each connection signs in again as soon as it is answered, with
     the right password, so every one runs argon2) for --seconds; the
     probes run from its second second to its last.
Configurations: the default limit, and (--compare-limit, default 64; 0
skips it) a limit as large as the burst, which is what no limit at all
would do: every sign-in's argon2 on a thread of its own (beware: in the
recorded run on 2 cores the server's peak memory then reached 15 GiB).
With --baseline BIN, the same phases against another
binary at its defaults (a build of the code before the limit, which ran
argon2 inline on the async workers).

Reported: p50/p99/max of each probe per phase, sign-ins/s and their
p50/p99, the server's CPU use during the burst (cores) and the load
average. Goal: /healthz and /media p99 under 50 ms during the burst.
Results go to benchmarks/RESULTS.md (section replaced).
"""

import argparse
import base64
import hashlib
import http.client
import json
import multiprocessing
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import env_file, free_port, psql  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".lectern" / "bench" / "signin"
DB_NAME = "lectern_bench_signin"
ORG = "Bench Hospital"
PASSWORD = "correct horse 42"
ASSET = uuid.UUID("0b1e5e6e-0000-4000-8000-00000051691e")
SEGMENT = f"assets/{ASSET}/out/attempt-1/seg.m4s"
IMMUTABLE = "public, max-age=31536000, immutable"
# Where the burst's clients come from: learner n signs in from NETWORK.(n+1).
NETWORK = "198.51.100"












def stage_segment(fs_root, data):
    """One object in the fs backend's on-disk format (content, JSON
    metadata trailer, its length, magic)."""
    trailer = json.dumps({
        "size": len(data), "etag": hashlib.sha256(data).hexdigest(),
        "content_type": "video/iso.segment", "cache_control": IMMUTABLE,
    }, separators=(",", ":")).encode()
    obj = fs_root / "objects" / SEGMENT
    obj.parent.mkdir(parents=True, exist_ok=True)
    obj.write_bytes(data + trailer + struct.pack("<I", len(trailer)) + b"LCTNOBJ1")




def email(n):
    return f"l{n}@bench.example.org"


def metrics(base):
    """Sign-in outcomes and argon2 checks so far (loopback scrapes need no
    credentials)."""
    with urllib.request.urlopen(base + "/metrics") as r:
        text = r.read().decode()
    found = dict(re.findall(r"^(lectern_(?:logins|password_verifications)_total\S*) (\d+)$", text, re.M))
    return {k: int(v) for k, v in found.items()}


def sign_in(base):
    req = urllib.request.Request(f"{base}/api/v1/auth/login", method="POST",
                                 data=json.dumps({"email": email(0), "password": PASSWORD}).encode(),
                                 headers={"Content-Type": "application/json",
                                          "X-Forwarded-For": f"{NETWORK}.1"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def probe(port, path, pace_s, until):
    """Requests `path` every pace_s until `until` (wall clock) on one
    keep-alive connection; each latency in ms, and any non-200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    latencies, failures = [], 0
    next_at = time.time()
    while time.time() < until:
        started = time.perf_counter()
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        latencies.append((time.perf_counter() - started) * 1000)
        if r.status != 200:
            failures += 1
        next_at += pace_s
        pause = next_at - time.time()
        if pause > 0:
            time.sleep(pause)
        else:
            next_at = time.time()
    conn.close()
    return latencies, failures


def percentile(values, p):
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[k]


def summary(latencies, failures):
    return {"n": len(latencies), "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "max": max(latencies) if latencies else float("nan"), "failures": failures}


WRK_LUA = """
-- One connection per thread, one learner per connection, each from an
-- address of its own (X-Forwarded-For, the server trusting 127.0.0.1 as
-- its proxy): a learner never has more than one sign-in in flight.
local threads = 0
setup = function(thread)
  thread:set("learner", threads)
  threads = threads + 1
end
request = function()
  local body = '{{"email":"l' .. learner .. '@bench.example.org","password":"{password}"}}'
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json",
    ["X-Forwarded-For"] = "{network}." .. (learner + 1)}}, body)
end
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {{"requests":%d,"duration_us":%d,"status_errors":%d,' ..
    '"socket_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d}}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def cpu_seconds(pid):
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid):
    """The process's peak resident memory so far."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_phases(pool, server, port, paths, args, burst_script):
    """Idle probes, then probes during the sign-in burst (from its second
    second to its last, so they see the burst at full strength)."""
    pace = args.probe_ms / 1000
    phases = {}
    until = time.time() + args.idle_seconds
    idle = [pool.apply_async(probe, (port, p, pace, until)) for p in paths]
    phases["idle"] = [summary(*r.get()) for r in idle]

    counted = metrics(f"http://127.0.0.1:{port}")
    cpu_start, started = cpu_seconds(server.pid), time.time()
    wrk = subprocess.Popen(
        ["wrk", "-t", str(args.burst), "-c", str(args.burst), "-d", f"{args.seconds}s", "--timeout", "30s",
         "-s", str(burst_script), f"http://127.0.0.1:{port}/api/v1/auth/login"],
        stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    until = started + args.seconds - 1
    during = [pool.apply_async(probe, (port, p, pace, until)) for p in paths]
    phases["burst"] = [summary(*r.get()) for r in during]
    out, _ = wrk.communicate()
    phases["cpu_cores"] = (cpu_seconds(server.pid) - cpu_start) / (time.time() - started)
    phases["load"] = os.getloadavg()
    phases["peak_rss_mib"] = peak_rss_mib(server.pid)
    after = metrics(f"http://127.0.0.1:{port}")
    phases["counted"] = {k: after[k] - counted.get(k, 0) for k in after}
    if wrk.returncode != 0:
        raise SystemExit(f"wrk failed:\n{out}")
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    errors = r["status_errors"] + r["socket_errors"] + r["timeouts"]
    phases["signins"] = {"rps": r["requests"] / secs, "requests": r["requests"], "errors": errors,
                         "p50": r["p50_us"] / 1000, "p99": r["p99_us"] / 1000,
                         "detail": f"{r['status_errors']} non-2xx, {r['socket_errors']} socket, "
                                   f"{r['timeouts']} timeouts"}
    return phases


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lectern", default=None, help="lectern binary (default: release build)")
    ap.add_argument("--burst", type=int, default=64, help="sign-ins kept in flight")
    ap.add_argument("--seconds", type=int, default=20, help="length of the burst")
    ap.add_argument("--idle-seconds", type=int, default=10, help="length of the idle baseline")
    ap.add_argument("--probe-ms", type=int, default=10, help="interval of each probe")
    ap.add_argument("--compare-limit", type=int, default=64,
                    help="also run with this hashing limit (0: skip)")
    ap.add_argument("--baseline", default=None,
                    help="also run this lectern binary (say, a build of the previous code) at its defaults")
    ap.add_argument("--no-record", action="store_true", help="do not write RESULTS.md")
    args = ap.parse_args()

    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    lectern = Path(args.lectern) if args.lectern else target / "release" / "lectern"
    if not args.lectern:
        subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "lectern"], cwd=ROOT, check=True)
    env_vars = {**env_file(), **{k: v for k, v in os.environ.items() if k == "DATABASE_URL"}}
    admin_url = env_vars.get("DATABASE_URL") or sys.exit("DATABASE_URL: run infra/dev/services up")
    db_url = admin_url[: admin_url.rfind("/")] + "/" + DB_NAME

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    psql(admin_url, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE); CREATE DATABASE {DB_NAME};")
    key = lambda: base64.b64encode(os.urandom(32)).decode()
    playback_secret = os.urandom(32)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_") and k != "DATABASE_URL"}
    base_env.update({
        "DATABASE_URL": db_url, "LECTERN_FIELD_KEYS": f"k1:{key()}", "LECTERN_BLIND_INDEX_KEY": key(),
        "LECTERN_TOKEN_KEY": key(),
        "LECTERN_PLAYBACK_KEYS": f"bench:{base64.b64encode(playback_secret).decode()}",
        "LECTERN_SERVE_WORKERS": "0", "LECTERN_LOG": "warn", "LECTERN_DEV_OUTBOX": "true",
        "LECTERN_DATA_DIR": str(WORK / "data"), "LECTERN_FS_ROOT": str(WORK / "fs"),
        "LECTERN_TRUSTED_PROXIES": "127.0.0.1",
    })
    run = lambda *a, stdin=None: subprocess.run([str(lectern), *a], env=base_env, input=stdin, text=True,
                                                check=True, capture_output=True).stdout
    run("migrate")
    run("admin", "create-org", ORG)
    # One learner per sign-in in flight: an account's attempts are reserved
    # before they are checked, so more than the account limit (5) in flight
    # for one account would be answered 429 unchecked.
    print(f"creating {args.burst} learners…", flush=True)
    with ThreadPoolExecutor(4) as creating:
        list(creating.map(lambda n: run("admin", "create-user", "--org", ORG, "--email", email(n),
                                        "--role", "learner", stdin=PASSWORD), range(args.burst)))
    segment = os.urandom(512 * 1024)
    stage_segment(WORK / "fs", segment)
    token = benchlib.sign_playback("bench", playback_secret, ASSET, int(time.time()) + 3600)
    media_path = f"/media/{SEGMENT}?token={token}"
    paths = ["/healthz", media_path]
    burst_script = WORK / "signin.lua"
    burst_script.write_text(WRK_LUA.format(password=PASSWORD, network=NETWORK))

    cores = os.cpu_count()
    # (label in the table, file label, binary, hashing limit)
    configs = [(f"default ({cores}, the cores)", "default", lectern, None)]
    if args.compare_limit:
        configs.append((f"{args.compare_limit} (as many as the burst: no limit)",
                        f"limit-{args.compare_limit}", lectern, args.compare_limit))
    if args.baseline:
        configs.append(("previous code (`--baseline`: argon2 inline on the async workers)", "baseline",
                        Path(args.baseline), None))
    results = []
    load_before = os.getloadavg()
    with multiprocessing.get_context("spawn").Pool(len(paths)) as pool:
        for name, label, binary, limit in configs:
            # Each configuration starts with no counted attempts (a burst
            # cut off at its end leaves its attempts in flight counted).
            psql(db_url, "TRUNCATE login_throttle;")
            port = free_port()
            env = dict(base_env, LECTERN_HTTP_ADDR=f"127.0.0.1:{port}")
            if limit:
                env["LECTERN_PASSWORD_HASH_CONCURRENCY"] = str(limit)
            log = open(WORK / f"lectern-{label}.log", "w")
            server = subprocess.Popen([str(binary), "serve"], env=env, stdout=subprocess.DEVNULL, stderr=log)
            try:
                base = f"http://127.0.0.1:{port}"
                benchlib.wait_ready(base + "/readyz")
                if sign_in(base) != 200:
                    raise SystemExit("the benchmark's learner cannot sign in")
                with urllib.request.urlopen(base + media_path) as r:
                    if r.read() != segment:
                        raise SystemExit("/media served other bytes than the staged segment")
                phases = run_phases(pool, server, port, paths, args, burst_script)
                results.append((name, phases))
            finally:
                server.terminate()
                server.wait(timeout=60)
                log.close()
    lines = [
        f"{args.burst} sign-ins kept in flight by wrk (closed loop, right password: each one runs argon2; "
        f"each connection its own learner from its own address through a trusted proxy, as one address "
        f"may have at most 50 attempts in flight) for {args.seconds} s; probes every {args.probe_ms} ms per endpoint on one keep-alive connection "
        f"each, {args.idle_seconds} s idle first. `/media`: one 512 KiB segment staged in the fs store "
        "(token checked, served from the memory cache).\n",
        "| hashing limit | phase | `/healthz` p50 / p99 / max ms | `/media` p50 / p99 / max ms "
        "| sign-ins/s | sign-in p50 / p99 ms | server CPU (cores) | server peak RSS MiB | load avg (1 min) |",
        "| --- | --- | --- | --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for name, ph in results:
        for phase in ("idle", "burst"):
            h, m = ph[phase]
            cells = [f"{x['p50']:.2f} / **{x['p99']:.2f}** / {x['max']:.1f}"
                     + (f" ({x['failures']} non-200)" if x["failures"] else "") for x in (h, m)]
            if phase == "idle":
                lines.append(f"| {name} | idle | {cells[0]} | {cells[1]} | — | — | — | — | — |")
            else:
                s = ph["signins"]
                errs = f" ({s['detail']})" if s["errors"] else ""
                c = ph["counted"]
                signed_in = c.get('lectern_logins_total{outcome="success"}', 0)
                checks = c.get("lectern_password_verifications_total")
                errs += f"; {signed_in} signed in" + (f", {checks} argon2 checks" if checks is not None else "")
                lines.append(f"| {name} | burst | {cells[0]} | {cells[1]} | {s['rps']:.1f}{errs} "
                             f"| {s['p50']:.0f} / {s['p99']:.0f} | {ph['cpu_cores']:.2f} | {ph['peak_rss_mib']:.0f} "
                             f"| {ph['load'][0]:.2f} |")
    lines.append("")
    default = results[0][1]["burst"]
    worst = max(default[0]["p99"], default[1]["p99"])
    verdict = "met" if worst < 50 else "**not met**"
    lines.append(f"During the burst, with the default limit: `/healthz` p99 **{default[0]['p99']:.1f} ms**, "
                 f"`/media` p99 **{default[1]['p99']:.1f} ms** (goal < 50 ms: {verdict})"
                 + "".join(f"; {name.split(' (')[0]}: {ph['burst'][0]['p99']:.1f} and "
                           f"{ph['burst'][1]['p99']:.1f} ms" for name, ph in results[1:])
                 + ". "
                 f"Load average before the run {load_before[0]:.2f}.\n")
    body = "\n".join(lines)
    print(body)
    if not args.no_record:
        command = " ".join(["benchmarks/signin/run"] + sys.argv[1:])
        machine = f"{os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
        benchlib.record("## Sign-in burst (`benchmarks/signin`)",
                        f"Command: `{command}` — {machine}; lectern release build; wrk, the probes, "
                        "PostgreSQL and lectern share the machine's cores.", body)




if __name__ == "__main__":
    main()
