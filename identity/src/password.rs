//! Passwords: the policy they must meet, and argon2id hashing (PHC strings
//! with their own salt and parameters, so parameters can rise later) on
//! the blocking pool behind a per-process limit ([`Hasher`]).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::Rng;
use std::sync::{Arc, OnceLock};
use tokio::sync::Semaphore;

use crate::Identity;

pub const MIN_LENGTH: usize = 12;
const MAX_LENGTH: usize = 256;

/// Why a password is refused, in words a person can act on.
pub fn check_policy(password: &str, email: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err(format!("a password needs at least {MIN_LENGTH} characters"));
    }
    if chars > MAX_LENGTH {
        return Err(format!("a password has at most {MAX_LENGTH} characters"));
    }
    let has_letter = password.chars().any(char::is_alphabetic);
    let has_other = password.chars().any(|c| !c.is_alphabetic());
    if !(has_letter && has_other) {
        return Err("a password needs letters and at least one digit or symbol".into());
    }
    let local = email.split('@').next().unwrap_or("").to_lowercase();
    if local.len() >= 4 && password.to_lowercase().contains(&local) {
        return Err("a password must not contain the email address".into());
    }
    Ok(())
}

/// Argon2 work, kept from stalling the server. Each hash or check is
/// deliberately expensive (argon2id's defaults: 19 MiB and tens of
/// milliseconds of one core), so it never runs on an async worker thread —
/// a burst of sign-ins there would hold every worker and stall every other
/// request, `/healthz` and `/media` included — but on tokio's blocking
/// pool, and at most `limit` at once per process: a sign-in over the limit
/// waits for a turn inside its own request (it leaves the queue if the
/// client goes away), so argon2 never occupies more blocking threads than
/// the limit, however many sign-ins arrive. A turn is held until the
/// argon2 work ends, even when the request that asked for it has gone, so
/// the limit is the work actually running.
pub struct Hasher {
    turns: Arc<Semaphore>,
    limit: usize,
}

impl Hasher {
    /// At most `limit` (at least 1) argon2 evaluations at once.
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            turns: Arc::new(Semaphore::new(limit)),
            limit,
        }
    }

    /// How many evaluations may run at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Runs `work` on the blocking pool once a turn is free.
    pub async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let turn = self
            .turns
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let done = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            work()
        })
        .await;
        match done {
            Ok(value) => value,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("argon2 work was cancelled: {e}"),
        }
    }

    /// A new argon2id hash (PHC string) of `password`.
    pub async fn hash(&self, password: &str) -> String {
        let password = password.to_owned();
        self.run(move || hash_now(&password)).await
    }
}

/// One per process for account creation outside a server's requests
/// (`lectern admin create-user`, demo seeding, test fixtures), limited to
/// the cores like a server's.
pub fn for_tools() -> &'static Hasher {
    static TOOLS: OnceLock<Hasher> = OnceLock::new();
    TOOLS.get_or_init(|| Hasher::new(default_limit()))
}

/// The default limit: one evaluation per core.
pub fn default_limit() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Hashes `password` with identity's [`Hasher`].
pub async fn hash(state: &Identity, password: &str) -> String {
    state.passwords.hash(password).await
}

/// Checks `password` against a stored hash with identity's [`Hasher`],
/// counted in `lectern_password_verifications_total` when it runs.
/// Constant-time (inside argon2); a malformed stored hash verifies nothing.
pub async fn verify(state: &Identity, stored: &str, password: &str) -> bool {
    let (counted, stored, password) = (state.clone(), stored.to_owned(), password.to_owned());
    state
        .passwords
        .run(move || {
            counted.metrics.password_verified();
            verify_now(&stored, &password)
        })
        .await
}

/// Spends the same time as a real verification (and counts as one), so an
/// unknown email answers as slowly as a wrong password and does not
/// reveal itself.
pub async fn verify_nothing(state: &Identity, password: &str) {
    static DUMMY: OnceLock<String> = OnceLock::new();
    let stored = match DUMMY.get() {
        Some(stored) => stored.clone(),
        None => {
            let made = state.passwords.hash("lectern-dummy-password-1").await;
            DUMMY.get_or_init(|| made).clone()
        }
    };
    let _ = verify(state, &stored, password).await;
}

fn hash_now(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with default parameters accepts any password")
        .to_string()
}

fn verify_now(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A password for an account created without one, shown once.
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let mut rng = rand::rng();
    let mut out: String = (0..20)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect();
    // Guarantees the policy's "letters and a digit" whatever was drawn.
    out.push('7');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn policy_refuses_short_single_class_and_email_passwords() {
        assert!(check_policy("short1", "a@b.c").is_err());
        assert!(check_policy("onlylettersherehere", "a@b.c").is_err());
        assert!(check_policy("alice-2026-secret", "alice@b.c").is_err());
        assert!(check_policy("correct horse 42", "alice@b.c").is_ok());
        assert!(check_policy(&generate(), "alice@b.c").is_ok());
    }

    #[tokio::test]
    async fn hashes_are_argon2id_and_verify() {
        let h = Hasher::new(1).hash("correct horse 42").await;
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_now(&h, "correct horse 42"));
        assert!(!verify_now(&h, "correct horse 43"));
        assert!(!verify_now("garbage", "x"));
    }

    /// Runs `work`s through `hasher` at once; the most that ran together.
    async fn most_at_once(hasher: Arc<Hasher>, requests: usize) -> usize {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..requests)
            .map(|_| {
                let (hasher, running, most) = (hasher.clone(), running.clone(), most.clone());
                tokio::spawn(async move {
                    hasher
                        .run(move || {
                            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(20));
                            running.fetch_sub(1, Ordering::SeqCst);
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        most.load(Ordering::SeqCst)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_limit_bounds_how_much_argon2_work_runs_at_once() {
        assert_eq!(most_at_once(Arc::new(Hasher::new(1)), 16).await, 1);
        let three = most_at_once(Arc::new(Hasher::new(3)), 24).await;
        assert!(
            (2..=3).contains(&three),
            "{three} at once with a limit of 3"
        );
        assert_eq!(Hasher::new(0).limit(), 1, "the limit is at least 1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn abandoned_work_keeps_its_turn_until_it_ends() {
        let hasher = Arc::new(Hasher::new(1));
        let running = Arc::new(AtomicUsize::new(0));
        let overlapped = Arc::new(AtomicUsize::new(0));
        let work = |running: Arc<AtomicUsize>, overlapped: Arc<AtomicUsize>| {
            move || {
                if running.fetch_add(1, Ordering::SeqCst) > 0 {
                    overlapped.fetch_add(1, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(200));
                running.fetch_sub(1, Ordering::SeqCst);
            }
        };
        // The request gives up while its work runs...
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            hasher.run(work(running.clone(), overlapped.clone())),
        )
        .await;
        assert!(abandoned.is_err());
        // ...and the next one still waits for that work to end.
        hasher.run(work(running.clone(), overlapped.clone())).await;
        assert_eq!(overlapped.load(Ordering::SeqCst), 0);
    }
}
