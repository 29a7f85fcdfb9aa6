"""Prints and records (benchmarks/RESULTS.md) what benchmarks/restore/run
measured: restore throughput against the `cp -a` baseline and the RTO
extrapolated to 100 GB."""

import datetime
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import benchlib  # noqa: E402

record, gb, rows, data_mb, cp_s, load, commit, version, *runs = sys.argv[1:]
data_mb, cp_s = float(data_mb), float(cp_s)
cp_rate = data_mb / cp_s
lines = [
    "| repository | backup s | in repository MB | restore s | restore MB/s | vs `cp -a` | start → read-write s | RTO for 100 GB (extrapolated) |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    f"| baseline: `cp -a` of the stopped data directory | – | – | {cp_s:.1f} | {cp_rate:.0f} | 1.00× | – | {102400 / cp_rate / 60:.1f} min |",
]
summary = []
for run in runs:
    repo, backup_s, repo_mb, restore_s, start_s = run.split()
    backup_s, restore_s, start_s = float(backup_s), float(restore_s), float(start_s)
    rate = data_mb / restore_s
    rto_100 = 102400 / rate + start_s
    lines.append(
        f"| pgBackRest, {repo} | {backup_s:.1f} | {repo_mb} | {restore_s:.1f} | {rate:.0f} | "
        f"{rate / cp_rate:.2f}× | {start_s:.1f} | **{rto_100 / 60:.1f} min** |"
    )
    summary.append(f"{repo}: {rate:.0f} MB/s, 100 GB in {rto_100 / 60:.1f} min")
    print(f"restore_mb_s[{repo}]={rate:.1f} rto_100gb_min[{repo}]={rto_100 / 60:.1f}")
print(f"cp_mb_s={cp_rate:.1f}")

if record == "1":
    today = datetime.date.today().isoformat()
    preamble = (
        f"Command: `benchmarks/restore/run --gb {gb}` — 2 cores shared with other builds, "
        f"{today}, `{commit}`, {version}, load average {load} at the end. A generated table of "
        f"{int(rows):,} rows (id, two md5 strings, a timestamp; primary key): a {data_mb:.0f} MB "
        "data directory. Full backup (lz4, process-max 2), then `pgbackrest restore "
        "--type=immediate` into a fresh directory; *start → read-write* is `pg_ctl start` until "
        "`pg_is_in_recovery()` is false. Page cache warm for every row (not dropped on a shared "
        "machine). RTO for 100 GB = 100 GB ÷ restore MB/s + start time, before WAL replay (a "
        "point-in-time restore also replays the WAL since the newest backup: at most a day with "
        "daily differentials)."
    )
    benchlib.record("## Restore (`benchmarks/restore`)", preamble, "\n".join(lines))
    print("recorded in benchmarks/RESULTS.md")
