//! `dmmp admin`: the web console's administrators. A password is kept only as its Argon2id
//! hash; a client certificate is pinned by the SHA-256 of its DER, with its validity, and
//! opens the console with no password while it is valid (docs/console.md). A new password or
//! the administrator's removal ends their sessions; an unpinned certificate opens nothing from
//! the next request.

use std::path::Path;

use super::Out;
use crate::error::{Error, Result};
use crate::model::AdminCert;
use crate::storage::Storage;

/// Refuses a name that is not 1 to 64 letters, digits, `.`, `_`, `-` or `@`.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "administrator name {name:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'"
        )))
    }
}

/// What `dmmp admin add` reads the password from: `file` (capped at 4 KiB), or one line of
/// standard input.
pub fn password_text(file: Option<&Path>) -> Result<String> {
    match file {
        Some(f) => Ok(String::from_utf8_lossy(&dm_shared::fs::read_capped(f, 4096)?).into_owned()),
        None => {
            let mut line = String::new();
            std::io::stdin()
                .read_line(&mut line)
                .map_err(|e| Error::Usage(format!("reading the password: {e}")))?;
            Ok(line)
        }
    }
}

/// `dmmp admin add`: `text`'s first line is the password, at least 12 characters.
pub fn add(store: &dyn Storage, name: &str, text: &str, now: i64) -> Result<Out> {
    add_with_role(store, name, text, crate::api::Role::Administrator, now)
}

/// `dmmp admin add --role`: an administrator whose console role is `role` (docs/console.md).
pub fn add_with_role(
    store: &dyn Storage,
    name: &str,
    text: &str,
    role: crate::api::Role,
    now: i64,
) -> Result<Out> {
    check_name(name)?;
    let password = text.lines().next().unwrap_or("");
    if password.chars().count() < 12 {
        return Err(Error::Usage("the password must be at least 12 characters".into()));
    }
    let hash = crate::server::console::passwords::hash_password(password)?;
    store.set_administrator(name, &hash, now)?;
    store.set_administrator_role(name, role)?;
    Ok(Out::new(
        format!(
            "administrator {name} ({}) can log in to the console at /console/\n",
            role.as_str()
        ),
        serde_json::json!({"administrator": name, "role": role}),
    ))
}

/// Reads a PEM certificate and what the console pins of it.
fn read_cert(name: &str, path: &Path) -> Result<AdminCert> {
    let bad = |why: String| Error::Config { path: path.to_path_buf(), reason: why };
    let pem = dm_shared::fs::read_capped(path, 64 * 1024)?;
    let (_, block) = x509_parser::pem::parse_x509_pem(&pem)
        .map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
    let cert = block.parse_x509().map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
    let v = cert.validity();
    Ok(AdminCert {
        sha256: dm_shared::pki::sha256_hex(&block.contents),
        name: name.to_string(),
        subject: cert.subject().to_string(),
        not_before: v.not_before.timestamp(),
        not_after: v.not_after.timestamp(),
    })
}

/// `dmmp admin certificate`: pins `path` (a PEM certificate) to administrator `name`. An
/// expired certificate is refused here, as the console would refuse it.
pub fn certificate(store: &dyn Storage, name: &str, path: &Path, now: i64) -> Result<Out> {
    check_name(name)?;
    let c = read_cert(name, path)?;
    if c.not_after <= now {
        return Err(Error::Usage(format!("{}: the certificate has expired", path.display())));
    }
    store.add_administrator_certificate(&c, now)?;
    Ok(Out::new(
        format!(
            "administrator {name} opens the console with the certificate {} (sha256 {}) until {}\n",
            c.subject,
            c.sha256,
            super::when(Some(c.not_after))
        ),
        serde_json::json!({"administrator": name, "subject": c.subject, "sha256": c.sha256,
            "not_after": c.not_after}),
    ))
}

/// `dmmp admin remove`: the administrator's password and pinned certificates go; the server
/// ends their sessions at its next look at the database (within a second).
pub fn remove(store: &dyn Storage, name: &str) -> Result<Out> {
    check_name(name)?;
    if !store.remove_administrator(name)? {
        return Err(Error::NotFound(format!("administrator {name}")));
    }
    Ok(Out::new(
        format!("administrator {name} removed: their sessions and certificates open nothing\n"),
        serde_json::json!({"removed": name}),
    ))
}

/// `dmmp admin unpin`: the certificate (a PEM file, or the SHA-256 `admin list` shows) no
/// longer opens the console.
pub fn unpin(store: &dyn Storage, sha256: Option<&str>, file: Option<&Path>) -> Result<Out> {
    let sha = match (sha256, file) {
        (Some(s), None) => {
            let s = s.trim().to_ascii_lowercase();
            if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::Usage(format!("--sha256 {s:?}: 64 hex digits")));
            }
            s
        }
        (None, Some(f)) => read_cert("-", f)?.sha256,
        _ => return Err(Error::Usage("give --sha256 HEX or --file CERT.pem".into())),
    };
    let Some(cert) = store.administrator_by_certificate(&sha)? else {
        return Err(Error::NotFound(format!(
            "a pinned administrator certificate with sha256 {sha}"
        )));
    };
    store.remove_administrator_certificate(&sha)?;
    Ok(Out::new(
        format!(
            "certificate {} (sha256 {sha}) of administrator {} unpinned: it opens nothing from the next request\n",
            cert.subject, cert.name
        ),
        serde_json::json!({"administrator": cert.name, "unpinned": sha}),
    ))
}

/// `dmmp admin list`: the administrators and their pinned certificates.
pub fn list(store: &dyn Storage) -> Result<Out> {
    let admins = store.administrators()?;
    let certs = store.administrator_certificates()?;
    let mut rows: Vec<Vec<String>> = admins
        .iter()
        .map(|a| vec![a.name.clone(), "password".into(), super::when(Some(a.created)), "".into()])
        .collect();
    rows.extend(certs.iter().map(|c| {
        vec![
            c.name.clone(),
            format!("certificate {}", c.subject),
            format!("until {}", super::when(Some(c.not_after))),
            c.sha256.clone(),
        ]
    }));
    rows.sort_by(|a, b| a[0].cmp(&b[0]));
    let json = serde_json::json!({
        "administrators": admins.iter().map(|a| serde_json::json!({"name": a.name, "created": a.created})).collect::<Vec<_>>(),
        "certificates": certs.iter().map(|c| serde_json::json!({"name": c.name, "subject": c.subject,
            "sha256": c.sha256, "not_before": c.not_before, "not_after": c.not_after})).collect::<Vec<_>>(),
    });
    Ok(Out::new(super::table(&["NAME", "OPENS WITH", "SINCE / VALID", "SHA-256"], &rows), json))
}
