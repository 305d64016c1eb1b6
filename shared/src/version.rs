//! Four-part client versions (`1.2.0.345`) with total ordering.
//!
//! Deployment manifests, install folders and inventory all carry a [`ClientVersion`]; setup
//! compares the installed one with the staged one to choose install, upgrade, reconfigure or no
//! action, and nothing that arrives over the wire may move a device to an older version.

use std::fmt;
use std::str::FromStr;

/// A client version: major.minor.build.revision, compared part by part numerically.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClientVersion([u32; 4]);

/// Why a string is not a client version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{input:?} is not a client version (major.minor.build.revision, such as 1.2.0.345): {reason}"
)]
pub struct VersionError {
    /// The text that failed to parse (truncated to 64 characters).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl ClientVersion {
    /// Builds a version from its four parts.
    pub const fn new(major: u32, minor: u32, build: u32, revision: u32) -> Self {
        ClientVersion([major, minor, build, revision])
    }

    /// The four parts, most significant first.
    pub fn parts(&self) -> [u32; 4] {
        self.0
    }
}

impl FromStr for ClientVersion {
    type Err = VersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |reason: String| VersionError { input: s.chars().take(64).collect(), reason };
        let text = s.trim();
        if text.is_empty() {
            return Err(fail("it is empty".into()));
        }
        let pieces: Vec<&str> = text.split('.').collect();
        if pieces.len() != 4 {
            return Err(fail(format!("it has {} parts, a version has exactly 4", pieces.len())));
        }
        let mut parts = [0u32; 4];
        for (i, (slot, piece)) in parts.iter_mut().zip(&pieces).enumerate() {
            const NAMES: [&str; 4] = ["major", "minor", "build", "revision"];
            if piece.is_empty() {
                return Err(fail(format!("the {} part is empty", NAMES[i])));
            }
            if !piece.bytes().all(|b| b.is_ascii_digit()) {
                return Err(fail(format!("the {} part {piece:?} is not a number", NAMES[i])));
            }
            *slot = piece.parse().map_err(|_| {
                fail(format!("the {} part {piece} is larger than {}", NAMES[i], u32::MAX))
            })?;
        }
        Ok(ClientVersion(parts))
    }
}

impl fmt::Display for ClientVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d] = self.0;
        write!(f, "{a}.{b}.{c}.{d}")
    }
}

impl fmt::Debug for ClientVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientVersion({self})")
    }
}

impl serde::Serialize for ClientVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ClientVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &str) -> ClientVersion {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_displays() {
        assert_eq!(v("1.2.0.345"), ClientVersion::new(1, 2, 0, 345));
        assert_eq!(v(" 1.2.0.345\n").to_string(), "1.2.0.345");
        assert_eq!(v("01.002.0.0").to_string(), "1.2.0.0");
    }

    #[test]
    fn orders_numerically_not_lexically() {
        assert!(v("1.2.0.345") < v("1.10.0.0"));
        assert!(v("1.2.0.9") < v("1.2.0.10"));
        assert!(v("2.0.0.0") > v("1.99.99.99"));
        assert_eq!(v("1.0.0.0").cmp(&v("1.0.0.0")), std::cmp::Ordering::Equal);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let cases = [
            ("", "empty"),
            ("1.2.3", "3 parts"),
            ("1.2.3.4.5", "5 parts"),
            ("1..3.4", "minor part is empty"),
            ("1.2.x.4", "build part \"x\" is not a number"),
            ("1.2.3.-4", "not a number"),
            ("1.2.3.+4", "not a number"),
            ("1.2.3.99999999999", "larger than 4294967295"),
        ];
        for (input, want) in cases {
            let err = input.parse::<ClientVersion>().unwrap_err().to_string();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(err.contains("major.minor.build.revision"), "{err}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let json = serde_json::to_string(&v("1.2.0.345")).unwrap();
        assert_eq!(json, "\"1.2.0.345\"");
        assert_eq!(serde_json::from_str::<ClientVersion>(&json).unwrap(), v("1.2.0.345"));
        assert!(serde_json::from_str::<ClientVersion>("\"1.2\"").is_err());
    }

    proptest! {
        #[test]
        fn never_panics_on_any_text(s in "\\PC{0,40}") {
            let _ = s.parse::<ClientVersion>();
        }

        #[test]
        fn display_parse_round_trip(a: u32, b: u32, c: u32, d: u32) {
            let ver = ClientVersion::new(a, b, c, d);
            prop_assert_eq!(ver.to_string().parse::<ClientVersion>().unwrap(), ver);
        }

        #[test]
        fn ordering_matches_tuple_ordering(x: [u32; 4], y: [u32; 4]) {
            let (vx, vy) = (ClientVersion::new(x[0], x[1], x[2], x[3]), ClientVersion::new(y[0], y[1], y[2], y[3]));
            prop_assert_eq!(vx.cmp(&vy), x.cmp(&y));
        }
    }
}
