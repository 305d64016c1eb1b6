//! Configuration items (docs/configuration-items.md): a named, versioned set of settings for
//! some platforms, each naming where its value lives (a provider and its target), the value
//! it should have, the rule that says whether the value there complies, and how much a
//! departure matters. An item is data, signed into a configuration package's manifest; this
//! module parses and checks it, the device's agent evaluates and applies it.

use crate::Platform;
use crate::files::check_relative_path;

/// The key of a configuration package's signed manifest `metadata` that holds its items.
pub const MANIFEST_KEY: &str = "config_items";

/// The file of a configuration package that shows its items to people (the signed manifest's
/// `metadata` is what devices apply).
pub const ITEMS_FILE: &str = "config-items.json";

/// The most items one package may hold.
pub const MAX_ITEMS: usize = 64;

/// The items a configuration package's signed manifest holds (none for a package of programs).
pub fn items_of(m: &crate::manifest::Manifest) -> Result<Vec<ConfigItem>, String> {
    let Some(v) = m.metadata.as_ref().and_then(|md| md.get(MANIFEST_KEY)) else {
        return Ok(Vec::new());
    };
    let items: Vec<ConfigItem> = serde_json::from_value(v.clone())
        .map_err(|e| format!("the signed configuration items do not parse: {e}"))?;
    check_items(&items)?;
    Ok(items)
}

/// Checks a package's items: each valid, at most [`MAX_ITEMS`], names unique.
pub fn check_items(items: &[ConfigItem]) -> Result<(), String> {
    if items.len() > MAX_ITEMS {
        return Err(format!("{} items; a package holds at most {MAX_ITEMS}", items.len()));
    }
    let mut names = std::collections::BTreeSet::new();
    for i in items {
        i.check()?;
        if !names.insert(&i.name) {
            return Err(format!("item {} is in the package twice", i.name));
        }
    }
    Ok(())
}

/// The most settings one item may hold.
pub const MAX_SETTINGS: usize = 256;

/// The most bytes a value (a whole file's content included) may hold.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// A configuration item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigItem {
    /// Its name: 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// Its version: a newer one replaces an older one on a device.
    pub version: u32,
    /// What it is for, for people.
    #[serde(default)]
    pub description: String,
    /// The platforms it applies to (`linux-aarch64`, …); empty: every platform.
    #[serde(default)]
    pub platforms: Vec<Platform>,
    /// Report departures without fixing them.
    #[serde(default)]
    pub monitor_only: bool,
    /// Put the replaced values back when the item is removed from the device.
    #[serde(default)]
    pub restore_on_removal: bool,
    /// Its settings.
    pub settings: Vec<Setting>,
}

/// One setting of an item.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Its name within the item.
    pub name: String,
    /// Where the value lives.
    pub target: Target,
    /// The value's type.
    #[serde(rename = "type", default)]
    pub kind: ValueType,
    /// The value it should have (for `one-of`, the allowed values; for `matches`, a pattern
    /// where `*` is any text and `?` any one character).
    pub value: serde_json::Value,
    /// What a complying value is; `equals` when left out.
    #[serde(default)]
    pub rule: Rule,
    /// How much a departure matters.
    #[serde(default)]
    pub severity: Severity,
    /// Its actual value is never reported (a password, a key).
    #[serde(default)]
    pub secret: bool,
}

/// Where a setting's value lives, under the device root.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "provider", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Target {
    /// A key in an INI file; comments, order and other keys are kept.
    Ini {
        /// The file, relative to the device root.
        path: String,
        /// The section (empty: before any section).
        #[serde(default)]
        section: String,
        /// The key.
        key: String,
    },
    /// A value in a JSON document, by JSON pointer (RFC 6901); the rest is kept.
    Json {
        /// The file, relative to the device root.
        path: String,
        /// The pointer, such as `/log/level`.
        pointer: String,
    },
    /// A whole file: its content is the value; mode, owner and group when given.
    File {
        /// The file, relative to the device root.
        path: String,
        /// Its mode, in octal (`"0644"`).
        #[serde(default)]
        mode: Option<String>,
        /// Its owner's uid.
        #[serde(default)]
        owner: Option<u32>,
        /// Its group's gid.
        #[serde(default)]
        group: Option<u32>,
    },
    /// A line present in (value `true`) or absent from (`false`) a text file.
    Line {
        /// The file, relative to the device root.
        path: String,
        /// The line, without its newline.
        line: String,
    },
    /// A systemd unit enabled (value `true`) or disabled (`false`), by its links under
    /// `etc/systemd/system` of the device root, as `systemctl --root` makes them.
    Systemd {
        /// The unit, such as `ssh.service`.
        unit: String,
    },
    /// A kernel parameter: its value under `proc/sys`, kept across boots by a drop-in in
    /// `etc/sysctl.d/`.
    Sysctl {
        /// The key, such as `net.ipv4.ip_forward`.
        key: String,
    },
}

/// A value's type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ValueType {
    /// Text.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A list of text.
    List,
}

/// What a complying value is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// Exactly the value.
    #[default]
    Equals,
    /// An integer no less than the value.
    AtLeast,
    /// An integer no more than the value.
    AtMost,
    /// One of the listed values (the first is applied).
    OneOf,
    /// Text matching the pattern (reported only: there is no value to apply).
    Matches,
}

/// How much a departure matters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Severity {
    /// For information.
    Information,
    /// A warning.
    #[default]
    Warning,
    /// Critical.
    Critical,
}

impl Target {
    /// The file it reads and writes, relative to the device root.
    pub fn path(&self) -> String {
        match self {
            Target::Ini { path, .. }
            | Target::Json { path, .. }
            | Target::File { path, .. }
            | Target::Line { path, .. } => path.clone(),
            Target::Systemd { unit } => format!("etc/systemd/system/{unit}"),
            Target::Sysctl { key } => format!("proc/sys/{}", key.replace('.', "/")),
        }
    }
}

/// Text a line-based file holds as is: no control characters, no surrounding spaces.
fn plain(s: &str) -> bool {
    s.trim() == s && !s.chars().any(char::is_control)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars().all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

impl ConfigItem {
    /// Parses an item from JSON and checks it.
    pub fn from_json(text: &str) -> Result<ConfigItem, String> {
        let item: ConfigItem = serde_json::from_str(text).map_err(|e| e.to_string())?;
        item.check()?;
        Ok(item)
    }

    /// Whether it applies to `platform`.
    pub fn applies_to(&self, platform: &Platform) -> bool {
        self.platforms.is_empty() || self.platforms.contains(platform)
    }

    /// Checks everything a device relies on: names, paths confined to the device root, values
    /// of their type and rule, sizes.
    pub fn check(&self) -> Result<(), String> {
        if !valid_name(&self.name) {
            return Err(format!(
                "item name {:?}: 1 to 64 letters, digits, '.', '_', '-' or '@'",
                self.name
            ));
        }
        if self.settings.is_empty() || self.settings.len() > MAX_SETTINGS {
            return Err(format!("item {}: 1 to {MAX_SETTINGS} settings", self.name));
        }
        let mut names = std::collections::BTreeSet::new();
        for s in &self.settings {
            let at = |why: String| format!("item {} setting {}: {why}", self.name, s.name);
            if !valid_name(&s.name) {
                return Err(at(
                    "the name must be 1 to 64 letters, digits, '.', '_', '-' or '@'".into()
                ));
            }
            if !names.insert(&s.name) {
                return Err(at("the name is used twice".into()));
            }
            s.check().map_err(at)?;
        }
        Ok(())
    }
}

impl Setting {
    fn check(&self) -> Result<(), String> {
        check_relative_path(&self.target.path()).map_err(|e| e.to_string())?;
        match &self.target {
            Target::Json { pointer, .. } if !(pointer.is_empty() || pointer.starts_with('/')) => {
                return Err(format!("JSON pointer {pointer:?} must be empty or start with '/'"));
            }
            Target::Ini { key, section, .. }
                if key.is_empty()
                    || key.contains(['=', '[', ']'])
                    || key.starts_with([';', '#'])
                    || section.contains([']', '['])
                    || !plain(key)
                    || !plain(section) =>
            {
                return Err(format!("INI key {key:?} in [{section}] is not a plain key"));
            }
            Target::File { mode: Some(m), .. }
                if u32::from_str_radix(m, 8).map_or(true, |m| m > 0o7777) =>
            {
                return Err(format!("mode {m:?} is not an octal mode such as \"0644\""));
            }
            Target::Line { line, .. } if line.is_empty() || !plain(line) => {
                return Err(format!(
                    "line {line:?}: no control characters and no leading or trailing spaces"
                ));
            }
            Target::Systemd { unit } if !valid_name(unit) || !unit.contains('.') => {
                return Err(format!("unit {unit:?} is not a unit name such as ssh.service"));
            }
            Target::Sysctl { key }
                if key.is_empty() || !key.split('.').all(|p| !p.is_empty() && valid_name(p)) =>
            {
                return Err(format!("sysctl key {key:?} is not a key such as net.ipv4.ip_forward"));
            }
            _ => {}
        }
        if self.value.to_string().len() > MAX_VALUE_BYTES {
            return Err(format!("the value is larger than {MAX_VALUE_BYTES} bytes"));
        }
        // A value that lives on one line (an INI value, a kernel parameter) holds no control
        // character: a newline would write a second, undeclared key.
        if matches!(self.target, Target::Ini { .. } | Target::Sysctl { .. }) {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let values: Vec<String> = match &self.value {
                serde_json::Value::Array(a) => a.iter().map(text).collect(),
                v => vec![text(v)],
            };
            if values.iter().any(|v| v.chars().any(char::is_control)) {
                return Err("the value holds a control character (a newline?)".into());
            }
        }
        if self.rule == Rule::Matches && self.value.as_str().is_some_and(|p| p.len() > 1024) {
            return Err("a matches pattern is at most 1024 bytes".into());
        }
        let boolean = matches!(self.target, Target::Line { .. } | Target::Systemd { .. });
        match (self.rule, &self.value) {
            (Rule::OneOf, serde_json::Value::Array(list)) if !list.is_empty() => {
                list.iter().try_for_each(|v| self.check_value(v, boolean))
            }
            (Rule::OneOf, _) => Err("one-of needs a non-empty list of values".into()),
            (Rule::AtLeast | Rule::AtMost, v) if self.kind == ValueType::Integer => {
                self.check_value(v, false)
            }
            (Rule::AtLeast | Rule::AtMost, _) => {
                Err("at-least and at-most compare integers".into())
            }
            (Rule::Matches, serde_json::Value::String(_)) => Ok(()),
            (Rule::Matches, _) => Err("matches needs a pattern (text)".into()),
            (Rule::Equals, v) => self.check_value(v, boolean),
        }
    }

    fn check_value(&self, v: &serde_json::Value, boolean: bool) -> Result<(), String> {
        use serde_json::Value as V;
        let ok = match (boolean, self.kind, v) {
            (true, _, V::Bool(_)) => true,
            (true, _, _) => false,
            (_, ValueType::String, V::String(_)) => true,
            (_, ValueType::Integer, V::Number(n)) => n.is_i64(),
            (_, ValueType::Boolean, V::Bool(_)) => true,
            (_, ValueType::List, V::Array(a)) => a.iter().all(V::is_string),
            _ => false,
        };
        if ok {
            Ok(())
        } else if boolean {
            Err(format!("the value {v} must be true or false for this provider"))
        } else {
            Err(format!("the value {v} is not of type {:?}", self.kind))
        }
    }
}

/// Whether `text` matches `pattern`, where `*` is any text and `?` any one character.
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(settings: &str) -> Result<ConfigItem, String> {
        ConfigItem::from_json(&format!(
            r#"{{"name":"ssh","version":1,"platforms":["linux-aarch64"],"settings":[{settings}]}}"#
        ))
    }

    #[test]
    fn items_parse_and_say_what_is_wrong() {
        let ok = item(
            r#"{"name":"root","target":{"provider":"ini","path":"etc/ssh/dm.conf","section":"","key":"PermitRootLogin"},"value":"no","severity":"critical"},
               {"name":"level","target":{"provider":"json","path":"etc/app.json","pointer":"/log/level"},"type":"integer","value":3,"rule":"at-least"},
               {"name":"motd","target":{"provider":"file","path":"etc/motd","mode":"0644"},"value":"managed\n"},
               {"name":"hosts","target":{"provider":"line","path":"etc/hosts","line":"10.0.0.1 mp"},"value":true},
               {"name":"ssh","target":{"provider":"systemd","unit":"ssh.service"},"value":false},
               {"name":"fwd","target":{"provider":"sysctl","key":"net.ipv4.ip_forward"},"value":"0","rule":"one-of"}"#,
        );
        let e = ok.unwrap_err();
        assert!(e.contains("one-of needs a non-empty list"), "{e}");
        let i = item(
            r#"{"name":"fwd","target":{"provider":"sysctl","key":"net.ipv4.ip_forward"},"value":["0","2"],"rule":"one-of"}"#,
        )
        .unwrap();
        assert!(i.applies_to(&Platform::parse("linux-aarch64").unwrap()));
        assert!(!i.applies_to(&Platform::parse("linux-armv7").unwrap()));
        assert_eq!(i.settings[0].target.path(), "proc/sys/net/ipv4/ip_forward");
        for (bad, why) in [
            (
                r#"{"name":"a","target":{"provider":"file","path":"../etc/shadow"},"value":"x"}"#,
                "..",
            ),
            (
                r#"{"name":"a","target":{"provider":"file","path":"/etc/shadow"},"value":"x"}"#,
                "absolute",
            ),
            (
                r#"{"name":"a","target":{"provider":"json","path":"a.json","pointer":"x"},"value":"x"}"#,
                "pointer",
            ),
            (
                r#"{"name":"a","target":{"provider":"ini","path":"a.ini","key":"a=b"},"value":"x"}"#,
                "plain key",
            ),
            (
                r#"{"name":"a","target":{"provider":"ini","path":"a.ini","key":"k"},"type":"integer","value":"x"}"#,
                "type",
            ),
            (
                r#"{"name":"a","target":{"provider":"line","path":"h","line":"x"},"value":"yes"}"#,
                "true or false",
            ),
            (
                r#"{"name":"a","target":{"provider":"systemd","unit":"../x"},"value":true}"#,
                "not allowed",
            ),
            (r#"{"name":"a","target":{"provider":"systemd","unit":"ssh"},"value":true}"#, "unit"),
            (
                r#"{"name":"a","target":{"provider":"sysctl","key":"net..x"},"value":"1"}"#,
                "empty path component",
            ),
            (
                r#"{"name":"a","target":{"provider":"sysctl","key":"net.a b"},"value":"1"}"#,
                "sysctl key",
            ),
            (
                r#"{"name":"a","target":{"provider":"file","path":"f","mode":"999"},"value":"x"}"#,
                "octal",
            ),
            (
                r#"{"name":"a","target":{"provider":"ini","path":"a.ini","key":"k"},"value":"x","rule":"at-least"}"#,
                "integers",
            ),
            (
                r#"{"name":"a","target":{"provider":"nfs","path":"a"},"value":"x"}"#,
                "unknown variant",
            ),
            (
                r#"{"name":"a","target":{"provider":"file","path":"f"},"value":"x"},{"name":"a","target":{"provider":"file","path":"g"},"value":"x"}"#,
                "twice",
            ),
        ] {
            let e = item(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn line_based_values_cannot_smuggle_a_second_line() {
        for (bad, why) in [
            (
                r#"{"name":"a","target":{"provider":"line","path":"h","line":"x \r"},"value":true}"#,
                "control characters",
            ),
            (
                r#"{"name":"a","target":{"provider":"line","path":"h","line":" x"},"value":true}"#,
                "leading or trailing",
            ),
            (
                r#"{"name":"a","target":{"provider":"ini","path":"a.ini","key":";k"},"value":"x"}"#,
                "plain key",
            ),
            (
                r#"{"name":"a","target":{"provider":"ini","path":"a.ini","key":"k","section":" s"},"value":"x"}"#,
                "plain key",
            ),
            (
                r#"{"name":"a","target":{"provider":"ini","path":"a.ini","key":"k"},"value":"x\ny=1"}"#,
                "control character",
            ),
            (
                r#"{"name":"a","target":{"provider":"sysctl","key":"kernel.x"},"value":"0\nkernel.core_pattern=|/x"}"#,
                "control character",
            ),
        ] {
            let e = item(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn wildcards_match_like_a_shell() {
        for (p, t, m) in [
            ("*", "", true),
            ("a*c", "abbbc", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("*.example.com", "mp.example.com", true),
            ("*.example.com", "example.com", false),
            ("a*b*c", "aXbYc", true),
            ("abc", "abcd", false),
        ] {
            assert_eq!(wildcard_match(p, t), m, "{p} {t}");
        }
    }
}
