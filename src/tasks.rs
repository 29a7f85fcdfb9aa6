//! The process's background work, owned in one place: every sweeper,
//! dispatcher, resumer, flusher and in-process worker is spawned here with
//! a name, runs inside a `task` span that carries it, stops when the one
//! cancellation token fires, and is joined on shutdown — so `serve` exits
//! only after each has finished what it was doing (a final progress flush,
//! a worker's drain).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    pub fn new() -> Self {
        Self {
            tracker: TaskTracker::new(),
            cancel: CancellationToken::new(),
        }
    }

    /// Starts `task`, which must return soon after its token is cancelled.
    pub fn spawn<F>(&self, name: &'static str, task: impl FnOnce(CancellationToken) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let future = task(self.cancel.child_token());
        self.tracker
            .spawn(future.instrument(tracing::info_span!("task", name)));
    }

    /// Cancels every task and waits for them, at most `grace`.
    pub async fn shutdown(self, grace: Duration) {
        self.cancel.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = self.tracker.len(),
                "background tasks did not stop within {grace:?}; exiting anyway"
            );
        }
    }
}
