//! Identifiers of groups, nodes, users and admins: parsed once, where they enter.

use std::{fmt, ops::Deref};

use serde::{Deserialize, Serialize};

/// A group, node, user or admin id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`. Ids go into
/// audit records, SQL parameters and token facts, so nothing else is accepted (no NUL, no
/// separators, no look-alikes).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(
    feature = "openapi",
    schema(
        value_type = String,
        pattern = r"^[A-Za-z0-9._-]{1,64}$",
        description = "A group, node, user or admin id: 1 to 64 characters of `A-Z a-z 0-9 . _ -`, not `.` or `..`."
    )
)]
pub struct Ident(String);

impl TryFrom<String> for Ident {
    type Error = String;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        let ok = (1..=64).contains(&raw.len())
            && raw != "."
            && raw != ".."
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if ok {
            Ok(Self(raw))
        } else {
            Err("ids are 1 to 64 characters of A-Z a-z 0-9 . _ -".into())
        }
    }
}

impl From<Ident> for String {
    fn from(id: Ident) -> String {
        id.0
    }
}

impl Deref for Ident {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::Ident;

    #[test]
    fn only_plain_ids_parse() {
        for ok in ["team", "node-1", "a.b_c", &"x".repeat(64)] {
            Ident::try_from(ok.to_owned()).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["", ".", "..", "a b", "a/b", "a\0b", "é", &"x".repeat(65)] {
            assert!(Ident::try_from(bad.to_owned()).is_err(), "{bad:?} accepted");
        }
    }
}
