//! Sending belongs to `lectern_notify` (one way a message reaches a
//! person); identity enqueues its notices there. What remains here is
//! the development outbox's reader, re-exported for the callers that
//! read messages back (tests, `lectern demo`), and [`Directory`], the
//! address book notify's dispatcher asks for a person's email and phone.

use std::sync::Arc;

pub use lectern_notify::transport::outbox::{last_message, Outbox, OutboxError, OutboxMessage};
use lectern_notify::{address::LookupError, AddressBook, Contact};
use lectern_secrets::Keyring;
use sqlx::PgPool;
use uuid::Uuid;

/// The accounts' addresses, opened with the field keys at send time.
pub struct Directory {
    db: PgPool,
    keys: Option<Arc<Keyring>>,
}

impl Directory {
    pub fn new(db: PgPool, keys: Option<Arc<Keyring>>) -> Self {
        Self { db, keys }
    }
}

#[derive(sqlx::FromRow)]
struct Sealed {
    email_ct: Option<Vec<u8>>,
    phone_ct: Option<Vec<u8>>,
}

#[async_trait::async_trait]
impl AddressBook for Directory {
    async fn contact(&self, user_id: Uuid) -> Result<Option<Contact>, LookupError> {
        let keys = self
            .keys
            .as_deref()
            .ok_or_else(|| LookupError("the field keys are not configured".into()))?;
        let row: Option<Sealed> =
            sqlx::query_as("SELECT email_ct, phone_ct FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&self.db)
                .await
                .map_err(|e| LookupError(e.to_string()))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let open = |field: &'static str, ct: &[u8]| {
            keys.open(field, user_id, ct)
                .map_err(|e| LookupError(format!("{field}: {e}")))
        };
        Ok(Some(Contact {
            email: row
                .email_ct
                .as_deref()
                .map(|ct| open("users.email", ct))
                .transpose()?,
            phone: row
                .phone_ct
                .as_deref()
                .map(|ct| open("users.phone", ct))
                .transpose()?,
        }))
    }
}
