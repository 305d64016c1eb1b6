//! The device's identity at the management point: its controller id. Chosen once at install
//! (from settings, the device's machine id, or at random), kept across upgrades and repairs.

use dm_shared::fs::{self as dmfs, MODE_PRIVATE};
use dm_shared::{Context, Settings};

use crate::error::Result;

/// `var/lib/dm/identity.json`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    /// The DDI controller id.
    pub controller_id: String,
}

/// The device's controller id: its identity's, else the settings' `ControllerId`.
pub fn controller_id(ctx: &Context, settings: &Settings) -> Result<String> {
    Identity::load(ctx)?
        .map(|i| i.controller_id)
        .or_else(|| settings.environment.controller_id.clone())
        .ok_or_else(|| {
            crate::Error::BadSettings(format!(
                "{} is missing and no ControllerId is set",
                ctx.layout.identity_file().display()
            ))
        })
}

impl Identity {
    /// The device's identity, if it has one.
    pub fn load(ctx: &Context) -> Result<Option<Identity>> {
        let path = ctx.layout.identity_file();
        Ok(dmfs::read_json(&path, 4096)?)
    }

    /// The identity as stored: a JSON document (a `Value`'s text cannot fail to form).
    pub fn to_json(&self) -> String {
        format!("{:#}\n", serde_json::json!({ "controller_id": self.controller_id }))
    }

    /// Writes it.
    pub fn save(&self, ctx: &Context) -> Result<()> {
        let path = ctx.layout.identity_file();
        if let Some(dir) = path.parent() {
            dmfs::create_dir_all(dir, dmfs::MODE_DIR_PRIVATE)?;
        }
        dmfs::write_atomic(&path, self.to_json().as_bytes(), MODE_PRIVATE)?;
        Ok(())
    }
}

/// The identity a client installed with `settings` has: the settings' `ControllerId` when set,
/// else the identity the device already has, else one derived from the device's machine id,
/// else a random one.
pub fn choose(ctx: &Context, settings: &Settings, existing: Option<&Identity>) -> Identity {
    if let Some(id) = &settings.environment.controller_id {
        return Identity { controller_id: id.clone() };
    }
    if let Some(e) = existing {
        return e.clone();
    }
    let machine_id = dmfs::read_optional(&ctx.layout.root().join("etc/machine-id"), 256)
        .ok()
        .flatten()
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .filter(|s| s.len() >= 8 && s.bytes().all(|b| b.is_ascii_hexdigit()));
    let suffix = match machine_id {
        Some(m) => m[..16.min(m.len())].to_ascii_lowercase(),
        None => {
            let mut bytes = [0u8; 8];
            let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
            dm_shared::pki::to_hex(&bytes)
        }
    };
    Identity { controller_id: format!("dm-{suffix}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ctx() -> (tempfile::TempDir, Context) {
        let dir = tempfile::tempdir().unwrap();
        let ctx = Context::for_test(dir.path(), Arc::new(dm_shared::clock::FixedClock::at_unix(0)));
        (dir, ctx)
    }

    #[test]
    fn settings_then_existing_then_machine_id_then_random() {
        let (_d, ctx) = ctx();
        let mut s = Settings::defaults();
        let existing = Identity { controller_id: "kept".into() };
        let a = choose(&ctx, &s, None);
        let b = choose(&ctx, &s, None);
        assert!(a.controller_id.starts_with("dm-") && a != b, "random ids differ");
        std::fs::create_dir_all(ctx.layout.root().join("etc")).unwrap();
        std::fs::write(
            ctx.layout.root().join("etc/machine-id"),
            "0123456789ABCDEF0123456789abcdef\n",
        )
        .unwrap();
        assert_eq!(choose(&ctx, &s, None).controller_id, "dm-0123456789abcdef");
        assert_eq!(choose(&ctx, &s, Some(&existing)), existing);
        s.set_value("Environment", "ControllerId", "scanner-7").unwrap();
        assert_eq!(choose(&ctx, &s, Some(&existing)).controller_id, "scanner-7");
    }

    #[test]
    fn stored_form_is_json_that_loads_back() {
        let id = Identity { controller_id: "dev-\"1".into() };
        let back: Identity = serde_json::from_str(&id.to_json()).unwrap();
        assert_eq!(back, id);
        assert!(id.to_json().ends_with("}\n"));
    }

    #[test]
    fn save_and_load() {
        let (_d, ctx) = ctx();
        assert_eq!(Identity::load(&ctx).unwrap(), None);
        let id = Identity { controller_id: "dev-1".into() };
        id.save(&ctx).unwrap();
        assert_eq!(Identity::load(&ctx).unwrap(), Some(id));
    }
}
