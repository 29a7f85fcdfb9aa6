#!/usr/bin/env python3
"""Ingest benchmark: a tus upload into `lectern serve` against boto3, same run.

Input: a generated file (default 1 GiB) that starts like an MP4 (so the
sniffer accepts it) and continues with random bytes (incompressible).

Methods:
  (B) boto3 `upload_file` to the Garage bucket of `.lectern/env`: a plain
      multipart upload with boto3's defaults (8 MiB parts, 10 threads),
      run before and after the Lectern uploads; the mean is the baseline
  (S) tuspy (PyPI) uploading to `lectern serve` at /api/v1/uploads with
      LECTERN_STORAGE=s3, the same Garage bucket
  (F) the same with LECTERN_STORAGE=fs (a directory under .lectern/bench)

Reported: MB/s (10^6 bytes per second) of each, ratios S/B and F/B (goal
>= 0.8), and the peak RSS of the `lectern serve` process (VmHWM from
/proc/<pid>/status) during each upload. Each Lectern run gets a fresh
database, organisation and partner key; `serve` runs no in-process worker,
so transcoding does not compete with the upload. Results go to
benchmarks/RESULTS.md (section replaced) and stdout.
"""

import argparse
import base64
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / ".lectern" / "bench" / "ingest"
VENV = WORK / "venv"
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
MIB = 1024 * 1024
HEADER = b"\0\0\0\x20ftypisom\0\0\x02\0isomiso2avc1mp41"


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def load_env():
    env_file = ROOT / ".lectern" / "env"
    if not env_file.exists():
        sys.exit("benchmarks/ingest: run `infra/dev/services up` first (.lectern/env is missing)")
    values = {}
    for line in env_file.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            k, v = line.split("=", 1)
            values[k.strip()] = v.strip().strip("'\"")
    return values


def make_source(path, size):
    if path.exists() and path.stat().st_size == size:
        return
    tmp = path.with_suffix(".part")
    with open(tmp, "wb") as f:
        f.write(HEADER)
        left = size - len(HEADER)
        while left > 0:
            n = min(left, 8 * MIB)
            f.write(os.urandom(n))
            left -= n
    tmp.rename(path)


def venv_python():
    py = VENV / "bin" / "python"
    if not py.exists():
        sh([sys.executable, "-m", "venv", str(VENV)])
    sh([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-r", str(ROOT / "ingest" / "tests" / "clients" / "requirements.txt"), "boto3==1.35.99"])
    return str(py)


BOTO = r"""
import sys, time, json, boto3
from botocore.config import Config
endpoint, region, bucket, key_id, secret, path, key = sys.argv[1:8]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region,
                  aws_access_key_id=key_id, aws_secret_access_key=secret,
                  config=Config(s3={"addressing_style": "path"}))
t = time.monotonic()
s3.upload_file(path, bucket, key)
elapsed = time.monotonic() - t
s3.delete_object(Bucket=bucket, Key=key)
print(json.dumps({"seconds": elapsed}))
"""

TUS = r"""
import sys, time, json
from tusclient import client
endpoint, token, path, chunk = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
tus = client.TusClient(endpoint, headers={"Authorization": "Bearer " + token})
up = tus.uploader(path, chunk_size=chunk, metadata={"filename": "bench.mp4", "title": "ingest benchmark"})
t = time.monotonic()
up.upload()
elapsed = time.monotonic() - t
print(json.dumps({"seconds": elapsed, "url": up.url, "offset": up.offset}))
"""


def boto3_upload(py, env, path):
    out = sh([py, "-c", BOTO, env["LECTERN_S3_ENDPOINT"], env["LECTERN_S3_REGION"],
              env["LECTERN_S3_BUCKET"], env["LECTERN_S3_ACCESS_KEY_ID"],
              env["LECTERN_S3_SECRET_ACCESS_KEY"], str(path),
              f"bench/ingest-{secrets.token_hex(6)}"],
             capture_output=True, text=True).stdout
    return json.loads(out)["seconds"]


def identity_keys():
    key = lambda: base64.b64encode(secrets.token_bytes(32)).decode()
    return {
        "LECTERN_FIELD_KEYS": f"bench:{key()}",
        "LECTERN_BLIND_INDEX_KEY": key(),
        "LECTERN_TOKEN_KEY": key(),
    }


def fresh_database(database_url, name):
    admin = database_url
    sh(["psql", admin, "-q", "-c", f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"])
    sh(["psql", admin, "-q", "-c", f"CREATE DATABASE {name}"])
    parts = urllib.parse.urlsplit(database_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + name))


def vm(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def lectern_upload(py, lectern, env, backend, path, chunk, port):
    base = {k: v for k, v in os.environ.items() if not k.startswith("LECTERN_") and k != "DATABASE_URL"}
    data = WORK / f"data-{backend}"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    run_env = {
        **base,
        **{k: v for k, v in env.items() if k.startswith("LECTERN_S3_")},
        **identity_keys(),
        "DATABASE_URL": fresh_database(env["DATABASE_URL"], f"lectern_bench_ingest_{backend}"),
        "LECTERN_DATA_DIR": str(data),
        "LECTERN_STORAGE": backend,
        "LECTERN_HTTP_ADDR": f"127.0.0.1:{port}",
        "LECTERN_SERVE_WORKERS": "0",
        "LECTERN_UPLOAD_MAX_BYTES": str(path.stat().st_size * 2),
        "LECTERN_UPLOAD_ORG_MAX_BYTES": str(path.stat().st_size * 4),
        "LECTERN_LOG": "warn",
        "LECTERN_DEV_OUTBOX": "true",
    }
    sh([lectern, "migrate"], env=run_env, stdout=subprocess.DEVNULL)
    sh([lectern, "admin", "create-org", "Bench"], env=run_env, stdout=subprocess.DEVNULL)
    token = sh([lectern, "admin", "create-partner-key", "--org", "Bench"], env=run_env,
               capture_output=True, text=True).stdout.strip()
    log = open(WORK / f"serve-{backend}.log", "w")
    serve = subprocess.Popen([lectern, "serve"], env=run_env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if serve.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"lectern serve ({backend}) did not become ready; see {log.name}")
            time.sleep(0.2)
        rss_before = vm(serve.pid, "VmRSS")
        out = sh([py, "-c", TUS, f"http://127.0.0.1:{port}/api/v1/uploads", token, str(path), str(chunk)],
                 capture_output=True, text=True).stdout
        result = json.loads(out)
        if result["offset"] != path.stat().st_size:
            sys.exit(f"tus upload ({backend}) stopped at {result['offset']}")
        peak = vm(serve.pid, "VmHWM")
    finally:
        serve.send_signal(signal.SIGTERM)
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
    if backend == "s3":
        upload_id = result["url"].rstrip("/").rsplit("/", 1)[-1]
        cleanup_s3(py, env, f"assets/{upload_id}/source")
    shutil.rmtree(data, ignore_errors=True)
    return result["seconds"], rss_before, peak


def cleanup_s3(py, env, key):
    code = ("import sys, boto3\nfrom botocore.config import Config\n"
            "e,r,b,k,s,key=sys.argv[1:7]\n"
            "boto3.client('s3',endpoint_url=e,region_name=r,aws_access_key_id=k,aws_secret_access_key=s,"
            "config=Config(s3={'addressing_style':'path'})).delete_object(Bucket=b,Key=key)")
    subprocess.run([py, "-c", code, env["LECTERN_S3_ENDPOINT"], env["LECTERN_S3_REGION"],
                    env["LECTERN_S3_BUCKET"], env["LECTERN_S3_ACCESS_KEY_ID"],
                    env["LECTERN_S3_SECRET_ACCESS_KEY"], key], check=False)


def record(section):
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    title = "## Ingest upload (`benchmarks/ingest`)"
    pattern = re.compile(re.escape(title) + r".*?(?=\n## |\Z)", re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section.rstrip() + "\n", text)
    else:
        text = text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lectern", required=True, help="path to the lectern binary (a release build)")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--chunk-mib", type=int, default=64, help="tus PATCH size (tuspy reads each into memory)")
    ap.add_argument("--port", type=int, default=18480)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args()
    env = load_env()
    WORK.mkdir(parents=True, exist_ok=True)
    size = args.size_mib * MIB
    source = WORK / f"source-{args.size_mib}MiB.mp4"
    make_source(source, size)
    py = venv_python()
    lectern = str(Path(args.lectern).resolve())
    chunk = args.chunk_mib * MIB

    b1 = boto3_upload(py, env, source)
    s_secs, s_rss0, s_peak = lectern_upload(py, lectern, env, "s3", source, chunk, args.port)
    f_secs, f_rss0, f_peak = lectern_upload(py, lectern, env, "fs", source, chunk, args.port)
    b2 = boto3_upload(py, env, source)
    b = (b1 + b2) / 2
    mbps = lambda secs: size / secs / 1e6
    mib = lambda n: f"{n / MIB:.0f} MiB"
    rows = [
        ("(B) boto3 multipart → Garage (mean of 2)", b, "—"),
        ("(S) tuspy → lectern serve, s3 (Garage)", s_secs, f"{mib(s_rss0)} → {mib(s_peak)}"),
        ("(F) tuspy → lectern serve, fs", f_secs, f"{mib(f_rss0)} → {mib(f_peak)}"),
    ]
    lines = [
        "## Ingest upload (`benchmarks/ingest`)",
        "",
        f"Command: `benchmarks/ingest/run --lectern {args.lectern} --size-mib {args.size_mib} "
        f"--chunk-mib {args.chunk_mib}` — {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}.",
        "",
        f"One {args.size_mib} MiB file (MP4 header, random bytes), over loopback. boto3 runs: "
        f"{mbps(b1):.1f} and {mbps(b2):.1f} MB/s. RSS is `lectern serve`'s VmRSS before the "
        "upload → VmHWM (peak) after it.",
        "",
        "| method | seconds | MB/s | serve RSS before → peak |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {secs:.1f} | {mbps(secs):.1f} | {rss} |" for name, secs, rss in rows]
    lines += [
        "",
        f"tus to s3 / boto3: **{b / s_secs:.2f}×**; tus to fs / boto3: **{b / f_secs:.2f}×** "
        "(goal ≥ 0.8×).",
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if not args.no_record:
        record(section)


if __name__ == "__main__":
    main()
