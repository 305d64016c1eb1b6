//! What a desktop knows about the devices it tethers (docs/tether.md): where each one is
//! reached (an `ssh://` URL), and the record `dmtether` keeps of each device it has seen, which
//! the desktop's agent turns into inventory for the management point.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use crate::DeviceLayout;
use crate::error::Result;
use crate::fs::{self as dmfs, MODE_PRIVATE};
use crate::vocab::inventory as key;

/// The most devices one desktop keeps a record of.
pub const MAX_DEVICES: usize = 256;

/// A device reached over SSH: `ssh://user@host[:port][/device-root]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SshTarget {
    /// The login name.
    pub user: String,
    /// The host name or address (an IPv6 address without brackets).
    pub host: String,
    /// The port.
    pub port: u16,
    /// The device root on the device: `/` for a real device.
    pub root: String,
}

fn valid_name(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with('-')
        && s.chars().all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

impl FromStr for SshTarget {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<SshTarget, String> {
        let bad = |why: &str| format!("{s:?} is not an ssh://user@host[:port][/root] URL: {why}");
        let rest = s.strip_prefix("ssh://").ok_or_else(|| bad("it must start with ssh://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (user, hostport) =
            authority.split_once('@').ok_or_else(|| bad("it names no user (user@host)"))?;
        if user.contains(':') {
            return Err(bad("passwords are never written in settings; the desktop uses its key"));
        }
        if !valid_name(user, "._-") {
            return Err(bad("the user may hold letters, digits, '.', '_' and '-'"));
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, tail) = v6.split_once(']').ok_or_else(|| bad("an unclosed '['"))?;
            if !tail.is_empty() && !tail.starts_with(':') {
                return Err(bad("text after ']' that is not a port"));
            }
            (h, tail.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            }
        };
        if !valid_name(host, ".-:_") {
            return Err(bad("the host may hold letters, digits, '.', '-', '_' and ':' (IPv6)"));
        }
        let port = match port {
            None => 22,
            Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| bad("bad port"))?,
        };
        let root_ok = path.starts_with('/')
            && path.len() <= 1024
            && !path.split('/').any(|c| c == "..")
            && path.chars().all(|c| !c.is_control() && c != '\'');
        if !root_ok {
            return Err(bad("the device root must be an absolute path without '..' or quotes"));
        }
        let root = match path.trim_end_matches('/') {
            "" => "/".to_string(),
            r => r.to_string(),
        };
        Ok(SshTarget { user: user.into(), host: host.into(), port, root })
    }
}

impl fmt::Display for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let host =
            if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        write!(f, "ssh://{}@{host}:{}", self.user, self.port)?;
        if self.root != "/" {
            write!(f, "{}", self.root)?;
        }
        Ok(())
    }
}

impl SshTarget {
    /// The `known_hosts` name of the host: `host`, or `[host]:port` off port 22.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 { self.host.clone() } else { format!("[{}]:{}", self.host, self.port) }
    }

    /// A path under the device root on the device.
    pub fn remote_path(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root.trim_end_matches('/'))
    }
}

/// What happened the last time `dmtether` dealt with a device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TetherOutcome {
    /// When (RFC 3339).
    pub time: String,
    /// `installed`, `upgraded`, `reconfigured`, `no-action`, `failed`, `interrupted` or
    /// `refused` (host key).
    pub result: String,
    /// The client version of the bundle it used, if one.
    #[serde(default)]
    pub bundle_version: Option<String>,
    /// The status code (`0x…` in the record).
    pub code: crate::StatusCode,
    /// What happened, for people.
    pub text: String,
}

/// A tethered device `dmtether` has seen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TetheredDevice {
    /// Where it is reached.
    pub url: String,
    /// Its controller id, once it has a client.
    #[serde(default)]
    pub controller_id: Option<String>,
    /// Its client version, if it has one.
    #[serde(default)]
    pub client_version: Option<String>,
    /// Its platform, such as `linux-aarch64`.
    #[serde(default)]
    pub platform: Option<String>,
    /// When it was last reached (RFC 3339).
    #[serde(default)]
    pub last_seen: Option<String>,
    /// Whether it answered at the last look.
    #[serde(default)]
    pub connected: bool,
    /// The last thing done with it.
    #[serde(default)]
    pub outcome: Option<TetherOutcome>,
}

/// Every tethered device a desktop has seen, by URL: `var/lib/dm/tether/devices.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TetherRecord {
    /// The devices, by URL.
    pub devices: BTreeMap<String, TetheredDevice>,
}

impl TetheredDevice {
    /// A device not seen before.
    pub fn new(url: String) -> TetheredDevice {
        TetheredDevice {
            url,
            controller_id: None,
            client_version: None,
            platform: None,
            last_seen: None,
            connected: false,
            outcome: None,
        }
    }
}

impl TetherRecord {
    /// Where it is kept.
    pub fn path(layout: &DeviceLayout) -> PathBuf {
        layout.tether_dir().join("devices.json")
    }

    /// The record, empty when there is none.
    pub fn load(layout: &DeviceLayout) -> Result<TetherRecord> {
        Ok(dmfs::read_json(&TetherRecord::path(layout), 1 << 20)?.unwrap_or_default())
    }

    /// Writes it atomically.
    pub fn save(&self, layout: &DeviceLayout) -> Result<()> {
        dmfs::create_dir_all(&layout.tether_dir(), dmfs::MODE_DIR_PRIVATE)?;
        dmfs::write_json(&TetherRecord::path(layout), self, MODE_PRIVATE)
    }

    /// The inventory a desktop that tethers devices sends: `tethered=yes` (a collection rule
    /// can pick such desktops), the devices with their client versions, and the last outcome.
    pub fn inventory(&self) -> Vec<(&'static str, String)> {
        if self.devices.is_empty() {
            return Vec::new();
        }
        let devices: Vec<String> = self
            .devices
            .values()
            .map(|d| {
                let name = d.controller_id.clone().unwrap_or_else(|| d.url.clone());
                let version = d.client_version.as_deref().unwrap_or("no client");
                format!("{name} {version}")
            })
            .collect();
        let mut out = vec![(key::TETHERED, "yes".to_string())];
        out.push((key::TETHERED_DEVICES, devices.join(", ")));
        let last = self
            .devices
            .values()
            .filter_map(|d| d.outcome.as_ref().map(|o| (d, o)))
            .max_by(|a, b| a.1.time.cmp(&b.1.time));
        if let Some((d, o)) = last {
            let name = d.controller_id.as_deref().unwrap_or(&d.url);
            out.push((
                key::TETHERED_LAST,
                format!("{name}: {} ({}) {}", o.result, o.code.hex(), o.time),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_and_print() {
        let t: SshTarget = "ssh://root@10.0.0.7".parse().unwrap();
        assert_eq!(
            (t.user.as_str(), t.host.as_str(), t.port, t.root.as_str()),
            ("root", "10.0.0.7", 22, "/")
        );
        assert_eq!(t.known_hosts_name(), "10.0.0.7");
        assert_eq!(t.remote_path("var/log/dm"), "/var/log/dm");
        let t: SshTarget = "ssh://dm@127.0.0.1:2222/tmp/dev 1/".parse().unwrap();
        assert_eq!((t.port, t.root.as_str()), (2222, "/tmp/dev 1"));
        assert_eq!(t.to_string(), "ssh://dm@127.0.0.1:2222/tmp/dev 1");
        assert_eq!(t.known_hosts_name(), "[127.0.0.1]:2222");
        assert_eq!(t.remote_path("var/log/dm"), "/tmp/dev 1/var/log/dm");
        let t: SshTarget = "ssh://u@[fe80::1]:22".parse().unwrap();
        assert_eq!(t.host, "fe80::1");
        assert_eq!(t.to_string(), "ssh://u@[fe80::1]:22");
    }

    #[test]
    fn bad_targets_say_why() {
        for (bad, why) in [
            ("root@host", "ssh://"),
            ("ssh://host", "no user"),
            ("ssh://u:pw@host", "passwords"),
            ("ssh://-oProxyCommand=x@host", "user"),
            ("ssh://u@-oProxyCommand=x", "host"),
            ("ssh://u@host:0", "port"),
            ("ssh://u@host:99999", "port"),
            ("ssh://u@host/a/../b", "device root"),
            ("ssh://u@host/a'b", "device root"),
            ("ssh://u@[::1]junk", "port"),
        ] {
            let e = bad.parse::<SshTarget>().unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn inventory_names_devices_and_the_last_outcome() {
        assert!(TetherRecord::default().inventory().is_empty());
        let mut r = TetherRecord::default();
        let outcome = |t: &str, result: &str| TetherOutcome {
            time: t.into(),
            result: result.into(),
            bundle_version: Some("1.2.0.0".into()),
            code: crate::StatusCode::S_OK,
            text: String::new(),
        };
        r.devices.insert(
            "ssh://a@h:1".into(),
            TetheredDevice {
                url: "ssh://a@h:1".into(),
                controller_id: Some("dev-7".into()),
                client_version: Some("1.2.0.0".into()),
                platform: None,
                last_seen: None,
                connected: false,
                outcome: Some(outcome("2026-11-28T12:00:00Z", "installed")),
            },
        );
        r.devices.insert(
            "ssh://b@h:2".into(),
            TetheredDevice {
                url: "ssh://b@h:2".into(),
                controller_id: None,
                client_version: None,
                platform: None,
                last_seen: None,
                connected: false,
                outcome: Some(outcome("2026-11-28T11:00:00Z", "failed")),
            },
        );
        let inv: BTreeMap<_, _> = r.inventory().into_iter().collect();
        assert_eq!(inv[key::TETHERED], "yes");
        assert_eq!(inv[key::TETHERED_DEVICES], "dev-7 1.2.0.0, ssh://b@h:2 no client");
        assert_eq!(inv[key::TETHERED_LAST], "dev-7: installed (0x00000000) 2026-11-28T12:00:00Z");
    }
}
