//! The failover drill (`infra/ha/failover-drill`) run whole, as an
//! operator would: a private primary with a streaming replica, a stream of
//! acknowledged writes, the primary killed, the replica promoted, and
//! `lectern admin verify-audit`, an audited write and `lectern serve` on
//! the promoted node.
//!
//! With synchronous replication no acknowledged write may be lost; with
//! asynchronous replication the loss is measured and printed. RTO and RPO
//! are printed, not asserted (they go to `benchmarks/RESULTS.md`).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

fn drill(args: &[&str]) -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        std::env::var_os("LECTERN_PG_BIN").is_some(),
        "LECTERN_PG_BIN is not set (run `make test`, or source .lectern/env)"
    );
    let out = Command::new(root.join("infra/ha/failover-drill"))
        .current_dir(root)
        .args(args)
        .args(["--lectern", env!("CARGO_BIN_EXE_lectern")])
        .output()
        .expect("running infra/ha/failover-drill");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "the failover drill failed ({}):\n{stderr}\n{stdout}",
        out.status
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn number(r: &BTreeMap<String, String>, key: &str) -> f64 {
    r.get(key)
        .unwrap_or_else(|| panic!("the drill printed no {key}: {r:?}"))
        .parse()
        .unwrap_or_else(|e| panic!("{key} is not a number: {e}"))
}

fn lectern_back_on_the_promoted_node(r: &BTreeMap<String, String>) {
    assert!(number(r, "acknowledged_writes") > 10.0, "{r:?}");
    assert_eq!(r["verify_audit"], "ok");
    assert_eq!(
        r["lectern_write"], "ok",
        "writes resume on the promoted node"
    );
    assert_eq!(r["serve_ready"], "ok");
    println!(
        "failover drill ({}): rto_s={} lost_writes={} of {} rpo_s={}",
        r["replication"], r["rto_s"], r["lost_writes"], r["acknowledged_writes"], r["rpo_s"]
    );
}

#[test]
fn synchronous_replica_promoted_loses_no_acknowledged_write() {
    let r = drill(&["--sync"]);
    assert_eq!(r["replication"], "synchronous");
    assert_eq!(number(&r, "lost_writes"), 0.0, "{r:?}");
    lectern_back_on_the_promoted_node(&r);
}

#[test]
fn asynchronous_replica_promoted_takes_writes_and_measures_the_loss() {
    let r = drill(&[]);
    assert_eq!(r["replication"], "asynchronous");
    assert!(number(&r, "lost_writes") >= 0.0);
    lectern_back_on_the_promoted_node(&r);
}
