//! Debian's formats, as far as software updates need them: version comparison by dpkg's
//! rules (epochs, `~`, revisions), the deb822 paragraphs of `Packages` indices, `Release`
//! files and dpkg's status database, and the installed packages that database lists.
//!
//! Everything here reads untrusted text: lines are capped, a paragraph has a bounded number of
//! fields kept, and nothing panics on any input.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::BufRead;

/// The longest line read; longer lines are skipped (long descriptions, not fields we read).
pub const MAX_LINE: usize = 64 * 1024;

/// Compares two Debian versions as `dpkg --compare-versions` does: the epoch as a number, then
/// the upstream version and the revision by dpkg's ordering (`~` sorts before everything, even
/// the end; letters before other characters; digit runs as numbers).
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_version(a);
    let (eb, ub, rb) = split_version(b);
    ea.cmp(&eb).then_with(|| verrevcmp(ua, ub)).then_with(|| verrevcmp(ra, rb))
}

/// Whether `v` is a version dpkg accepts: an optional numeric epoch, an upstream part that
/// starts with a digit, a revision after the last `-`, and only the characters Debian allows.
pub fn is_valid_version(v: &str) -> bool {
    let (epoch, upstream) = match v.split_once(':') {
        Some((e, rest)) => (Some(e), rest),
        None => (None, v),
    };
    if let Some(e) = epoch {
        if e.is_empty() || e.len() > 9 || !e.bytes().all(|c| c.is_ascii_digit()) {
            return false;
        }
    }
    let (up, rev) = match upstream.rsplit_once('-') {
        Some((u, r)) => (u, Some(r)),
        None => (upstream, None),
    };
    let allowed = |c: u8| c.is_ascii_alphanumeric() || b".+~-:".contains(&c);
    !up.is_empty()
        && up.as_bytes()[0].is_ascii_digit()
        && up.bytes().all(allowed)
        && rev.is_none_or(|r| {
            !r.is_empty() && r.bytes().all(|c| allowed(c) && c != b'-' && c != b':')
        })
}

/// (epoch, upstream, revision); a missing or unreadable epoch is 0.
fn split_version(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, rest)) => (e.parse().unwrap_or(0), rest),
        None => (0, v),
    };
    let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
    (epoch, upstream, revision)
}

/// dpkg's character order: `~` first, then the end of the string and digits, then letters,
/// then everything else.
fn order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating runs of non-digits (by [`order`]) and digits (as numbers).
fn verrevcmp(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |s: &[u8], k: usize| s.get(k).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (ac, bc) = (order(a.get(i).copied()), order(b.get(j).copied()));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// A reader of deb822 paragraphs (`Packages`, `Release`, dpkg's `status`) that keeps only the
/// fields it was asked for, each the text on the field's first line.
pub struct Paragraphs<R> {
    reader: R,
    fields: &'static [&'static str],
    line: Vec<u8>,
    /// The line number read last, for messages.
    pub line_number: u64,
}

impl<R: BufRead> Paragraphs<R> {
    /// Reads `fields` (their names as written, compared without case) from `reader`.
    pub fn new(reader: R, fields: &'static [&'static str]) -> Paragraphs<R> {
        Paragraphs { reader, fields, line: Vec::with_capacity(256), line_number: 0 }
    }

    /// The next paragraph's values, in the order of the fields asked for; `None` at the end.
    /// A paragraph without any of the fields is still a paragraph (all `None`).
    pub fn next_paragraph(&mut self) -> std::io::Result<Option<Vec<Option<String>>>> {
        let mut values: Vec<Option<String>> = vec![None; self.fields.len()];
        let mut any_line = false;
        loop {
            self.line.clear();
            let n = std::io::Read::take(&mut self.reader, MAX_LINE as u64 + 1)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 {
                return Ok(any_line.then_some(values));
            }
            self.line_number += 1;
            if self.line.len() > MAX_LINE && self.line.last() != Some(&b'\n') {
                self.skip_rest_of_line()?;
                any_line = true;
                continue;
            }
            let text = trim_eol(&self.line);
            if text.iter().all(|c| c.is_ascii_whitespace()) {
                if any_line {
                    return Ok(Some(values));
                }
                continue;
            }
            any_line = true;
            if text[0] == b' ' || text[0] == b'\t' || text[0] == b'#' {
                continue;
            }
            let Some(colon) = text.iter().position(|&c| c == b':') else { continue };
            let name = &text[..colon];
            if let Some(k) =
                self.fields.iter().position(|f| f.as_bytes().eq_ignore_ascii_case(name))
            {
                let value = String::from_utf8_lossy(&text[colon + 1..]).trim().to_string();
                values[k] = Some(value);
            }
        }
    }

    fn skip_rest_of_line(&mut self) -> std::io::Result<()> {
        loop {
            self.line.clear();
            let n = std::io::Read::take(&mut self.reader, MAX_LINE as u64)
                .read_until(b'\n', &mut self.line)?;
            if n == 0 || self.line.last() == Some(&b'\n') {
                return Ok(());
            }
        }
    }
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b'\n' | b'\r') {
        end -= 1;
    }
    &line[..end]
}

/// A package as dpkg's status database lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledPackage {
    /// The version installed.
    pub version: String,
    /// dpkg's state word (`installed`, `half-configured`, `unpacked`, …).
    pub state: String,
}

/// The packages dpkg's status database lists as present (installed, or left half-way), keyed
/// by (name, architecture) with `all` counted as `native`: a package may move between `all`
/// and the native architecture from one version to the next. Packages removed with their
/// configuration kept (`config-files`) and `not-installed` are absent.
pub fn installed_packages<R: BufRead>(
    status: R,
    native: &str,
) -> std::io::Result<HashMap<(String, String), InstalledPackage>> {
    let mut p = Paragraphs::new(status, &["Package", "Status", "Version", "Architecture"]);
    let mut out = HashMap::new();
    while let Some(v) = p.next_paragraph()? {
        let [Some(name), Some(status), Some(version), arch] =
            <[Option<String>; 4]>::try_from(v).unwrap_or([None, None, None, None])
        else {
            continue;
        };
        let state = status.split_whitespace().nth(2).unwrap_or("").to_string();
        if matches!(state.as_str(), "" | "not-installed" | "config-files") {
            continue;
        }
        let arch = arch.unwrap_or_default();
        out.insert(
            (name, arch_key(&arch, native).to_string()),
            InstalledPackage { version, state },
        );
    }
    Ok(out)
}

/// The architecture a package is matched under: `all` as the native one.
pub fn arch_key<'a>(arch: &'a str, native: &'a str) -> &'a str {
    if arch == "all" { native } else { arch }
}

/// dpkg's name for the architecture this program was built for.
pub fn native_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "arm64",
        "arm" => "armhf",
        "x86_64" => "amd64",
        "x86" => "i386",
        "riscv64" => "riscv64",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(a: &str, b: &str) -> Ordering {
        compare_versions(a, b)
    }

    #[test]
    fn versions_follow_dpkg_rules() {
        assert_eq!(cmp("1.0", "1.0"), Ordering::Equal);
        assert_eq!(cmp("1.0~rc1", "1.0"), Ordering::Less);
        assert_eq!(cmp("1.0", "1.0+b1"), Ordering::Less);
        assert_eq!(cmp("1:0.1", "2.0"), Ordering::Greater);
        assert_eq!(cmp("1.0-1", "1.0-1~bpo1"), Ordering::Greater);
        assert_eq!(cmp("1.10", "1.9"), Ordering::Greater);
        assert_eq!(cmp("1.0", "1.0-0"), Ordering::Equal);
        assert_eq!(cmp("1.0a", "1.0+"), Ordering::Less);
        assert_eq!(cmp("001", "1"), Ordering::Equal);
        assert_eq!(cmp("~~", "~"), Ordering::Less);
        assert_eq!(cmp("", "~"), Ordering::Greater);
    }

    /// Real version pairs with dpkg's own verdict (`dpkg --compare-versions`), taken from
    /// Debian bookworm's archive and the corner cases of dpkg's test suite
    /// (`scripts/debian-versions.sh` regenerates the file).
    #[test]
    fn versions_agree_with_dpkg_on_a_corpus() {
        let corpus = include_str!("../tests/data/debian-versions.txt");
        let mut n = 0;
        for line in corpus.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let mut w = line.split_whitespace();
            let (Some(a), Some(op), Some(b)) = (w.next(), w.next(), w.next()) else {
                panic!("bad corpus line {line}")
            };
            let want = match op {
                "<<" => Ordering::Less,
                "=" => Ordering::Equal,
                ">>" => Ordering::Greater,
                _ => panic!("bad operator in {line}"),
            };
            assert_eq!(cmp(a, b), want, "{a} {op} {b}");
            assert_eq!(cmp(b, a), want.reverse(), "{b} against {a}");
            n += 1;
        }
        assert!(n > 1000, "only {n} pairs");
    }

    #[test]
    fn validity() {
        assert!(is_valid_version("1:2.36-9+deb12u4"));
        assert!(is_valid_version("1.0~rc1"));
        assert!(!is_valid_version("a1.0"));
        assert!(!is_valid_version("x:1.0"));
        assert!(!is_valid_version("1.0-"));
        assert!(!is_valid_version(""));
        assert!(!is_valid_version("1.0 2"));
    }

    #[test]
    fn the_status_database_is_read_per_paragraph() {
        let status = b"Package: a\nStatus: install ok installed\nVersion: 1.0\nArchitecture: all\nDescription: x\n long\n\n\
Package: b\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: arm64\n\n\
Package: c\r\nStatus: install ok half-configured\r\nArchitecture: arm64\r\nVersion: 3\r\n\r\n\
Package: d\nVersion: 4\n";
        let got = installed_packages(&status[..], "arm64").unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[&("a".into(), "arm64".into())].version, "1.0");
        assert_eq!(got[&("c".into(), "arm64".into())].state, "half-configured");
    }

    #[test]
    fn an_overlong_line_is_skipped_not_fatal() {
        let mut text = b"Package: a\nDescription: ".to_vec();
        text.extend(std::iter::repeat_n(b'x', MAX_LINE * 3));
        text.extend(b"\nVersion: 1\n\nPackage: b\nVersion: 2\n");
        let mut p = Paragraphs::new(&text[..], &["Package", "Version"]);
        assert_eq!(p.next_paragraph().unwrap().unwrap(), vec![Some("a".into()), Some("1".into())]);
        assert_eq!(p.next_paragraph().unwrap().unwrap(), vec![Some("b".into()), Some("2".into())]);
        assert_eq!(p.next_paragraph().unwrap(), None);
    }

    proptest::proptest! {
        #[test]
        fn comparison_is_a_total_order(a in "[0-9a-z.+~:-]{0,12}", b in "[0-9a-z.+~:-]{0,12}", c in "[0-9a-z.+~:-]{0,12}") {
            proptest::prop_assert_eq!(cmp(&a, &b), cmp(&b, &a).reverse());
            if cmp(&a, &b) != Ordering::Greater && cmp(&b, &c) != Ordering::Greater {
                proptest::prop_assert_ne!(cmp(&a, &c), Ordering::Greater);
            }
        }
    }
}
