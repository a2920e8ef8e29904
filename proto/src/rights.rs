//! Rights, the ceiling and the rules that keep delegation from widening anything.
//!
//! A right is `(resource pattern, operation)`. Operations are ordered
//! `read < list < write < delete < admin < share`; a node's **ceiling** is the highest operation
//! it may ever hold (agents default to `list`, i.e. `read` and `list`). Holding an operation does
//! not imply the lower ones: rights are explicit. Delegating a resource needs the `share`
//! right on it.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::path::{PathError, SecretPath};

/// A secret operation, in ceiling order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Read a secret's value.
    Read,
    /// List secret paths.
    List,
    /// Create or replace a secret.
    Write,
    /// Delete a secret.
    Delete,
    /// Administer the group vault.
    Admin,
    /// Delegate rights on the resource to a peer.
    Share,
}

impl Op {
    /// All operations, lowest first.
    pub const ALL: [Op; 6] = [
        Op::Read,
        Op::List,
        Op::Write,
        Op::Delete,
        Op::Admin,
        Op::Share,
    ];

    /// Wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::List => "list",
            Op::Write => "write",
            Op::Delete => "delete",
            Op::Admin => "admin",
            Op::Share => "share",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Op {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Op::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| format!("unknown operation {s:?}"))
    }
}

/// The highest operation a node may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Ceiling(pub Op);

impl Ceiling {
    /// The default for agents: `read` and `list`.
    pub const AGENT: Ceiling = Ceiling(Op::List);

    /// Whether `op` is at or below the ceiling.
    pub fn permits(self, op: Op) -> bool {
        op <= self.0
    }
}

/// A resource pattern: `*` (everything in the group), `a/b/*` (everything under `a/b/`), or an
/// exact secret path `a/b/c`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
#[cfg_attr(feature = "openapi", schema(value_type = String, example = "db/*"))]
pub struct ResourcePattern(String);

impl ResourcePattern {
    /// Everything in the group.
    pub fn any() -> Self {
        Self("*".into())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The prefix (with trailing `/`, or empty for `*`) when this is a wildcard pattern.
    fn prefix(&self) -> Option<&str> {
        if self.0 == "*" {
            Some("")
        } else {
            self.0.strip_suffix('*')
        }
    }

    /// Whether a secret path falls under this pattern.
    pub fn matches(&self, path: &SecretPath) -> bool {
        match self.prefix() {
            Some(prefix) => path.as_str().starts_with(prefix),
            None => self.0 == path.as_str(),
        }
    }

    /// Whether every path matched by `other` is matched by `self`.
    pub fn covers(&self, other: &ResourcePattern) -> bool {
        match (self.prefix(), other.prefix()) {
            (Some(mine), Some(theirs)) => theirs.starts_with(mine),
            (Some(mine), None) => other.0.starts_with(mine),
            (None, Some(_)) => false,
            (None, None) => self.0 == other.0,
        }
    }
}

impl TryFrom<String> for ResourcePattern {
    type Error = PathError;

    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw == "*" {
            return Ok(Self(raw));
        }
        let body = raw.strip_suffix("/*").unwrap_or(&raw);
        SecretPath::parse(body)?;
        Ok(Self(raw))
    }
}

impl FromStr for ResourcePattern {
    type Err = PathError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::try_from(s.to_owned())
    }
}

impl From<ResourcePattern> for String {
    fn from(p: ResourcePattern) -> String {
        p.0
    }
}

impl fmt::Display for ResourcePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One right.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Right {
    /// What it applies to.
    pub resource: ResourcePattern,
    /// Which operation.
    pub op: Op,
}

/// The first path segment of relay send rights: `right("relay/<node>", "write")` lets a node
/// send to that node of its own group, `relay/*` to every node of it. Secret paths may not use
/// it (the vault refuses them), so a send right never reaches a secret.
pub const RELAY_NAMESPACE: &str = "relay";

impl Right {
    /// `write` on `relay/*`: send to every node of the holder's own group.
    pub fn send_to_group() -> Self {
        Self {
            resource: ResourcePattern(format!("{RELAY_NAMESPACE}/*")),
            op: Op::Write,
        }
    }

    /// Whether this is a relay send right. Sending is not a secret operation: the ceiling,
    /// which orders secret operations, does not apply to it.
    pub fn is_relay_send(&self) -> bool {
        self.op == Op::Write
            && self
                .resource
                .as_str()
                .strip_prefix(RELAY_NAMESPACE)
                .is_some_and(|rest| rest.starts_with('/'))
    }

    /// Whether this right includes `other` (same operation, covering resource).
    pub fn covers(&self, other: &Right) -> bool {
        self.op == other.op && self.resource.covers(&other.resource)
    }
}

impl fmt::Display for Right {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.op, self.resource)
    }
}

/// Why a set of rights cannot be granted without a human approval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Excess {
    /// Rights whose operation is above the recipient's ceiling.
    pub above_ceiling: Vec<Right>,
    /// Rights the granter does not hold itself.
    pub outside_granter: Vec<Right>,
    /// Resources the granter holds but may not share (no `share` right on them).
    pub not_shareable: Vec<Right>,
}

impl Excess {
    /// Nothing in excess.
    pub fn is_empty(&self) -> bool {
        self.above_ceiling.is_empty()
            && self.outside_granter.is_empty()
            && self.not_shareable.is_empty()
    }
}

/// Rights above a ceiling (for mint). Empty means all may be granted.
pub fn above_ceiling(requested: &[Right], ceiling: Ceiling) -> Excess {
    Excess {
        above_ceiling: requested
            .iter()
            .filter(|r| !r.is_relay_send() && !ceiling.permits(r.op))
            .cloned()
            .collect(),
        ..Excess::default()
    }
}

/// What a delegation would need beyond what the granter may give: every requested right must
/// be held by the granter, the granter must hold `share` on its resource, and its operation must
/// be within the peer's ceiling. Nothing is ever truncated: the caller refuses or asks for
/// approval with this list.
pub fn delegation_excess(requested: &[Right], granter: &[Right], peer_ceiling: Ceiling) -> Excess {
    let mut excess = Excess::default();
    for right in requested {
        if !right.is_relay_send() && !peer_ceiling.permits(right.op) {
            excess.above_ceiling.push(right.clone());
        }
        if !granter.iter().any(|g| g.covers(right)) {
            excess.outside_granter.push(right.clone());
        }
        let share = Right {
            resource: right.resource.clone(),
            op: Op::Share,
        };
        if right.op != Op::Share && !granter.iter().any(|g| g.covers(&share)) {
            excess.not_shareable.push(right.clone());
        }
    }
    excess
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn pat(s: &str) -> ResourcePattern {
        s.parse().expect("pattern")
    }

    fn path(s: &str) -> SecretPath {
        SecretPath::parse(s).expect("path")
    }

    fn right(resource: &str, op: Op) -> Right {
        Right {
            resource: pat(resource),
            op,
        }
    }

    #[test]
    fn patterns_match_and_cover() {
        assert!(pat("db/*").matches(&path("db/password")));
        assert!(pat("db/*").matches(&path("db/replica/password")));
        assert!(!pat("db/*").matches(&path("dbx/password")));
        assert!(!pat("db/*").matches(&path("db")));
        assert!(pat("*").covers(&pat("db/*")));
        assert!(pat("db/*").covers(&pat("db/a/*")));
        assert!(pat("db/*").covers(&pat("db/a")));
        assert!(!pat("db/a").covers(&pat("db/*")));
        assert!(!pat("db/*").covers(&pat("*")));
        for bad in ["", "/", "db/", "../x", "db/*/x", "db*", "a//b", "*/x"] {
            assert!(bad.parse::<ResourcePattern>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn ceiling_orders_operations() {
        assert!(Ceiling::AGENT.permits(Op::Read));
        assert!(Ceiling::AGENT.permits(Op::List));
        assert!(!Ceiling::AGENT.permits(Op::Write));
        let excess = above_ceiling(
            &[right("db/*", Op::Read), right("db/*", Op::Write)],
            Ceiling::AGENT,
        );
        assert_eq!(excess.above_ceiling, vec![right("db/*", Op::Write)]);
    }

    #[test]
    fn delegation_needs_share_and_never_widens() {
        let granter = [right("db/*", Op::Read), right("db/*", Op::Share)];
        let ok = delegation_excess(&[right("db/a", Op::Read)], &granter, Ceiling::AGENT);
        assert!(ok.is_empty(), "{ok:?}");
        let wider = delegation_excess(&[right("*", Op::Read)], &granter, Ceiling::AGENT);
        assert_eq!(wider.outside_granter.len(), 1);
        let no_share = delegation_excess(
            &[right("db/a", Op::Read)],
            &[right("db/*", Op::Read)],
            Ceiling::AGENT,
        );
        assert_eq!(no_share.not_shareable.len(), 1);
        let above = delegation_excess(&[right("db/a", Op::Share)], &granter, Ceiling::AGENT);
        assert_eq!(above.above_ceiling.len(), 1);
    }

    fn arb_pattern() -> impl Strategy<Value = ResourcePattern> {
        let seg = prop::sample::select(vec!["a", "b", "c"]);
        (prop::collection::vec(seg, 0..3), any::<bool>()).prop_map(|(segs, wildcard)| {
            let body = segs.join("/");
            let raw = match (body.is_empty(), wildcard) {
                (true, _) => "*".to_owned(),
                (false, true) => format!("{body}/*"),
                (false, false) => body,
            };
            raw.parse().expect("generated pattern is valid")
        })
    }

    fn arb_op() -> impl Strategy<Value = Op> {
        prop::sample::select(Op::ALL.to_vec())
    }

    fn arb_rights() -> impl Strategy<Value = Vec<Right>> {
        prop::collection::vec(
            (arb_pattern(), arb_op()).prop_map(|(resource, op)| Right { resource, op }),
            0..5,
        )
    }

    fn arb_path() -> impl Strategy<Value = SecretPath> {
        prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..4)
            .prop_map(|segs| SecretPath::parse(&segs.join("/")).expect("path"))
    }

    proptest! {
        /// `covers` agrees with `matches` on every path: if A covers B, every path B matches, A
        /// matches too.
        #[test]
        fn covers_is_sound(a in arb_pattern(), b in arb_pattern(), p in arb_path()) {
            if a.covers(&b) && b.matches(&p) {
                prop_assert!(a.matches(&p));
            }
        }

        /// No chain of delegations accepted by `delegation_excess` ends with a right above the
        /// final holder's ceiling or outside the original grant.
        #[test]
        fn delegation_chains_never_widen(
            root in arb_rights(),
            steps in prop::collection::vec((arb_rights(), arb_op()), 1..5),
            p in arb_path(),
        ) {
            let mut held = root.clone();
            for (requested, ceiling_op) in steps {
                let ceiling = Ceiling(ceiling_op);
                if delegation_excess(&requested, &held, ceiling).is_empty() {
                    for r in &requested {
                        prop_assert!(ceiling.permits(r.op));
                        prop_assert!(held.iter().any(|h| h.covers(r)));
                        // Anything the new right allows on a concrete path, the root allowed.
                        if r.resource.matches(&p) {
                            prop_assert!(root.iter().any(|g| g.op == r.op && g.resource.matches(&p)));
                        }
                    }
                    held = requested;
                }
            }
        }
    }

    #[test]
    fn relay_send_rights_ignore_the_ceiling_but_not_delegation() {
        let send = right("relay/*", Op::Write);
        assert!(send.is_relay_send());
        assert!(!right("relay/*", Op::Read).is_relay_send());
        assert!(!right("relayx/a", Op::Write).is_relay_send());
        assert!(!right("*", Op::Write).is_relay_send());
        assert!(above_ceiling(std::slice::from_ref(&send), Ceiling::AGENT).is_empty());
        // `*` write is a secret right too: still above an agent's ceiling.
        assert!(!above_ceiling(&[right("*", Op::Write)], Ceiling::AGENT).is_empty());
        let excess = delegation_excess(std::slice::from_ref(&send), &[], Ceiling::AGENT);
        assert!(excess.above_ceiling.is_empty());
        assert_eq!(excess.outside_granter, vec![send]);
    }
}
