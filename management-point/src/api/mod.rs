//! The management API's identities and records (docs/management-api.md): the roles a token or
//! an administrator holds, the API tokens (only their SHA-256 is stored; the secret is shown
//! once), and the audit trail every change writes. The routes are `server::api`'s; the
//! operations they run are [`ops`].

pub mod client;
pub mod openapi;
pub mod ops;

use serde::{Deserialize, Serialize};

/// What an identity may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Reports and lists.
    ReadOnly,
    /// Deploys: packages, programs, collections, advertisements; pauses, resumes and
    /// approves rollouts; approves devices.
    Operator,
    /// Everything, tokens and administrators included.
    Administrator,
}

impl Role {
    /// The name in commands, documents and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::ReadOnly => "read-only",
            Role::Operator => "operator",
            Role::Administrator => "administrator",
        }
    }

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        [Role::ReadOnly, Role::Operator, Role::Administrator]
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("{s:?} is not a role: read-only, operator or administrator"))
    }
}

/// An API token as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiToken {
    /// Row id.
    pub id: i64,
    /// Its name, for people and the audit trail.
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// The one tenant it sees, if scoped.
    pub tenant: Option<String>,
    /// SHA-256 of the secret, hex.
    #[serde(skip_serializing)]
    pub token_sha256: String,
    /// Created (Unix seconds).
    pub created: i64,
    /// When it stops working (Unix seconds), if ever.
    pub expires: Option<i64>,
    /// When it was revoked (Unix seconds).
    pub revoked: Option<i64>,
}

impl ApiToken {
    /// Why it cannot be used at `now`, if it cannot.
    pub fn unusable(&self, now: i64) -> Option<&'static str> {
        if self.revoked.is_some() {
            Some("revoked")
        } else if self.expires.is_some_and(|e| e <= now) {
            Some("expired")
        } else {
            None
        }
    }
}

/// The prefix of every API token's secret, so a leaked one is recognised.
pub const TOKEN_PREFIX: &str = "dmt_";

/// The SHA-256 of a token's secret, as stored.
pub fn token_hash(secret: &str) -> String {
    dm_shared::pki::sha256_hex(secret.as_bytes())
}

/// One change, as the audit trail keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// When (Unix seconds).
    pub time: i64,
    /// Who: `token ci`, `administrator alice`, `dmmp (root)`.
    pub actor: String,
    /// From where: the client's address, or `dmmp` on the management point's machine.
    pub source: String,
    /// What: the operation (`advertise`, `rollout.pause`, …).
    pub action: String,
    /// What it was done to.
    pub target: String,
    /// The object before (JSON), when it existed.
    pub before: Option<String>,
    /// The object after, or the operation's answer (JSON).
    pub after: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_include_the_ones_before_them() {
        assert!(Role::Administrator.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::ReadOnly));
        assert!(!Role::ReadOnly.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Administrator));
        for r in [Role::ReadOnly, Role::Operator, Role::Administrator] {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert!("root".parse::<Role>().is_err());
    }

    #[test]
    fn a_token_is_unusable_once_revoked_or_expired() {
        let t = ApiToken {
            id: 1,
            name: "ci".into(),
            role: Role::Operator,
            tenant: None,
            token_sha256: token_hash("dmt_x"),
            created: 0,
            expires: Some(100),
            revoked: None,
        };
        assert_eq!(t.unusable(99), None);
        assert_eq!(t.unusable(100), Some("expired"));
        let r = ApiToken { revoked: Some(5), expires: None, ..t };
        assert_eq!(r.unusable(0), Some("revoked"));
    }
}
