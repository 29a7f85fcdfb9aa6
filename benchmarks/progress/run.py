#!/usr/bin/env python3
"""Progress heartbeat benchmark: `POST /api/v1/progress` against a handler
that does nothing, same run, same load, in both absorber modes.

Setup: a fresh database (`lectern_bench_progress` on the server named by
DATABASE_URL, from .lectern/env), one organisation, --users learners made
with `lectern admin create-user`, --lessons published lessons of a 600 s
asset, and one sign-in session per connection inserted directly (tokens
hashed as the API hashes them: signing 10,000 people in through argon2
would only measure argon2). Connection i beats as learner i mod users on
lesson i div users, so with the defaults every connection is a distinct
learner × lesson.

Load: wrk, --connections keep-alive connections over --threads threads;
each request is a heartbeat of the next learner × lesson in turn (further
than its previous one by the interval it claims to have played, speed 1.5,
bearer token of its session, and the playback session each connection
started through the API once the server is up, as a player does — so the
beat is checked against its session and credited against the wall-time
allowance, the path real players take). With --claim real-time (the
default) a beat claims no more than a player could have played since the
previous beat of its learner × lesson — 0.05 s when saturated (a pair is
beaten several times a second), the pace when paced — so every claim is
credited whole and each learner × lesson keeps one watched interval, as
for a real player. --claim overclaim sends 5 s with every saturated beat,
which the credit bound cuts to the wall time: each beat then credits a
fragment of its own, the work a misbehaving client causes. The baseline sends the very same requests
to `POST /api/v1/bench/noop`, registered only with LECTERN_BENCH_NOOP=1:
it authenticates the caller (the same PostgreSQL session lookup) and is
unaudited like a heartbeat, and does nothing else. Per mode (memory,
redis) one `lectern serve` (release build, LECTERN_PROGRESS_FLUSH_INTERVAL
2 s, logging at warn); a warm-up, then two alternating saturated rounds
per endpoint (closed loop: throughput; the better round is reported), then
one paced round per endpoint in which every connection beats every
--pace-ms like a player, so latency is measured at the load of
--connections learners online rather than at saturation.

Reported: requests/s, p50/p99/max latency, errors (non-2xx and socket),
heartbeat / noop throughput (goal >= 0.5), and that every learner ×
lesson reached PostgreSQL through the flusher; then `/metrics` scraped 50
times (p50/p99 and its series count after the load) against `/healthz`. Results go to
benchmarks/RESULTS.md (section replaced).
"""

import argparse
import base64
import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402
from benchlib import env_file, free_port, psql, psql_value  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".lectern" / "bench" / "progress"
DB_NAME = "lectern_bench_progress"
PASSWORD = "correct horse 42"












WRK_LUA = """
local pairs_ = {pairs}
local n = #pairs_
local i = 0
local pos = {{}}
local path = "{path}"
setup = function(thread)
  thread:set("offset", {offset_expr})
end
request = function()
  i = i + 1
  local k = ((i * {threads} + offset) % n) + 1
  local p = (pos[k] or 0) % 590 + {step}
  pos[k] = p
  local pair = pairs_[k]
  local body = '{{"lesson_id":"' .. pair[2] .. '","playback_id":"' .. pair[3] .. '","position_s":' .. p ..
    ',"speed":1.5,"played_from_s":' .. (p - {step}) .. ',"played_to_s":' .. p .. '}}'
  return wrk.format("POST", path, {{["Authorization"] = "Bearer " .. pair[1],
    ["Content-Type"] = "application/json"}}, body)
end
{delay_fn}
done = function(summary, latency, requests)
  io.write(string.format('\\nRESULT {{"requests":%d,"duration_us":%d,"status_errors":%d,' ..
    '"socket_errors":%d,"timeouts":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}}\\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write,
    summary.errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
"""

THREAD_COUNTER = 0


def wrk(base, path, pairs, threads, connections, seconds, script_path, step, pace_ms=0):
    lua_pairs = "{" + ",".join(f'{{"{t}","{l}","{pb}"}}' for t, l, pb in pairs) + "}"
    # wrk's setup() runs once per thread, in order: give each thread its own
    # stride through the learner × lesson pairs.
    script_path.write_text(WRK_LUA.format(
        pairs=lua_pairs, path=path, threads=threads, step=step,
        offset_expr="(function() __t = (__t or -1) + 1; return __t end)()",
        # Paced: each connection beats every pace_ms (± 10 %), like a player.
        delay_fn=(f"delay = function() return math.random({int(pace_ms * 0.9)}, {int(pace_ms * 1.1)}) end"
                  if pace_ms else "")))
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "--timeout", "5s",
         "-s", str(script_path), base],
        check=True, capture_output=True, text=True).stdout
    m = re.search(r"^RESULT (\{.*\})$", out, re.M)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(m.group(1))
    secs = r["duration_us"] / 1e6
    return {"rps": r["requests"] / secs, "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "max_ms": r["max_us"] / 1000, "requests": r["requests"],
            "errors": r["status_errors"] + r["socket_errors"] + r["timeouts"],
            "detail": f"{r['status_errors']} non-2xx, {r['socket_errors']} socket, {r['timeouts']} timeouts"}


def start_playbacks(base, pairs, workers=32):
    """One playback session per connection, started through the API as a
    player starts one (a server in memory mode forgets them on restart)."""
    def start(pair):
        token, lesson = pair
        req = urllib.request.Request(f"{base}/api/v1/lessons/{lesson}/playback", data=b"{}", method="POST",
                                     headers={"Authorization": f"Bearer {token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as r:
            return (token, lesson, json.load(r)["playback_id"])
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(start, pairs))


def time_gets(url, n):
    """p50 and p99 (ms) of n sequential GETs of url (from loopback: /metrics
    needs no credentials there)."""
    took = []
    for _ in range(n):
        t = time.perf_counter()
        urllib.request.urlopen(url, timeout=30).read()
        took.append((time.perf_counter() - t) * 1000)
    took.sort()
    return took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.99))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lectern", default=None, help="lectern binary (default: release build)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--connections", type=int, default=10_000)
    ap.add_argument("--seconds", type=int, default=15)
    ap.add_argument("--users", type=int, default=100)
    ap.add_argument("--lessons", type=int, default=100)
    ap.add_argument("--modes", default="memory,redis")
    ap.add_argument("--pace-ms", type=int, default=5000, help="beat interval of a paced connection")
    ap.add_argument("--paced-seconds", type=int, default=25)
    ap.add_argument("--claim", choices=("real-time", "overclaim"), default="real-time",
                    help="real-time: each beat claims no more media than a player could have played since "
                         "its previous beat (saturated: 0.05 s; paced: the pace), so all of it is credited; "
                         "overclaim: every beat claims 5 s however soon it follows the last (a script "
                         "claiming more than wall time, which the credit bound cuts)")
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < args.connections + 1000:
        raise SystemExit(f"ulimit -n is {hard}; {args.connections} connections need more")

    target = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache/lectern-target"))
    lectern = Path(args.lectern or target / "release" / "lectern")
    if not lectern.exists():
        raise SystemExit(f"{lectern} missing: cargo build --release -p lectern")
    env_vars = {**env_file(), **{k: v for k, v in os.environ.items() if k in ("DATABASE_URL", "REDIS_URL")}}
    admin_url = env_vars.get("DATABASE_URL") or sys.exit("DATABASE_URL: run infra/dev/services up")
    redis_url = env_vars.get("REDIS_URL")
    db_url = admin_url[: admin_url.rfind("/")] + "/" + DB_NAME

    shutil.rmtree(WORK, ignore_errors=True)
    WORK.mkdir(parents=True)
    psql(admin_url, f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE); CREATE DATABASE {DB_NAME};")
    key = lambda: base64.b64encode(os.urandom(32)).decode()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_") and k != "DATABASE_URL"}
    base_env.update({
        "DATABASE_URL": db_url, "LECTERN_FIELD_KEYS": f"k1:{key()}", "LECTERN_BLIND_INDEX_KEY": key(),
        "LECTERN_TOKEN_KEY": key(), "LECTERN_PLAYBACK_KEYS": f"bench:{key()}",
        "LECTERN_SERVE_WORKERS": "0", "LECTERN_LOG": "warn",
        "LECTERN_DATA_DIR": str(WORK / "data"), "LECTERN_BENCH_NOOP": "1",
        "LECTERN_PROGRESS_FLUSH_INTERVAL": "2s", "LECTERN_DEV_OUTBOX": "true",
    })
    run = lambda *a, stdin=None: subprocess.run([str(lectern), *a], env=base_env, input=stdin, text=True,
                                                check=True, capture_output=True).stdout
    run("migrate")
    run("admin", "create-org", "Bench Hospital")
    print(f"creating {args.users} learners…", flush=True)
    for u in range(args.users):
        run("admin", "create-user", "--org", "Bench Hospital", "--email", f"l{u}@bench.example.org",
            "--role", "learner", stdin=PASSWORD)
    users = psql_value(db_url, "SELECT string_agg(id::text, ',' ORDER BY id) FROM users").split(",")
    org = psql_value(db_url, "SELECT id FROM organisations WHERE name = 'Bench Hospital'")
    course = uuid.uuid4()
    sql = [f"INSERT INTO courses (id, organisation_id, title, state, published_at) "
           f"VALUES ('{course}', '{org}', 'Bench course', 'published', now());"]
    lessons = []
    for n in range(args.lessons):
        asset, lesson = uuid.uuid4(), uuid.uuid4()
        lessons.append(str(lesson))
        sql.append(f"INSERT INTO assets (id, organisation_id, status, source_key, duration_s, output_prefix) "
                   f"VALUES ('{asset}', '{org}', 'ready', 'sources/{asset}', 600, 'assets/{asset}/out/attempt-1/');")
        sql.append(f"INSERT INTO lessons (id, organisation_id, course_id, title, position, asset_id) "
                   f"VALUES ('{lesson}', '{org}', '{course}', 'Lesson {n}', {n}, '{asset}');")
    pairs = []
    rows = []
    for i in range(args.connections):
        token = "ls_bench" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
        user = users[i % len(users)]
        lesson = lessons[(i // len(users)) % len(lessons)]
        pairs.append((token, lesson))
        rows.append(f"('{uuid.uuid4()}','{user}','\\x{hashlib.sha256(token.encode()).hexdigest()}',now() + interval '1 day')")
    for chunk in range(0, len(rows), 1000):
        sql.append("INSERT INTO sessions (id, user_id, token_hash, expires_at) VALUES "
                   + ",".join(rows[chunk:chunk + 1000]) + ";")
    psql(db_url, "\n".join(sql))
    distinct = len(set((t_l[1], users[i % len(users)]) for i, t_l in enumerate(pairs)))

    results = {}
    for mode in args.modes.split(","):
        env = dict(base_env, LECTERN_PROGRESS_BACKEND=mode)
        if mode == "redis":
            if not redis_url:
                raise SystemExit("REDIS_URL: run infra/dev/services up")
            env.update(REDIS_URL=redis_url, LECTERN_PROGRESS_REDIS_PREFIX=f"lectern-bench:{uuid.uuid4()}:")
        psql(db_url, "TRUNCATE lesson_progress, learner_preferences;")
        port = free_port()
        env["LECTERN_HTTP_ADDR"] = f"127.0.0.1:{port}"
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([str(lectern), "serve"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(WORK / f"serve-{mode}.log", "w"))
        try:
            benchlib.wait_ready(base + "/readyz")
            print(f"[{mode}] starting {len(pairs)} playback sessions…", flush=True)
            beats = start_playbacks(base, pairs)
            script = WORK / "wrk.lua"
            # Media seconds one beat claims: see --claim.
            fast_step = 0.05 if args.claim == "real-time" else 5
            paced_step = args.pace_ms / 1000 if args.claim == "real-time" else 5
            print(f"[{mode}] warm-up", flush=True)
            wrk(base, "/api/v1/progress", beats, args.threads, args.connections, 5, script, fast_step)
            wrk(base, "/api/v1/bench/noop", beats, args.threads, args.connections, 5, script, fast_step)
            rounds = {"noop": [], "heartbeat": [], "paced noop": [], "paced heartbeat": []}
            for r in range(2):
                for name, path in (("noop", "/api/v1/bench/noop"), ("heartbeat", "/api/v1/progress")):
                    res = wrk(base, path, beats, args.threads, args.connections, args.seconds, script,
                              fast_step)
                    print(f"[{mode}] round {r + 1} {name}: {res}", flush=True)
                    rounds[name].append(res)
            for name, path in (("paced noop", "/api/v1/bench/noop"), ("paced heartbeat", "/api/v1/progress")):
                res = wrk(base, path, beats, args.threads, args.connections, args.paced_seconds, script,
                          paced_step, pace_ms=args.pace_ms)
                print(f"[{mode}] {name}: {res}", flush=True)
                rounds[name].append(res)
            time.sleep(5)  # two flush intervals
            scrape = time_gets(base + "/metrics", 50)
            baseline = time_gets(base + "/healthz", 50)
            series = sum(1 for l in urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
                         .splitlines() if l and not l.startswith("#"))
            print(f"[{mode}] /metrics p50 {scrape[0]:.1f} ms p99 {scrape[1]:.1f} ms ({series} series); "
                  f"/healthz p50 {baseline[0]:.1f} ms p99 {baseline[1]:.1f} ms", flush=True)
            written, fragments, credited_h = psql_value(
                db_url, "SELECT count(*) || ' ' || coalesce(max(jsonb_array_length(watched)), 0) || ' ' || "
                        "round(coalesce(sum(watched_s), 0)::numeric / 3600, 1) FROM lesson_progress").split()
            written = int(written)
        finally:
            server.terminate()
            server.wait(timeout=60)
        best = {k: max(v, key=lambda x: x["rps"]) for k, v in rounds.items()}
        all_errors = {k: sum(x["errors"] for x in v) for k, v in rounds.items()}
        results[mode] = (best, all_errors, written, fragments, credited_h, scrape, baseline, series)

    lines = [
        f"{args.connections} keep-alive connections (wrk -t{args.threads} --timeout 5s), {args.seconds} s per "
        f"round, 2 rounds per endpoint after a 5 s warm-up each; {distinct} distinct learner × lesson pairs "
        f"({args.users} learners × {args.lessons} lessons, one session per connection); flush every 2 s. "
        f"*Saturated*: every connection sends its next request as soon as the last is answered (closed loop: "
        f"latency is then connections ÷ throughput, whatever the server). *Paced*: every connection beats "
        f"every {args.pace_ms / 1000:g} s ± 10 % like a player ({args.paced_seconds} s, one round) — "
        f"{args.connections} learners online. Claims: {args.claim} (see --claim).",
        "",
        "| mode | endpoint | req/s | p50 ms | p99 ms | max ms | errors (all rounds) |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    summary = []
    for mode, (best, errors, written, fragments, credited_h, scrape, baseline, series) in results.items():
        for name in ("noop", "heartbeat", "paced noop", "paced heartbeat"):
            b = best[name]
            label = {"noop": "do-nothing, saturated", "heartbeat": "heartbeat, saturated",
                     "paced noop": "do-nothing, paced", "paced heartbeat": "heartbeat, paced"}[name]
            lines.append(f"| {mode} | {label} | "
                         f"{b['rps']:,.0f} | {b['p50_ms']:.1f} | {b['p99_ms']:.1f} | {b['max_ms']:.0f} | "
                         f"{errors[name]} ({b['detail']} in the best round) |")
        ratio = best["heartbeat"]["rps"] / best["noop"]["rps"]
        summary.append(f"{mode}: heartbeat / do-nothing saturated throughput **{ratio:.2f}×** (goal ≥ 0.5); "
                       f"paced heartbeat p99 **{best['paced heartbeat']['p99_ms']:.1f} ms** (goal < 100); "
                       f"heartbeat errors {errors['heartbeat'] + errors['paced heartbeat']} "
                       f"(goal 0); learner × lesson rows in PostgreSQL after the run: {written} of {distinct}, "
                       f"{credited_h} h of media credited, at most {fragments} watched intervals in a row; "
                       f"`/metrics` after the run: {series} series, scrape p50 {scrape[0]:.1f} ms / p99 "
                       f"{scrape[1]:.1f} ms (goal < 50) against `/healthz` p50 {baseline[0]:.1f} / p99 "
                       f"{baseline[1]:.1f} ms.")
    body = "\n".join(lines + [""] + [f"- {s}" for s in summary])
    print(body)
    if not args.no_record:
        command = " ".join(["benchmarks/progress/run"] + sys.argv[1:])
        benchlib.record("## Progress heartbeats (`benchmarks/progress`)",
                        f"Command: `{command}` — {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}; "
                        "lectern release build; wrk, lectern, PostgreSQL and Redis share the machine's cores.", body)




if __name__ == "__main__":
    main()
