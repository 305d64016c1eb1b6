//! Configuration items on the device (docs/configuration-items.md): each setting evaluated
//! against its rule, applied when it departs (unless the item only monitors), the value it
//! replaced kept so removal can put it back, and compliance stated per setting and per item.
//! One setting's failure (a file that is not INI or JSON, a pointer through a number, a
//! read-only file system) is that setting's error; the others are still applied.

pub mod providers;

use std::path::Path;

use dm_shared::Platform;
use dm_shared::config_item::{ConfigItem, Rule, Setting, ValueType, wildcard_match};
use serde_json::Value;

/// A setting's or an item's compliance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// The value complies.
    Compliant,
    /// It does not (and was not fixed: monitor-only, or no value to apply).
    NonCompliant,
    /// It did not, and was fixed.
    Remediated,
    /// The item is not for this platform.
    NotApplicable,
    /// It could not be evaluated or applied.
    Error,
}

impl State {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Compliant => "compliant",
            State::NonCompliant => "non-compliant",
            State::Remediated => "remediated",
            State::NotApplicable => "not-applicable",
            State::Error => "error",
        }
    }
}

/// What one setting came to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SettingResult {
    /// The setting.
    pub name: String,
    /// Its state.
    pub state: State,
    /// The value it should have (its rule and value), for reports.
    pub expected: String,
    /// The value found before anything was applied; never for a secret setting.
    pub actual: Option<String>,
    /// Why it is in error, or why it could not be remediated.
    pub reason: Option<String>,
}

/// The value a setting replaced the first time it was applied: `None` when there was none.
pub type Replaced = Option<Value>;

/// What one item came to.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ItemResult {
    /// The item.
    pub name: String,
    /// Its version.
    pub version: u32,
    /// Its state: the worst of its settings' (error, then non-compliant, then remediated).
    pub state: State,
    /// Each setting's.
    pub settings: Vec<SettingResult>,
}

/// The value found, as the setting's type sees it: text from a file parsed as its type.
fn typed(setting: &Setting, found: &Value) -> Value {
    let Value::String(s) = found else { return found.clone() };
    let s = s.trim();
    match setting.kind {
        ValueType::Integer => s.parse::<i64>().map(Value::from).unwrap_or_else(|_| found.clone()),
        ValueType::Boolean => match s.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Value::Bool(true),
            "false" | "no" | "0" | "off" => Value::Bool(false),
            _ => found.clone(),
        },
        ValueType::List => Value::Array(
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(|x| Value::String(x.into()))
                .collect(),
        ),
        ValueType::String => Value::String(s.to_string()),
    }
}

/// Whether `found` complies with the setting's rule.
pub fn complies(setting: &Setting, found: Option<&Value>) -> bool {
    let Some(found) = found.map(|f| typed(setting, f)) else {
        // Absent: complies only with "absent" (a line or unit that must not be there).
        return setting.value == Value::Bool(false)
            && matches!(
                setting.target,
                dm_shared::config_item::Target::Line { .. }
                    | dm_shared::config_item::Target::Systemd { .. }
            );
    };
    let want = &setting.value;
    if let dm_shared::config_item::Target::File { mode, owner, group, .. } = &setting.target {
        return file_complies(setting, &found, mode.as_deref(), *owner, *group);
    }
    match setting.rule {
        Rule::Equals if matches!(setting.target, dm_shared::config_item::Target::Sysctl { .. }) => {
            let norm =
                |v: &Value| providers::text_of(v).split_whitespace().collect::<Vec<_>>().join(" ");
            norm(want) == norm(&found)
        }
        Rule::Equals => {
            &found == want
                || (found.is_string() && providers::text_of(want) == providers::text_of(&found))
        }
        Rule::AtLeast => found.as_i64().zip(want.as_i64()).is_some_and(|(f, w)| f >= w),
        Rule::AtMost => found.as_i64().zip(want.as_i64()).is_some_and(|(f, w)| f <= w),
        Rule::OneOf => want.as_array().is_some_and(|l| l.contains(&found)),
        Rule::Matches => match (&found, want) {
            (Value::String(f), Value::String(p)) => wildcard_match(p, f),
            _ => false,
        },
    }
}

/// A whole file complies when its content does (by the rule) and its mode and owners are the
/// ones the target names.
fn file_complies(
    setting: &Setting,
    found: &Value,
    mode: Option<&str>,
    owner: Option<u32>,
    group: Option<u32>,
) -> bool {
    let content = found.get("content").cloned().unwrap_or(Value::Null);
    let content_ok = match setting.rule {
        Rule::Matches => match (&content, &setting.value) {
            (Value::String(f), Value::String(p)) => wildcard_match(p, f),
            _ => false,
        },
        Rule::OneOf => setting.value.as_array().is_some_and(|l| l.contains(&content)),
        _ => providers::text_of(&content) == providers::text_of(&setting.value),
    };
    let octal = |v: Option<&str>| v.and_then(|m| u32::from_str_radix(m, 8).ok());
    let mode_ok =
        mode.is_none_or(|m| octal(Some(m)) == octal(found.get("mode").and_then(Value::as_str)));
    let id = |k: &str| found.get(k).and_then(Value::as_u64);
    let owner_ok = owner.is_none_or(|o| id("owner") == Some(u64::from(o)));
    let group_ok = group.is_none_or(|g| id("group") == Some(u64::from(g)));
    content_ok && mode_ok && owner_ok && group_ok
}

/// The value applying the setting writes: `None` when its rule names none (`matches`).
pub fn to_apply(setting: &Setting) -> Option<Value> {
    match setting.rule {
        Rule::Equals | Rule::AtLeast | Rule::AtMost => Some(setting.value.clone()),
        Rule::OneOf => setting.value.as_array().and_then(|l| l.first().cloned()),
        Rule::Matches => None,
    }
}

fn expected(setting: &Setting) -> String {
    let rule = match setting.rule {
        Rule::Equals => "",
        Rule::AtLeast => "at least ",
        Rule::AtMost => "at most ",
        Rule::OneOf => "one of ",
        Rule::Matches => "matching ",
    };
    let value = if setting.secret { "(secret)".to_string() } else { setting.value.to_string() };
    format!("{rule}{value}")
}

fn shown(setting: &Setting, found: Option<&Value>) -> Option<String> {
    if setting.secret {
        return None;
    }
    // A whole file shows its content and mode.
    let found = found.map(|f| match f.get("content") {
        Some(c) => {
            let mode = f.get("mode").and_then(Value::as_str).unwrap_or("?");
            Value::String(format!("{} (mode {mode})", providers::text_of(c)))
        }
        None => f.clone(),
    });
    Some(found.as_ref().map_or_else(
        || "(absent)".to_string(),
        |f| {
            let s = providers::text_of(f);
            if s.len() > 200 {
                format!("{}…", &s[..s.char_indices().nth(200).map_or(s.len(), |(i, _)| i)])
            } else {
                s
            }
        },
    ))
}

/// Evaluates one setting and, when it departs and `fix`, applies it. Returns the result and,
/// when a value was written, the value it replaced.
pub fn enforce(root: &Path, setting: &Setting, fix: bool) -> (SettingResult, Option<Replaced>) {
    let mut r = SettingResult {
        name: setting.name.clone(),
        state: State::Compliant,
        expected: expected(setting),
        actual: None,
        reason: None,
    };
    let found = match providers::get(root, &setting.target) {
        Ok(f) => f,
        Err(why) => {
            r.state = State::Error;
            r.reason = Some(why);
            return (r, None);
        }
    };
    r.actual = shown(setting, found.as_ref());
    if complies(setting, found.as_ref()) {
        return (r, None);
    }
    r.state = State::NonCompliant;
    if !fix {
        r.reason = Some("monitor only: reported, not changed".into());
        return (r, None);
    }
    let Some(value) = to_apply(setting) else {
        r.reason = Some("its rule (matches) names no value to apply".into());
        return (r, None);
    };
    // What was there is kept even when the write fails part-way (a file written but not
    // its owner): a later success must not record dm's own value as the original.
    match providers::set(root, &setting.target, Some(&value), setting.secret) {
        Ok(()) => {
            r.state = State::Remediated;
            (r, Some(found))
        }
        Err(why) => {
            r.state = State::Error;
            r.reason = Some(why);
            (r, Some(found))
        }
    }
}

/// The worst state of some settings.
pub fn worst(states: impl IntoIterator<Item = State>) -> State {
    let rank = |s: State| match s {
        State::Error => 4,
        State::NonCompliant => 3,
        State::Remediated => 2,
        State::Compliant => 1,
        State::NotApplicable => 0,
    };
    states.into_iter().max_by_key(|s| rank(*s)).unwrap_or(State::Compliant)
}

/// Evaluates (and, unless monitor-only, applies) an item on this device. Returns its result
/// and the values its settings replaced, by setting name.
pub fn enforce_item(
    root: &Path,
    item: &ConfigItem,
    platform: &Platform,
) -> (ItemResult, Vec<(String, Replaced)>) {
    if !item.applies_to(platform) {
        let r = ItemResult {
            name: item.name.clone(),
            version: item.version,
            state: State::NotApplicable,
            settings: Vec::new(),
        };
        return (r, Vec::new());
    }
    let mut settings = Vec::new();
    let mut replaced = Vec::new();
    for s in &item.settings {
        let (r, old) = enforce(root, s, !item.monitor_only);
        if let Some(old) = old {
            replaced.push((s.name.clone(), old));
        }
        settings.push(r);
    }
    let state = worst(settings.iter().map(|s| s.state));
    (ItemResult { name: item.name.clone(), version: item.version, state, settings }, replaced)
}

/// Puts back what an item replaced (its removal, when it says so).
pub fn restore(root: &Path, item: &ConfigItem, replaced: &[(String, Replaced)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, old) in replaced {
        let Some(s) = item.settings.iter().find(|s| &s.name == name) else { continue };
        if let Err(why) = providers::set(root, &s.target, old.as_ref(), s.secret) {
            problems.push(format!("{name}: {why}"));
        }
        // The kernel parameter's old value is back; it was not kept across boots by dm.
        if let dm_shared::config_item::Target::Sysctl { key } = &s.target {
            if let Err(why) = providers::remove_sysctl_dropin(root, key) {
                problems.push(format!("{name}: {why}"));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests;
