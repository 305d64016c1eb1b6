//! The programs a package's publisher signs: what a device may run from the package, exactly.
//!
//! A program is a name, a command as an argument vector (no shell unless the publisher writes
//! one: `["/bin/sh", "-c", "…"]`), a maximum run time, the platforms and device class it is
//! for, and environment additions. They live in the signed manifest (format
//! `dm-manifest/2`), so a management point can only choose which signed program runs, never
//! what it runs. Documented in `docs/deployment-folder.md`.

use std::collections::{BTreeMap, BTreeSet};

use crate::files::{FileEntry, check_relative_path};
use crate::platform::Platform;
use crate::vocab::DeviceClass;

/// The longest maximum run time a publisher may sign: a week.
pub const MAX_RUN_TIME: u64 = 7 * 86_400;
/// The most programs a package may carry.
pub const MAX_PROGRAMS: usize = 64;
/// The most arguments of a command.
pub const MAX_ARGS: usize = 256;
/// The longest argument or environment value.
pub const MAX_ARG_BYTES: usize = 4096;

/// Environment variables the agent sets itself; a program cannot replace them.
pub const RESERVED_ENV: [&str; 3] = ["PATH", "HOME", "LANG"];

/// One program of a package, as its publisher signed it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedProgram {
    /// Its name, which advertisements use: 1 to 64 letters, digits, `.`, `_` or `-`.
    pub name: String,
    /// What runs: a file of the package (relative path, listed as executable) or an absolute
    /// path on the device, then its arguments.
    pub command: Vec<String>,
    /// Seconds it may run before it is stopped (1 to a week).
    pub max_run_time: u64,
    /// Platforms it runs on; empty means any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<Platform>,
    /// The class of device it is for.
    #[serde(default = "mobile")]
    pub device_class: DeviceClass,
    /// Variables added to its environment.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub environment: BTreeMap<String, String>,
    /// The program run when the server names none (a DDI server that knows nothing of this
    /// project's metadata). At most one per package; written only when true, so packages
    /// without one read the same in older clients.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
    /// The package's health check: run after another of its programs succeeded, and again at
    /// the end of a rollout's soak time; failing, it fails the install (docs/rollouts.md). At
    /// most one per package, never the default; written only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub health_check: bool,
}

fn mobile() -> DeviceClass {
    DeviceClass::Mobile
}

/// Whether `s` is a program name.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl SignedProgram {
    /// Checks one program against the package's files: what is wrong, for the manifest's
    /// error.
    pub fn check(&self, files: &[FileEntry]) -> Result<(), String> {
        let name = &self.name;
        if !valid_name(name) {
            return Err(format!("program name {name:?}: 1 to 64 letters, digits, '.', '_' or '-'"));
        }
        let Some(program) = self.command.first() else {
            return Err(format!("program {name}: the command is empty"));
        };
        if self.command.len() > MAX_ARGS {
            return Err(format!("program {name}: more than {MAX_ARGS} arguments"));
        }
        if self.command.iter().any(|a| a.len() > MAX_ARG_BYTES || a.contains('\0')) {
            return Err(format!(
                "program {name}: an argument is longer than {MAX_ARG_BYTES} bytes or holds NUL"
            ));
        }
        if !program.starts_with('/') {
            check_relative_path(program).map_err(|e| format!("program {name}: {e}"))?;
            if !files.iter().any(|f| f.path == *program && f.executable) {
                return Err(format!(
                    "program {name}: {program} is not an executable file of the package"
                ));
            }
        }
        if !(1..=MAX_RUN_TIME).contains(&self.max_run_time) {
            return Err(format!(
                "program {name}: max_run_time must be 1 to {MAX_RUN_TIME} seconds"
            ));
        }
        for (k, v) in &self.environment {
            let shaped = !k.is_empty()
                && k.len() <= 128
                && k.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                && !k.starts_with(|c: char| c.is_ascii_digit());
            if !shaped || k.starts_with("DM_") || RESERVED_ENV.contains(&k.as_str()) {
                return Err(format!(
                    "program {name}: environment variable {k:?} must be A-Z, 0-9 and _, and not DM_*, PATH, HOME or LANG"
                ));
            }
            if v.len() > MAX_ARG_BYTES || v.contains('\0') {
                return Err(format!("program {name}: the value of {k} is too long or holds NUL"));
            }
        }
        Ok(())
    }

    /// The command for people and logs: `./install.sh --quiet`.
    pub fn display(&self) -> String {
        self.command
            .iter()
            .map(|a| {
                if !a.is_empty()
                    && a.bytes().all(|b| b.is_ascii_graphic() && !b"'\"\\$`".contains(&b))
                {
                    a.clone()
                } else {
                    format!("'{}'", a.replace('\'', "'\\''"))
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Checks every program of a package: each valid, names unique, at most [`MAX_PROGRAMS`].
pub fn check_all(programs: &[SignedProgram], files: &[FileEntry]) -> Result<(), String> {
    if programs.len() > MAX_PROGRAMS {
        return Err(format!("{} programs; at most {MAX_PROGRAMS}", programs.len()));
    }
    let mut names = BTreeSet::new();
    for p in programs {
        p.check(files)?;
        if !names.insert(p.name.as_str()) {
            return Err(format!("program {} is listed twice", p.name));
        }
    }
    let defaults: Vec<&str> =
        programs.iter().filter(|p| p.default).map(|p| p.name.as_str()).collect();
    if defaults.len() > 1 {
        return Err(format!(
            "programs {} are each marked default; at most one may be",
            defaults.join(", ")
        ));
    }
    let checks: Vec<&str> =
        programs.iter().filter(|p| p.health_check).map(|p| p.name.as_str()).collect();
    if checks.len() > 1 {
        return Err(format!(
            "programs {} are each marked the health check; at most one may be",
            checks.join(", ")
        ));
    }
    if let Some(p) = programs.iter().find(|p| p.health_check && p.default) {
        return Err(format!("program {} is the health check; it cannot be the default", p.name));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, executable: bool) -> FileEntry {
        FileEntry { path: path.into(), size: 1, sha256: "a".repeat(64), executable }
    }

    fn program(command: &[&str]) -> SignedProgram {
        SignedProgram {
            name: "install".into(),
            command: command.iter().map(|s| s.to_string()).collect(),
            max_run_time: 600,
            platforms: vec![],
            device_class: DeviceClass::Mobile,
            environment: BTreeMap::new(),
            default: false,
            health_check: false,
        }
    }

    #[test]
    fn commands_run_signed_files_or_absolute_programs() {
        let files = [file("install.sh", true), file("data.txt", false)];
        program(&["./install.sh"]).check(&files).unwrap_err();
        program(&["install.sh", "--quiet"]).check(&files).unwrap();
        program(&["/bin/sh", "-c", "echo hi"]).check(&files).unwrap();
        let e = program(&["data.txt"]).check(&files).unwrap_err();
        assert!(e.contains("not an executable file"), "{e}");
        let e = program(&["missing.sh"]).check(&files).unwrap_err();
        assert!(e.contains("not an executable file"), "{e}");
        let e = program(&["../../bin/sh"]).check(&files).unwrap_err();
        assert!(e.contains("'..'"), "{e}");
        assert!(program(&[]).check(&files).unwrap_err().contains("empty"));
        assert!(program(&["install.sh", "a\0b"]).check(&files).is_err());
    }

    #[test]
    fn names_run_times_and_environment_are_checked() {
        let files = [file("run", true)];
        let mut p = program(&["run"]);
        p.name = "bad name".into();
        assert!(p.check(&files).is_err());
        let mut p = program(&["run"]);
        p.max_run_time = 0;
        assert!(p.check(&files).is_err());
        p.max_run_time = MAX_RUN_TIME + 1;
        assert!(p.check(&files).is_err());
        for bad in ["DM_ACTION_ID", "PATH", "lower", "1ABC", ""] {
            let mut p = program(&["run"]);
            p.environment.insert(bad.into(), "x".into());
            assert!(p.check(&files).is_err(), "{bad}");
        }
        let mut p = program(&["run"]);
        p.environment.insert("LOG_LEVEL".into(), "2".into());
        p.check(&files).unwrap();
        let twice = [program(&["run"]), program(&["run"])];
        assert!(check_all(&twice, &files).unwrap_err().contains("twice"));
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let p = program(&["/bin/sh", "-c", "echo it's done", "x"]);
        assert_eq!(p.display(), "/bin/sh -c 'echo it'\\''s done' x");
    }

    #[test]
    fn a_package_has_at_most_one_health_check_and_it_is_never_the_default() {
        let files = [file("run", true)];
        let named = |n: &str, check: bool| SignedProgram {
            name: n.into(),
            health_check: check,
            ..program(&["run"])
        };
        check_all(&[named("install", false), named("check", true)], &files).unwrap();
        let two = [named("check", true), named("check2", true)];
        assert!(check_all(&two, &files).unwrap_err().contains("at most one"));
        let mut both = named("check", true);
        both.default = true;
        assert!(check_all(&[both], &files).unwrap_err().contains("cannot be the default"));
    }
}
