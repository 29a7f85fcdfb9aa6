//! Passwords: the policy they must meet, and argon2id hashing (PHC strings
//! with their own salt and parameters, so parameters can rise later).

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use rand::Rng;

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

pub fn hash(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2id with default parameters accepts any password")
        .to_string()
}

/// Constant-time verification (inside argon2); a malformed stored hash
/// verifies nothing.
pub fn verify(stored: &str, password: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// Spends the same time as a real verification, so an unknown email
/// answers as slowly as a wrong password and does not reveal itself.
pub fn verify_nothing(password: &str) {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let stored = DUMMY.get_or_init(|| hash("lectern-dummy-password-1"));
    let _ = verify(stored, password);
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

    #[test]
    fn policy_refuses_short_single_class_and_email_passwords() {
        assert!(check_policy("short1", "a@b.c").is_err());
        assert!(check_policy("onlylettersherehere", "a@b.c").is_err());
        assert!(check_policy("alice-2026-secret", "alice@b.c").is_err());
        assert!(check_policy("correct horse 42", "alice@b.c").is_ok());
        assert!(check_policy(&generate(), "alice@b.c").is_ok());
    }

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash("correct horse 42");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify(&h, "correct horse 42"));
        assert!(!verify(&h, "correct horse 43"));
        assert!(!verify("garbage", "x"));
    }
}
