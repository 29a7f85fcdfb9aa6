//! The restore drill (`infra/ops/restore-drill`) run whole, as an operator
//! would: a private PostgreSQL cluster archiving its WAL to a pgBackRest
//! stanza in the test S3 service (Garage, through the script's TLS front),
//! rows written through `lectern admin`, a full backup, rows after a time T,
//! a point-in-time restore to T into a fresh data directory, and `lectern
//! admin verify-audit` and `lectern serve` on the restored database.
//!
//! The test reads the script's `key=value` results: every row written
//! before T is back, none written after T is, the audit log verifies
//! against its signed checkpoint and `serve` becomes ready. It prints RTO,
//! RPO and the restore throughput but asserts no time (the figures go to
//! `benchmarks/RESULTS.md`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn drill(repo: &str) -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = root.join("infra/ops/restore-drill");
    let mut cmd = Command::new(&script);
    cmd.current_dir(root)
        .args(["--repo", repo, "--lectern", env!("CARGO_BIN_EXE_lectern")]);
    // The script reads LECTERN_S3_* and LECTERN_PG_BIN (from .lectern/env
    // under `make test`) and sets every Lectern setting of its own itself.
    for required in ["LECTERN_S3_ENDPOINT", "LECTERN_PG_BIN"] {
        assert!(
            std::env::var_os(required).is_some(),
            "{required} is not set (run `make test`, or source .lectern/env)"
        );
    }
    let out = cmd.output().expect("running infra/ops/restore-drill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    println!("{stdout}");
    assert!(
        out.status.success(),
        "the restore drill failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn number(results: &BTreeMap<String, String>, key: &str) -> f64 {
    results
        .get(key)
        .unwrap_or_else(|| panic!("the drill printed no {key}: {results:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} is not a number: {e}"))
}

#[test]
fn point_in_time_restore_from_s3_brings_back_exactly_the_rows_before_t() {
    let r = drill("s3");
    assert_eq!(r["repo"], "s3");
    let before = number(&r, "rows_before_t_expected");
    assert!(before > 0.0, "the drill wrote rows before T: {r:?}");
    assert_eq!(
        number(&r, "rows_before_t_restored"),
        before,
        "every row written before T is back"
    );
    assert!(number(&r, "rows_after_t_written") > 0.0);
    assert_eq!(
        number(&r, "rows_after_t_restored"),
        0.0,
        "no row written after T is back"
    );
    assert_eq!(
        number(&r, "audit_rows_restored"),
        number(&r, "audit_rows_expected")
    );
    assert_eq!(r["verify_audit"], "ok");
    assert_eq!(r["serve_ready"], "ok");
    // Reported, not asserted: wall times belong to benchmarks/RESULTS.md.
    for key in ["rto_s", "rpo_s", "restore_mb_s", "restored_mb"] {
        assert!(number(&r, key) >= 0.0);
    }
    println!(
        "restore drill: rto_s={} rpo_s={} restore {} MB/s of {} MB",
        r["rto_s"], r["rpo_s"], r["restore_mb_s"], r["restored_mb"]
    );
}
