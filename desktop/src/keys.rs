//! The desktop's SSH identity and the host keys it trusts, both under `etc/dm/tether/` of the
//! desktop's root and nowhere else: the key is made on first use (0600 from creation, by
//! `ssh-keygen`), and a host key enters `known_hosts` only by `dmtether trust`, never by
//! connecting.

use std::path::PathBuf;
use std::process::Command;

use dm_shared::Context;
use dm_shared::fs as dmfs;
use dm_shared::tether::SshTarget;
use log::info;

use crate::error::{Error, Result};

/// The desktop's private key.
pub fn key_path(ctx: &Context) -> PathBuf {
    ctx.layout.tether_config_dir().join("id_ed25519")
}

/// The only host keys `dmtether` accepts.
pub fn known_hosts_path(ctx: &Context) -> PathBuf {
    ctx.layout.tether_config_dir().join("known_hosts")
}

/// The desktop's key, made on first use.
pub fn ensure_key(ctx: &Context) -> Result<PathBuf> {
    let path = key_path(ctx);
    if path.is_file() {
        return Ok(path);
    }
    dmfs::create_dir_all(&ctx.layout.tether_config_dir(), dmfs::MODE_DIR_PRIVATE)?;
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C"])
        .arg(format!("dmtether@{host}"))
        .arg("-f")
        .arg(&path)
        .output()
        .map_err(|e| {
            Error::Usage(format!("cannot run ssh-keygen (is OpenSSH's client installed?): {e}"))
        })?;
    if !out.status.success() {
        return Err(Error::Usage(format!(
            "ssh-keygen could not make {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    info!("made the desktop's SSH key {}", path.display());
    Ok(path)
}

/// The desktop's public key line, for the devices' `authorized_keys`.
pub fn public_key(ctx: &Context) -> Result<String> {
    let path = ensure_key(ctx)?.with_extension("pub");
    let bytes = dmfs::read_capped(&path, 16 * 1024)?;
    Ok(String::from_utf8_lossy(&bytes).trim().to_string())
}

/// A host key line as `ssh-keyscan` prints it or a `.pub` file holds it: `TYPE BASE64 [comment]`
/// (a leading host name is dropped). Returns `TYPE BASE64`.
pub fn parse_host_key(line: &str) -> Result<String> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let start = fields.iter().position(|f| is_key_type(f));
    let (Some(i), true) = (start, line.len() <= 16 * 1024) else {
        return Err(Error::Usage(format!(
            "{:?} is not a host key: expected TYPE BASE64, such as ssh-ed25519 AAAA…",
            line.chars().take(80).collect::<String>()
        )));
    };
    let b64 = fields.get(i + 1).copied().unwrap_or_default();
    let ok =
        b64.len() >= 16 && b64.bytes().all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b));
    if !ok {
        return Err(Error::Usage(format!("the {} key's data is not base64", fields[i])));
    }
    Ok(format!("{} {b64}", fields[i]))
}

fn is_key_type(s: &str) -> bool {
    s == "ssh-ed25519" || s == "ssh-rsa" || s.starts_with("ecdsa-sha2-") || s.starts_with("sk-")
}

/// What `trust` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Trusted {
    /// The key was added.
    Added,
    /// The same key was already trusted.
    Already,
    /// Another key was trusted for the host, and was replaced.
    Replaced,
}

/// Trusts `key` for `target`'s host. Another key already trusted for it is replaced only
/// with `replace`: a changed host key is a decision for a person.
pub fn trust(ctx: &Context, target: &SshTarget, key: &str, replace: bool) -> Result<Trusted> {
    let key = parse_host_key(key)?;
    let path = known_hosts_path(ctx);
    let text = match dmfs::read_optional(&path, 1 << 20)? {
        Some(b) => String::from_utf8_lossy(&b).into_owned(),
        None => String::new(),
    };
    let name = target.known_hosts_name();
    let mut kept = Vec::new();
    let mut found = None;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut parts = line.splitn(2, ' ');
        let (host, rest) = (parts.next().unwrap_or(""), parts.next().unwrap_or("").trim());
        if host == name {
            found = Some(rest == key || found == Some(true));
            continue;
        }
        kept.push(line.to_string());
    }
    let outcome = match found {
        Some(true) => return Ok(Trusted::Already),
        Some(false) if !replace => {
            return Err(Error::Usage(format!(
                "{name} already has another host key in {}; give --replace if the device was re-imaged",
                path.display()
            )));
        }
        Some(false) => Trusted::Replaced,
        None => Trusted::Added,
    };
    kept.push(format!("{name} {key}"));
    dmfs::create_dir_all(&ctx.layout.tether_config_dir(), dmfs::MODE_DIR_PRIVATE)?;
    dmfs::write_atomic(&path, (kept.join("\n") + "\n").as_bytes(), dmfs::MODE_PRIVATE)?;
    info!("{name}: host key {} trusted ({outcome:?})", key.split(' ').next().unwrap_or(""));
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB1v3Uu8w0vB0b4t8JcQkzq3Jj0W3s6w1c2x9YkZfQ3K";
    const OTHER: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHq7p0eG2cS8n1r4Vb6tM9dQw3Lx0aJk5yZ2uF8hR1oP";

    #[test]
    fn host_keys_are_checked_and_trusted_explicitly() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), std::sync::Arc::new(dm_shared::clock::SystemClock));
        let t: SshTarget = "ssh://root@127.0.0.1:2222".parse().unwrap();
        assert_eq!(trust(&ctx, &t, &format!("{KEY} root@dev"), false).unwrap(), Trusted::Added);
        assert_eq!(trust(&ctx, &t, KEY, false).unwrap(), Trusted::Already);
        let e = trust(&ctx, &t, OTHER, false).unwrap_err();
        assert!(e.to_string().contains("--replace"), "{e}");
        assert_eq!(trust(&ctx, &t, OTHER, true).unwrap(), Trusted::Replaced);
        let text = std::fs::read_to_string(known_hosts_path(&ctx)).unwrap();
        assert_eq!(text, format!("[127.0.0.1]:2222 {OTHER}\n"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(known_hosts_path(&ctx)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        for bad in ["", "hello", "ssh-ed25519", "ssh-ed25519 not;base64!"] {
            assert!(parse_host_key(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_host_key(&format!("[h]:22 {KEY}")).unwrap(), KEY);
    }
}
