//! Where a person is reached. notify knows no accounts: the composition
//! (`api`) hands it an [`AddressBook`] — identity's, which opens the sealed
//! email and phone of a user — and the dispatcher asks it at send time, so
//! a changed address is used by every retry.

use uuid::Uuid;

/// A person's addresses, opened.
#[derive(Clone, Default)]
pub struct Contact {
    pub email: Option<String>,
    pub phone: Option<String>,
}

// Personal data: Debug says which addresses exist, not what they are.
impl std::fmt::Debug for Contact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Contact")
            .field("email", &self.email.as_ref().map(|_| "…"))
            .field("phone", &self.phone.as_ref().map(|_| "…"))
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("address lookup failed: {0}")]
pub struct LookupError(pub String);

#[async_trait::async_trait]
pub trait AddressBook: Send + Sync {
    /// `None` when the account no longer exists.
    async fn contact(&self, user_id: Uuid) -> Result<Option<Contact>, LookupError>;
}
