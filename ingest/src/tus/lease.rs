//! An upload's write lease: how a PATCH keeps other writers out without
//! holding a database connection for the length of its body.
//!
//! A PATCH takes the lease (`uploads.lease_id`, `leased_until`) in one short
//! transaction under the row lock, after its checks, and commits at once;
//! the body then streams to storage with no connection held. While it
//! streams the lease is renewed every third of its term; recording the
//! chunk clears it in the same statement that advances `received`, fenced
//! by the lease's token, and a refusal clears it before the answer leaves.
//! A PATCH whose process died leaves its lease to lapse, so the upload
//! answers `upload_busy` (retryable) for at most one term.
//!
//! The writer stops streaming well before its lease can lapse in the
//! database: two thirds of a term after the last renewal it sent
//! ([`LeaseClock`]), leaving a third for a storage write already under way
//! to land. A lapsed lease can then be taken by another PATCH without two
//! writers ever appending to the upload at once (the storage handles need
//! appends serialised), and the late writer's record finds its token gone.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use tokio::time::{Instant, MissedTickBehavior};
use uuid::Uuid;

/// Until when this process may keep writing under a lease.
pub(super) struct LeaseClock(Mutex<Instant>);

impl LeaseClock {
    pub(super) fn deadline(&self) -> Instant {
        *self.0.lock().expect("lease clock")
    }

    fn extend(&self, until: Instant) {
        let mut deadline = self.0.lock().expect("lease clock");
        *deadline = (*deadline).max(until);
    }

    fn expire(&self) {
        *self.0.lock().expect("lease clock") = Instant::now();
    }
}

/// A PATCH's hold on its upload.
pub(super) struct Lease {
    upload: Uuid,
    token: Uuid,
    term: Duration,
    clock: Arc<LeaseClock>,
}

impl Lease {
    /// Takes the lease in `tx`, whose caller holds the row lock, has found
    /// the upload free, and commits.
    pub(super) async fn grant(
        tx: &mut PgConnection,
        upload: Uuid,
        term: Duration,
    ) -> Result<Lease, sqlx::Error> {
        let token = Uuid::new_v4();
        let sent = Instant::now();
        sqlx::query(
            "UPDATE uploads SET lease_id = $2,
                    leased_until = clock_timestamp() + make_interval(secs => $3)
             WHERE id = $1",
        )
        .bind(upload)
        .bind(token)
        .bind(term.as_secs_f64())
        .execute(tx)
        .await?;
        Ok(Lease {
            upload,
            token,
            term,
            clock: Arc::new(LeaseClock(Mutex::new(sent + writing_time(term)))),
        })
    }

    /// What a statement that must only act for the lease holder binds.
    pub(super) fn token(&self) -> Uuid {
        self.token
    }

    pub(super) fn clock(&self) -> Arc<LeaseClock> {
        self.clock.clone()
    }

    /// Runs `work` while renewing the lease every third of its term.
    pub(super) async fn keep<F: Future>(&self, db: &PgPool, work: F) -> F::Output {
        let every = self.term / 3;
        let renewals = async {
            let mut tick = tokio::time::interval_at(Instant::now() + every, every);
            tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if !self.renew(db).await {
                    return;
                }
            }
        };
        tokio::pin!(work, renewals);
        let mut renewing = true;
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = &mut renewals, if renewing => renewing = false,
            }
        }
    }

    /// Extends the lease; `false` once it is definitely someone else's.
    /// A renewal that fails or hangs is let go: the clock runs out and the
    /// body stops, unless a later renewal gets through first.
    async fn renew(&self, db: &PgPool) -> bool {
        let sent = Instant::now();
        let renewed = tokio::time::timeout(
            self.term / 3,
            sqlx::query(
                "UPDATE uploads SET leased_until = clock_timestamp() + make_interval(secs => $3)
                 WHERE id = $1 AND lease_id = $2",
            )
            .bind(self.upload)
            .bind(self.token)
            .bind(self.term.as_secs_f64())
            .execute(db),
        )
        .await;
        match renewed {
            Ok(Ok(done)) if done.rows_affected() == 1 => {
                self.clock.extend(sent + writing_time(self.term));
                true
            }
            Ok(Ok(_)) => {
                tracing::warn!(upload = %self.upload, "a PATCH lost its upload's lease; stopping it");
                self.clock.expire();
                false
            }
            Ok(Err(error)) => {
                tracing::warn!(upload = %self.upload, %error, "cannot renew an upload's lease");
                true
            }
            Err(_) => {
                tracing::warn!(upload = %self.upload, "renewing an upload's lease timed out");
                true
            }
        }
    }

    /// Gives the lease up, if it is still ours, before a refusal answers.
    /// A release that fails leaves the lease to lapse by itself.
    pub(super) async fn release(&self, db: &PgPool) {
        let released = sqlx::query(
            "UPDATE uploads SET lease_id = NULL, leased_until = NULL
             WHERE id = $1 AND lease_id = $2",
        )
        .bind(self.upload)
        .bind(self.token)
        .execute(db)
        .await;
        if let Err(error) = released {
            tracing::warn!(upload = %self.upload, %error, "cannot release an upload's lease; it lapses by itself");
        }
    }
}

/// How long after sending a renewal the writer may go on: two thirds of
/// the term (see the module docs).
fn writing_time(term: Duration) -> Duration {
    term * 2 / 3
}
