"""What the benchmark scripts share: the dev services' settings, free ports,
psql, waiting for a server, playback tokens as Lectern signs them, and
replacing a script's section of benchmarks/RESULTS.md."""

import base64
import hashlib
import hmac
import re
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"


def env_file():
    """The settings `infra/dev/services up` wrote to .lectern/env."""
    env = {}
    path = ROOT / ".lectern" / "env"
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                env[k.strip().removeprefix("export ").strip()] = v.strip().strip("'\"")
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def psql(url, sql):
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", url, "-f", "-"], input=sql,
                   text=True, check=True, capture_output=True)


def psql_value(url, sql):
    return subprocess.run(["psql", "-tA", url, "-c", sql], text=True, check=True,
                          capture_output=True).stdout.strip()


def wait_ready(url, timeout=120):
    """Polls `url` until it answers 200."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except Exception:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not become ready")


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_playback(kid, secret, asset, expires):
    """A playback token as delivery/src/token.rs makes it (no session)."""
    msg = b"lectern-playback-v1" + bytes([len(kid)]) + kid.encode() + asset.bytes
    msg += struct.pack(">q", expires) + b"\x00"
    mac = hmac.new(secret, msg, hashlib.sha256).digest()
    return f"{kid}.{b64url(asset.bytes)}.{expires}..{b64url(mac)}"


def record(head, preamble, body):
    """Replaces the section under `head` (up to the next `## `) in RESULTS.md."""
    section = f"{head}\n\n{preamble}\n\n{body}\n"
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n\n"
    pattern = re.compile(re.escape(head) + r".*?(?=\n## |\Z)", re.S)
    text = pattern.sub(lambda _: section.rstrip() + "\n", text) if head in text \
        else text.rstrip() + "\n\n" + section
    RESULTS.write_text(text)
