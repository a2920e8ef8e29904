//! Secret paths: parsed once, valid forever after.
//!
//! A path is 1 to 8 segments joined by `/`, at most 256 bytes. A segment is 1 to 64 characters
//! from `A-Z a-z 0-9 . _ -`, and is not `.` or `..`. No leading, trailing or doubled `/`. This
//! rules out traversal, encoded separators, control characters and Unicode look-alikes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest path in bytes.
pub const MAX_PATH_BYTES: usize = 256;
/// Most segments in a path.
pub const MAX_SEGMENTS: usize = 8;
/// Longest segment in bytes.
pub const MAX_SEGMENT_BYTES: usize = 64;

/// Why a path is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty or too long.
    #[error("a secret path is 1 to {MAX_PATH_BYTES} bytes")]
    Length,
    /// Too many segments.
    #[error("a secret path has at most {MAX_SEGMENTS} segments")]
    Depth,
    /// A bad segment.
    #[error(
        "each path segment is 1 to {MAX_SEGMENT_BYTES} characters of A-Z a-z 0-9 . _ - and not . or .."
    )]
    Segment,
}

/// A validated secret path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretPath(String);

fn validate_segment(segment: &str) -> Result<(), PathError> {
    let ok = (1..=MAX_SEGMENT_BYTES).contains(&segment.len())
        && segment != "."
        && segment != ".."
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok { Ok(()) } else { Err(PathError::Segment) }
}

impl SecretPath {
    /// Parse and validate.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        if raw.is_empty() || raw.len() > MAX_PATH_BYTES {
            return Err(PathError::Length);
        }
        let mut segments = 0;
        for segment in raw.split('/') {
            validate_segment(segment)?;
            segments += 1;
        }
        if segments > MAX_SEGMENTS {
            return Err(PathError::Depth);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretPath {
    type Error = PathError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        Self::parse(&raw)
    }
}

impl From<SecretPath> for String {
    fn from(p: SecretPath) -> String {
        p.0
    }
}

impl fmt::Display for SecretPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_paths() {
        for ok in ["db", "db/password", "a.b_c-d/e", &"x".repeat(64)] {
            SecretPath::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_traversal_and_oddities() {
        for bad in [
            "",
            "/db",
            "db/",
            "db//x",
            "..",
            "db/../x",
            "./db",
            "db/.",
            "db\\x",
            "db%2fx",
            "db x",
            "db\0x",
            "dé",
            "a/b/c/d/e/f/g/h/i",
            &"x".repeat(65),
            &"a/".repeat(200),
        ] {
            assert!(SecretPath::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
