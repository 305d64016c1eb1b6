//! The [`ApiStorage`] part of the storage interface: the management API's tokens and the
//! audit trail (docs/management-api.md).

use crate::api::{ApiToken, AuditEntry, Role};
use crate::error::Result;

/// What the management point stores for its management API.
pub trait ApiStorage {
    /// Adds a token (its name unique). Returns its id.
    fn add_api_token(&self, t: &ApiToken) -> Result<i64>;
    /// Every token, by id.
    fn api_tokens(&self) -> Result<Vec<ApiToken>>;
    /// The token whose secret's SHA-256 is `sha256`, if any (every API request looks its
    /// token up: by the unique index, not by reading them all).
    fn api_token_by_hash(&self, sha256: &str) -> Result<Option<ApiToken>>;
    /// Revokes the token named `name` at `now`. Returns whether there was one not revoked.
    fn revoke_api_token(&self, name: &str, now: i64) -> Result<bool>;
    /// Appends a change to the audit trail. Returns its id.
    fn add_audit(&self, e: &AuditEntry) -> Result<i64>;
    /// The changes from `since` (Unix seconds) on, oldest first: the newest `limit` of them.
    fn audit(&self, since: i64, limit: usize) -> Result<Vec<AuditEntry>>;
    /// Sets the console role of administrator `name`. Returns whether there is one.
    fn set_administrator_role(&self, name: &str, role: Role) -> Result<bool>;
    /// Every administrator's console role, by name.
    fn administrator_roles(&self) -> Result<Vec<(String, Role)>>;
}
