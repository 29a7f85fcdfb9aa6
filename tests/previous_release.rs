//! Expand/contract, proven: the previous release's `lectern` (built by
//! `infra/deploy/build-previous-release` from the commit named in
//! `infra/deploy/previous-release`; `make test` passes its path in
//! `LECTERN_TEST_PREVIOUS_RELEASE_BIN`) runs on the schema this checkout
//! migrates to — as it does during a rolling release, and after a
//! rollback — and serves the core paths: readiness, sign-in, the
//! catalogue and search, a playback session and heartbeats. This
//! release then reads what the previous one wrote.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sqlx::PgPool;

use common::deployment::{catalogue, login, playback, stored_position, Deployment};

fn previous_release() -> PathBuf {
    let bin = std::env::var_os("LECTERN_TEST_PREVIOUS_RELEASE_BIN").expect(
        "LECTERN_TEST_PREVIOUS_RELEASE_BIN is not set: run `make test`, or \
         `export LECTERN_TEST_PREVIOUS_RELEASE_BIN=$(infra/deploy/build-previous-release)`",
    );
    let bin = PathBuf::from(bin);
    assert!(bin.is_file(), "{} is not a file", bin.display());
    bin
}

#[sqlx::test(migrations = "./migrations")]
async fn the_previous_release_serves_the_core_paths_on_this_schema(db: PgPool) {
    let mut d = Deployment::new(&db, Duration::from_millis(500), vec![]).await;
    d.use_binary(&previous_release());
    // `lectern admin` of the previous release writes accounts on the new schema.
    let (lesson, _) = catalogue(&db, &d, 1).await[0];
    let http = reqwest::Client::new();
    let old = d.serve(&http).await;
    let base = d.base("");
    let token = login(&http, &base).await;

    let courses: Value = http
        .get(format!("{base}/api/v1/courses"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        courses.to_string().contains("Resuscitation"),
        "the previous release lists the course: {courses}"
    );
    let search = http
        .get(format!("{base}/api/v1/search?q=Resuscitation"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(search.status(), 200, "{:?}", search.text().await);

    let session = playback(&http, &base, &token, lesson).await;
    let playback_id = session["playback_id"].clone();
    for pos in [10.0, 20.0, 30.0] {
        let r = http
            .post(format!("{base}/api/v1/progress"))
            .bearer_auth(&token)
            .json(&json!({ "lesson_id": lesson, "playback_id": playback_id,
                           "position_s": pos, "speed": 1.25,
                           "played_from_s": pos - 10.0, "played_to_s": pos }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{:?}", r.text().await);
    }
    old.terminate();
    assert_eq!(stored_position(&db, lesson).await, Some(30.0));

    // This release on the same database reads what the previous one wrote.
    d.use_binary(std::path::Path::new(env!("CARGO_BIN_EXE_lectern")));
    let _new = d.serve(&http).await;
    let token = login(&http, &base).await;
    let session = playback(&http, &base, &token, lesson).await;
    assert_eq!(session["resume_position_s"], json!(30.0), "{session}");
    assert_eq!(session["speed"], json!(1.25), "{session}");
}
