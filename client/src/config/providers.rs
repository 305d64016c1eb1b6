//! Where a setting's value lives, read and written under the device root and nowhere else:
//! a key in an INI file, a value in a JSON document, a whole file, a line in a text file, a
//! systemd unit's enablement links, a kernel parameter. Every write is atomic (a temporary
//! file renamed over the old one, the old file's mode kept) and refused when the file changed
//! since it was read; no path may pass through a symbolic link.

use std::path::{Path, PathBuf};

use dm_shared::config_item::Target;
use dm_shared::fs as dmfs;
use serde_json::Value;

/// The most bytes a file a provider edits may hold.
pub const MAX_FILE: u64 = 4 << 20;

/// A provider's failure, for people: it names the file.
pub type Failure = String;

/// The path of `rel` under `root`, refused when any part of it below the root is a symbolic
/// link (which could lead out of the device root).
pub fn confined(root: &Path, rel: &str) -> Result<PathBuf, Failure> {
    dm_shared::manifest::check_relative_path(rel).map_err(|e| e.to_string())?;
    let mut p = root.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(format!("{} is a symbolic link: never followed", p.display()));
            }
            _ => {}
        }
    }
    Ok(p)
}

/// A file's text and how it looked when read (to notice a change before writing).
struct Snapshot {
    text: Option<String>,
    stamp: Option<(u64, std::time::SystemTime)>,
    mode: u32,
    /// The owner and group of the file there (none: a new file, root's).
    owners: Option<(u32, u32)>,
}

fn stamp(path: &Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

fn read(path: &Path) -> Result<Snapshot, Failure> {
    use std::os::unix::fs::PermissionsExt;
    let before = stamp(path);
    let bytes = dmfs::read_optional(path, MAX_FILE).map_err(|e| e.to_string())?;
    let text = match bytes {
        Some(b) => Some(
            String::from_utf8(b).map_err(|_| format!("{} is not UTF-8 text", path.display()))?,
        ),
        None => None,
    };
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok();
    let mode = meta.as_ref().map_or(0o644, |m| m.permissions().mode() & 0o7777);
    let owners = meta.map(|m| (m.uid(), m.gid()));
    Ok(Snapshot { text, stamp: before, mode, owners })
}

/// Gives `path` (never a link it may have become) these owners.
fn chown(path: &Path, owner: Option<u32>, group: Option<u32>) -> Result<(), Failure> {
    use rustix::fs::{AtFlags, CWD, Gid, Uid, chownat};
    chownat(
        CWD,
        path,
        owner.map(Uid::from_raw),
        group.map(Gid::from_raw),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| format!("{}: cannot set its owner: {e}", path.display()))
}

/// Writes `text` over the file read as `snap`, unless it changed since.
fn write(path: &Path, snap: &Snapshot, text: &str) -> Result<(), Failure> {
    if stamp(path) != snap.stamp {
        return Err(format!(
            "{} changed while it was being updated; left as it is, and evaluated again next time",
            path.display()
        ));
    }
    if let Some(dir) = path.parent() {
        dmfs::create_dir_all(dir, dmfs::MODE_DIR).map_err(|e| e.to_string())?;
    }
    dm_shared::failpoint::hit("config-write").map_err(|e| e.to_string())?;
    dmfs::write_atomic(path, text.as_bytes(), snap.mode).map_err(|e| e.to_string())?;
    // The file keeps its owners: a service's own configuration stays readable by it.
    match snap.owners {
        Some((uid, gid)) => chown(path, Some(uid), Some(gid)),
        None => Ok(()),
    }
}

/// The value there now: `None` when the key, file, line or link is absent.
pub fn get(root: &Path, target: &Target) -> Result<Option<Value>, Failure> {
    match target {
        Target::Ini { path, section, key } => {
            let p = confined(root, path)?;
            Ok(read(&p)?.text.and_then(|t| ini_get(&t, section, key)).map(Value::String))
        }
        Target::Json { path, pointer } => {
            let p = confined(root, path)?;
            match read(&p)?.text {
                None => Ok(None),
                Some(t) => Ok(parse_json(&p, &t)?.pointer(pointer).cloned()),
            }
        }
        Target::File { path, .. } => {
            let p = confined(root, path)?;
            let Some(text) = read(&p)?.text else { return Ok(None) };
            Ok(Some(file_state(&p, text)))
        }
        Target::Line { path, line } => {
            let p = confined(root, path)?;
            let text = read(&p)?.text.unwrap_or_default();
            Ok(Some(Value::Bool(text.lines().any(|l| l.trim_end() == line))))
        }
        Target::Systemd { unit } => Ok(Some(Value::Bool(!enabled_links(root, unit)?.is_empty()))),
        Target::Sysctl { key } => {
            let p = confined(root, &target.path())?;
            let _ = key;
            Ok(read(&p)?.text.map(|t| Value::String(normalize_sysctl(&t))))
        }
    }
}

/// Puts `value` there (`None`: removes the key, file, line or link: a restore of "absent").
/// `private`: a file it creates is `0600` (a secret setting's).
pub fn set(
    root: &Path,
    target: &Target,
    value: Option<&Value>,
    private: bool,
) -> Result<(), Failure> {
    let read = |p: &Path| {
        read(p).map(|mut snap| {
            if private && snap.owners.is_none() {
                snap.mode = 0o600;
            }
            snap
        })
    };
    match target {
        Target::Ini { path, section, key } => {
            let p = confined(root, path)?;
            let snap = read(&p)?;
            let old = snap.text.clone().unwrap_or_default();
            let new = ini_set(&old, section, key, value.map(text_of).as_deref());
            write(&p, &snap, &new)
        }
        Target::Json { path, pointer } => {
            let p = confined(root, path)?;
            let snap = read(&p)?;
            let mut doc = match &snap.text {
                Some(t) => parse_json(&p, t)?,
                None => Value::Object(Default::default()),
            };
            json_set(&mut doc, pointer, value.cloned())
                .map_err(|why| format!("{}: {why}", p.display()))?;
            let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())? + "\n";
            write(&p, &snap, &text)
        }
        Target::File { path, mode, owner, group } => {
            let p = confined(root, path)?;
            let mut snap = read(&p)?;
            let Some(v) = value else {
                return dmfs::remove_file(&p).map(|_| ()).map_err(|e| e.to_string());
            };
            // A value is the content to write with the target's mode and owners; a file's
            // state as `get` read it (a restore) brings its own.
            let (content, mode, owner, group) = match v {
                Value::Object(o) => (
                    o.get("content").map(text_of).unwrap_or_default(),
                    o.get("mode").and_then(Value::as_str).map(str::to_string),
                    o.get("owner").and_then(Value::as_u64).map(|n| n as u32),
                    o.get("group").and_then(Value::as_u64).map(|n| n as u32),
                ),
                other => (text_of(other), mode.clone(), *owner, *group),
            };
            if let Some(m) = mode.as_deref().and_then(|m| u32::from_str_radix(m, 8).ok()) {
                snap.mode = m;
            }
            write(&p, &snap, &content)?;
            if owner.is_some() || group.is_some() {
                chown(&p, owner, group)?;
            }
            Ok(())
        }
        Target::Line { path, line } => {
            let p = confined(root, path)?;
            let snap = read(&p)?;
            let old = snap.text.clone().unwrap_or_default();
            let present = value.and_then(Value::as_bool).unwrap_or(false);
            let mut lines: Vec<&str> = old.lines().filter(|l| l.trim_end() != line).collect();
            if present {
                lines.push(line);
            }
            let mut new = lines.join("\n");
            if !new.is_empty() {
                new.push('\n');
            }
            write(&p, &snap, &new)
        }
        Target::Systemd { unit } => {
            set_enabled(root, unit, value.and_then(Value::as_bool).unwrap_or(false))
        }
        Target::Sysctl { key } => {
            let text = value.map(text_of);
            // The live value first: a drop-in is only written for a value the kernel took.
            if let Some(v) = &text {
                let live = confined(root, &target.path())?;
                std::fs::write(&live, format!("{v}\n"))
                    .map_err(|e| format!("{}: {e}", live.display()))?;
            }
            let dropin = confined(root, &format!("etc/sysctl.d/60-dm-{key}.conf"))?;
            let snap = read(&dropin)?;
            match &text {
                Some(v) => write(
                    &dropin,
                    &snap,
                    &format!("# Managed by dm (a configuration item)\n{key} = {v}\n"),
                ),
                None => dmfs::remove_file(&dropin).map(|_| ()).map_err(|e| e.to_string()),
            }
        }
    }
}

/// Removes the drop-in that keeps a kernel parameter across boots.
pub fn remove_sysctl_dropin(root: &Path, key: &str) -> Result<(), Failure> {
    let dropin = confined(root, &format!("etc/sysctl.d/60-dm-{key}.conf"))?;
    dmfs::remove_file(&dropin).map(|_| ()).map_err(|e| e.to_string())
}

/// A whole file as `get` reads it: content, mode (octal text), owner and group.
fn file_state(p: &Path, content: String) -> Value {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).ok();
    serde_json::json!({
        "content": content,
        "mode": m.as_ref().map(|m| format!("{:04o}", m.mode() & 0o7777)),
        "owner": m.as_ref().map(|m| m.uid()),
        "group": m.as_ref().map(|m| m.gid()),
    })
}

/// A value as the text a file holds.
pub fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(text_of).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn normalize_sysctl(t: &str) -> String {
    t.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn parse_json(path: &Path, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text).map_err(|e| format!("{} is not valid JSON: {e}", path.display()))
}

/// The value of `key` in `[section]` (the first, as readers take it).
pub fn ini_get(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_string();
        } else if current == section && !t.starts_with([';', '#']) {
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == key {
                    return Some(v.trim().to_string());
                }
            }
        }
    }
    None
}

/// `text` with `key` in `[section]` set to `value` (or removed), every other line kept.
pub fn ini_set(text: &str, section: &str, key: &str, value: Option<&str>) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<String> = Vec::with_capacity(lines.len() + 2);
    let mut current = String::new();
    let mut done = false;
    let mut section_end: Option<usize> = if section.is_empty() { Some(0) } else { None };
    for line in &lines {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = name.trim().to_string();
            out.push(line.to_string());
            if current == section {
                section_end = Some(out.len());
            }
            continue;
        }
        let is_key = current == section
            && !t.starts_with([';', '#'])
            && t.split_once('=').is_some_and(|(k, _)| k.trim() == key);
        if is_key && !done {
            // The first occurrence is the one readers take; later duplicates stay as they are.
            done = true;
            if let Some(v) = value {
                let (k, _) = line.split_once('=').unwrap_or((line, ""));
                let spaced = line.contains(" = ") || line.contains("= ");
                out.push(if spaced { format!("{k}= {v}") } else { format!("{k}={v}") });
            }
            continue;
        }
        out.push(line.to_string());
        if current == section && !t.is_empty() {
            section_end = Some(out.len());
        }
    }
    if let (Some(v), false) = (value, done) {
        match section_end {
            Some(at) => out.insert(at, format!("{key}={v}")),
            None => {
                if out.last().is_some_and(|l| !l.trim().is_empty()) {
                    out.push(String::new());
                }
                out.push(format!("[{section}]"));
                out.push(format!("{key}={v}"));
            }
        }
    }
    let mut s = out.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

/// Sets (or removes, with `None`) the value at `pointer`, making the objects on the way.
pub fn json_set(doc: &mut Value, pointer: &str, value: Option<Value>) -> Result<(), String> {
    if pointer.is_empty() {
        *doc = value.unwrap_or(Value::Null);
        return Ok(());
    }
    let parts: Vec<String> =
        pointer[1..].split('/').map(|p| p.replace("~1", "/").replace("~0", "~")).collect();
    let (last, path) = parts.split_last().ok_or("an empty pointer")?;
    let mut at = doc;
    for (i, part) in path.iter().enumerate() {
        let here = format!("/{}", parts[..=i].join("/"));
        at = match at {
            Value::Object(map) => {
                map.entry(part.clone()).or_insert_with(|| Value::Object(Default::default()))
            }
            Value::Array(list) => {
                let n: usize = part.parse().map_err(|_| format!("{here} is not an index"))?;
                list.get_mut(n).ok_or_else(|| format!("{here} is past the end of the list"))?
            }
            _ => return Err(format!("{here} is neither an object nor a list")),
        };
    }
    match (at, value) {
        (Value::Object(map), Some(v)) => {
            map.insert(last.clone(), v);
        }
        (Value::Object(map), None) => {
            map.remove(last);
        }
        (Value::Array(list), v) => {
            let n: usize = last.parse().map_err(|_| format!("{pointer} is not an index"))?;
            match v {
                Some(v) if n < list.len() => list[n] = v,
                Some(v) if n == list.len() => list.push(v),
                None if n < list.len() => {
                    list.remove(n);
                }
                _ => return Err(format!("{pointer} is past the end of the list")),
            }
        }
        _ => return Err(format!("{pointer}'s parent is neither an object nor a list")),
    }
    Ok(())
}

/// The `.wants` folders a unit is linked from: its `[Install] WantedBy=`, else
/// `multi-user.target`.
fn wanted_by(root: &Path, unit: &str) -> Vec<String> {
    let text = ["etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .find_map(|d| {
            let p = confined(root, &format!("{d}/{unit}")).ok()?;
            dmfs::read_optional(&p, 1 << 20).ok()?.map(|b| String::from_utf8_lossy(&b).into_owned())
        })
        .unwrap_or_default();
    let targets: Vec<String> = ini_get(&text, "Install", "WantedBy")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    if targets.is_empty() { vec!["multi-user.target".into()] } else { targets }
}

/// The enablement links of `unit` that exist.
fn enabled_links(root: &Path, unit: &str) -> Result<Vec<PathBuf>, Failure> {
    let mut found = Vec::new();
    for target in wanted_by(root, unit) {
        let dir = confined(root, &format!("etc/systemd/system/{target}.wants"))?;
        let link = dir.join(unit);
        if std::fs::symlink_metadata(&link).is_ok() {
            found.push(link);
        }
    }
    Ok(found)
}

fn set_enabled(root: &Path, unit: &str, enable: bool) -> Result<(), Failure> {
    if !enable {
        for link in enabled_links(root, unit)? {
            dmfs::remove_file(&link).map_err(|e| e.to_string())?;
        }
        return Ok(());
    }
    let file = ["etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .map(|d| format!("/{d}/{unit}"))
        .find(|abs| std::fs::symlink_metadata(root.join(&abs[1..])).is_ok_and(|m| m.is_file()))
        .ok_or_else(|| format!("unit {unit} is not installed under {}", root.display()))?;
    for target in wanted_by(root, unit) {
        let dir = confined(root, &format!("etc/systemd/system/{target}.wants"))?;
        dmfs::create_dir_all(&dir, dmfs::MODE_DIR).map_err(|e| e.to_string())?;
        dmfs::symlink_replace(Path::new(&file), &dir.join(unit)).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn ini_edits_keep_everything_else() {
        let text = "; managed by hand\n[a]\nx = 1\n# note\ny=2\n\n[b]\nz=3\n";
        assert_eq!(ini_get(text, "a", "x").as_deref(), Some("1"));
        assert_eq!(
            ini_set(text, "a", "x", Some("9")),
            "; managed by hand\n[a]\nx = 9\n# note\ny=2\n\n[b]\nz=3\n"
        );
        assert_eq!(
            ini_set(text, "a", "new", Some("v")),
            "; managed by hand\n[a]\nx = 1\n# note\ny=2\nnew=v\n\n[b]\nz=3\n"
        );
        assert_eq!(ini_set(text, "c", "k", Some("v")), format!("{text}\n[c]\nk=v\n"));
        assert_eq!(
            ini_set(text, "a", "y", None),
            "; managed by hand\n[a]\nx = 1\n# note\n\n[b]\nz=3\n"
        );
        assert_eq!(ini_set("", "", "k", Some("v")), "k=v\n");
        assert_eq!(ini_set("k=1\n[s]\nk=2\n", "", "k", Some("v")), "k=v\n[s]\nk=2\n");
    }

    #[test]
    fn json_edits_keep_the_rest_in_order() {
        let mut doc: Value = serde_json::from_str(r#"{"z":1,"a":{"b":[1,2]},"m":true}"#).unwrap();
        json_set(&mut doc, "/a/c/d", Some(Value::from(5))).unwrap();
        json_set(&mut doc, "/a/b/1", Some(Value::from(7))).unwrap();
        assert_eq!(doc.to_string(), r#"{"z":1,"a":{"b":[1,7],"c":{"d":5}},"m":true}"#);
        json_set(&mut doc, "/m", None).unwrap();
        assert_eq!(doc.to_string(), r#"{"z":1,"a":{"b":[1,7],"c":{"d":5}}}"#);
        assert!(json_set(&mut doc, "/z/x", Some(Value::from(1))).unwrap_err().contains("neither"));
        assert!(
            json_set(&mut doc, "/a/b/9", Some(Value::from(1)))
                .unwrap_err()
                .contains("past the end")
        );
    }

    #[test]
    fn links_on_the_way_are_never_followed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("etc2")).unwrap();
        assert!(confined(dir.path(), "etc/hosts").is_ok());
        assert!(confined(dir.path(), "etc2/hosts").unwrap_err().contains("symbolic link"));
        assert!(confined(dir.path(), "../x").is_err());
    }

    #[test]
    fn a_file_that_changes_while_it_is_updated_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("app.ini");
        std::fs::write(&p, "[a]\nx=1\n").unwrap();
        let snap = read(&p).unwrap();
        std::fs::write(&p, "[a]\nx=2\ny=3\n").unwrap();
        let e = write(&p, &snap, "[a]\nx=9\n").unwrap_err();
        assert!(e.contains("changed while it was being updated"), "{e}");
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[a]\nx=2\ny=3\n");
    }

    fn token() -> impl Strategy<Value = String> {
        "[A-Za-z][A-Za-z0-9_.]{0,8}"
    }

    proptest! {
        #[test]
        fn ini_apply_then_read_gives_the_value_and_twice_changes_nothing(
            lines in proptest::collection::vec(prop_oneof![
                token().prop_map(|s| format!("[{s}]")),
                (token(), token()).prop_map(|(k, v)| format!("{k}={v}")),
                (token(), token()).prop_map(|(k, v)| format!("{k} = {v}")),
                token().prop_map(|s| format!("; {s}")),
                Just(String::new()),
            ], 0..20),
            section in prop_oneof![Just(String::new()), token()],
            key in token(),
            value in token(),
        ) {
            let text = lines.join("\n");
            let once = ini_set(&text, &section, &key, Some(&value));
            prop_assert_eq!(ini_get(&once, &section, &key), Some(value.clone()));
            prop_assert_eq!(ini_set(&once, &section, &key, Some(&value)), once.clone());
            // Other keys keep their values.
            for l in &lines {
                if let Some((k, _)) = l.split_once('=') {
                    let k = k.trim();
                    if k != key {
                        for s in ["", section.as_str()] {
                            if s != section { continue; }
                            prop_assert_eq!(ini_get(&once, s, k), ini_get(&text, s, k));
                        }
                    }
                }
            }
        }

        #[test]
        fn json_apply_then_read_gives_the_value_and_twice_changes_nothing(
            doc in proptest::collection::btree_map(token(), any::<i32>(), 0..8),
            path in proptest::collection::vec(token(), 1..4),
            value in any::<i64>(),
        ) {
            let mut v = serde_json::to_value(&doc).unwrap();
            let pointer = format!("/{}", path.join("/"));
            let before = v.clone();
            match json_set(&mut v, &pointer, Some(Value::from(value))) {
                Ok(()) => {
                    prop_assert_eq!(v.pointer(&pointer), Some(&Value::from(value)));
                    let once = v.clone();
                    json_set(&mut v, &pointer, Some(Value::from(value))).unwrap();
                    prop_assert_eq!(&v, &once);
                    for (k, n) in &doc {
                        if k != &path[0] {
                            prop_assert_eq!(v.get(k), Some(&Value::from(*n)));
                        }
                    }
                }
                // Only a path through a number can fail, and then nothing changed.
                Err(_) => prop_assert_eq!(&v, &before),
            }
        }
    }
}
