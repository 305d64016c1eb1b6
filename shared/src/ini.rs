//! The INI reader behind every INI file on a device: `DMCommonInstaller.ini`,
//! `ClientSettings.ini` and the security policy.
//!
//! Files come from memory cards and people, so nothing is assumed: the size is capped, the
//! encoding is detected (UTF-8 with or without a byte-order mark, UTF-16 with one) and binary
//! content refused, and every line's shape is checked before `rust-ini` sees it, because the
//! parser silently joins a line without `=` to the next key and reads an unclosed `[` to the
//! end of the file. Errors name the file and the line. This module depends on nothing else in
//! the crate, so the crate's error type can carry [`SettingsError`] without an import loop.

use std::fmt;
use std::path::{Path, PathBuf};

/// The largest INI file accepted. Real files are a few hundred bytes.
pub const MAX_INI_BYTES: u64 = 1024 * 1024;

/// What a settings file is wrong about: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SettingsError {
    /// The file.
    pub file: PathBuf,
    /// The line, for syntax errors.
    pub line: Option<usize>,
    /// The section, when the problem is in one.
    pub section: Option<String>,
    /// The key, when the problem is one key's value.
    pub key: Option<String>,
    /// What is wrong and what was expected.
    pub problem: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, " line {line}")?;
        }
        if let Some(s) = &self.section {
            write!(f, " [{s}]")?;
        }
        if let Some(k) = &self.key {
            write!(f, " {k}")?;
        }
        write!(f, ": {}", self.problem)
    }
}

/// Reads INI text the way settings files are read (encodings, line checks, no escapes), for
/// every INI file on the device: settings and the security policy.
pub fn parse_ini_document(file: &Path, bytes: &[u8]) -> Result<::ini::Ini, SettingsError> {
    let err = |line: Option<usize>, problem: String| SettingsError {
        file: file.to_path_buf(),
        line,
        section: None,
        key: None,
        problem,
    };
    if bytes.len() as u64 > MAX_INI_BYTES {
        return Err(err(
            None,
            format!(
                "the file is {} bytes; a settings file is at most {MAX_INI_BYTES} bytes",
                bytes.len()
            ),
        ));
    }
    let text = decode_text(bytes).map_err(|p| err(None, p))?;
    check_lines(&text).map_err(|(line, p)| err(Some(line), p))?;
    let opts =
        ::ini::ParseOption { enabled_quote: true, enabled_escape: false, ..Default::default() };
    ::ini::Ini::load_from_str_opt(&text, opts)
        .map_err(|e| err(Some(e.line), format!("syntax error at column {}: {}", e.col, e.msg)))
}

/// Checks every line's shape before the INI parser sees it: the parser silently joins a line
/// without `=` to the next key, and reads an unclosed `[` to the end of the file. Each line
/// must read on its own, as it shows: the parser also reads on past the line's end after a
/// comment that does not start the line, a `]` or `\\` in a section name, a `:` or `\\` in
/// a key, a quote left open or a backslash at the end of a value, and ends a line at a
/// carriage return that no line feed follows.
fn check_lines(text: &str) -> Result<(), (usize, String)> {
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let n = i + 1;
        if raw.contains('\r') {
            return Err((n, "a carriage return without a line feed".into()));
        }
        if line.is_empty() {
            continue;
        }
        if line.starts_with(';') || line.starts_with('#') {
            if raw.trim_start().len() != raw.len() {
                return Err((n, "a comment starts at the beginning of its line".into()));
            }
            continue;
        }
        if line.starts_with('[') {
            let name = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')).unwrap_or("");
            if name.is_empty() || name.contains(['[', ']', '\\']) {
                return Err((
                    n,
                    "a section header must be [Name] on one line, without '[', ']' or '\\' in the name"
                        .into(),
                ));
            }
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            // The line itself is never quoted: a settings file may be a link to a secret.
            return Err((n, "expected Key=Value, [Section] or a ; comment".into()));
        };
        if key.trim().is_empty() {
            return Err((n, "a value has no key before its '='".into()));
        }
        if key.contains([':', '\\']) {
            return Err((n, "a key holds no ':' or '\\'".into()));
        }
        check_value(value.trim()).map_err(|p| (n, format!("the value of {} {p}", key.trim())))?;
    }
    Ok(())
}

/// Checks that a value ends on its line as the INI parser reads it: a quote at the start (or
/// right after a closing quote) opens a part that runs to the next quote a backslash does not
/// escape, across lines; elsewhere a backslash escapes the next character, and one left at
/// the end joins the next line to the value.
fn check_value(value: &str) -> Result<(), &'static str> {
    let mut rest = value;
    while let Some(quote) = rest.chars().next().filter(|c| matches!(c, '"' | '\'')) {
        let mut chars = rest.char_indices().skip(1);
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            if c == '\\' {
                chars.next();
            } else if c == quote {
                end = Some(i + 1);
                break;
            }
        }
        rest = &rest[end.ok_or("opens a quote it does not close")?..];
    }
    if (rest.len() - rest.trim_end_matches('\\').len()) % 2 == 1 {
        return Err("ends with a backslash, which would join the next line to it");
    }
    Ok(())
}

/// Decodes a settings file's bytes as text: UTF-8 with or without BOM, or UTF-16 with a BOM.
/// Binary content is refused with the offset of the first offending byte.
fn decode_text(bytes: &[u8]) -> Result<String, String> {
    let utf16 = |be: bool| -> Result<String, String> {
        let body = &bytes[2..];
        if body.len() % 2 != 0 {
            return Err(
                "the file starts with a UTF-16 byte-order mark but has an odd number of bytes"
                    .into(),
            );
        }
        let units: Vec<u16> = body
            .chunks_exact(2)
            .map(|c| {
                if be { u16::from_be_bytes([c[0], c[1]]) } else { u16::from_le_bytes([c[0], c[1]]) }
            })
            .collect();
        String::from_utf16(&units)
            .map_err(|_| "the file claims to be UTF-16 but is not valid UTF-16".to_string())
    };
    let text = match bytes {
        [0xFF, 0xFE, ..] => utf16(false)?,
        [0xFE, 0xFF, ..] => utf16(true)?,
        [0xEF, 0xBB, 0xBF, rest @ ..] => std::str::from_utf8(rest)
            .map_err(|e| format!("not a text file: invalid UTF-8 at byte {}", e.valid_up_to() + 3))?
            .to_string(),
        _ => std::str::from_utf8(bytes)
            .map_err(|e| format!("not a text file: invalid UTF-8 at byte {}", e.valid_up_to()))?
            .to_string(),
    };
    if let Some(pos) = text.find(|c: char| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        let line = text[..pos].matches('\n').count() + 1;
        return Err(format!("not a text file: control character at line {line}"));
    }
    Ok(text)
}
