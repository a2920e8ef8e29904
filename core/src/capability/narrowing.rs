//! Reading a verified token's blocks without the Datalog engine.
//!
//! Every token Keymesh mints has an authority block of facts (the claims) and one check,
//! `check if time($t), $t <= expiry`. `VerifiedToken::attenuate` appends blocks made only of
//! three check forms:
//!
//! - `check if operation($op), {"read", ...}.contains($op)`
//! - `check if resource($r), $r.starts_with("prefix")`
//! - `check if time($t), $t <= 2026-01-01T00:00:00Z`
//!
//! When every block holds nothing but such checks (apart from the authority's facts; no rules,
//! no scope annotations, no third-party signature), the authorizer's decision is a plain
//! function of the request: each check trusts only the authority block, its own block and the
//! authorizer, none of which holds `operation`, `resource` or `time` facts other than the
//! request's own single fact each, and the allow policy only sees the authority block's rights.
//! The checks are then evaluated directly, which is what makes a check of an attenuated token
//! cost the same as an unattenuated one, cold or warm. Anything else — any other form, any
//! extra term — is left to the real Biscuit authorizer. Equivalence with the authorizer is
//! property-tested.
//!
//! [`read`] decodes the token bytes in the protobuf schema biscuit-auth itself uses, after
//! biscuit-auth has verified their signatures, resolves symbols with the same table the
//! authorizer uses (the default symbols, then the authority's and every first-party block's,
//! in order), and validates each block with biscuit-auth's own block conversion (versions,
//! well-formed terms), so it reads exactly what the authorizer would evaluate, not a printed
//! rendering of it.

use biscuit_auth::{
    builder,
    datalog::SymbolTable,
    format::{
        convert::proto_block_to_token_block,
        schema::{self, Check, Expression, OpBinary, Predicate, Term, check, op, op_binary, term},
    },
};
use prost::Message;

use super::rights::Op;

/// One recognised check of an appended block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Narrowing {
    /// The request's operation must be one of these.
    Ops(Vec<Op>),
    /// The request's resource must start with this string.
    Prefix(String),
    /// The request's time (unix seconds) must be at or before this.
    NotAfter(u64),
}

/// Why a recognised check refused: the authorizer reports a failed time check as expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An operation or resource check failed.
    Forbidden,
    /// A time check failed.
    Expired,
}

impl Narrowing {
    fn allows(&self, op: Op, resource: &str, now_secs: u64) -> bool {
        match self {
            Narrowing::Ops(ops) => ops.contains(&op),
            Narrowing::Prefix(prefix) => resource.starts_with(prefix.as_str()),
            Narrowing::NotAfter(limit) => now_secs <= *limit,
        }
    }
}

/// Evaluate recognised checks: `Expired` if any time check fails (as the authorizer reports
/// it), else `Forbidden` if any other fails.
pub fn evaluate(
    checks: &[Narrowing],
    op: Op,
    resource: &str,
    now_secs: u64,
) -> Result<(), Refusal> {
    let mut refusal = None;
    for check in checks {
        if !check.allows(op, resource, now_secs) {
            if matches!(check, Narrowing::NotAfter(_)) {
                return Err(Refusal::Expired);
            }
            refusal = Some(Refusal::Forbidden);
        }
    }
    refusal.map_or(Ok(()), Err)
}

/// A token's blocks as read from its bytes.
#[derive(Debug)]
pub struct Layout {
    /// The authority block's facts, in order.
    pub authority_facts: Vec<builder::Fact>,
    /// Every block's checks (authority first) when all are recognised forms; `None` sends the
    /// token to the Datalog path.
    pub checks: Option<Vec<Narrowing>>,
}

/// Symbols as the authorizer resolves them for first-party blocks: the defaults below 1024,
/// then the authority's and every first-party block's symbols in order.
struct Symbols<'a> {
    defaults: SymbolTable,
    own: Vec<&'a str>,
}

impl Symbols<'_> {
    const OFFSET: u64 = 1024;

    fn get(&self, index: u64) -> Option<&str> {
        match index.checked_sub(Self::OFFSET) {
            Some(i) => self.own.get(usize::try_from(i).ok()?).copied(),
            None => self.defaults.get_symbol(index),
        }
    }
}

/// Read token bytes whose signatures biscuit-auth has already verified. `None` when the bytes
/// do not hold blocks biscuit-auth would load (the token is invalid), or the authority block
/// holds anything but facts and checks (Keymesh never signs such a block).
pub fn read(token: &[u8]) -> Option<Layout> {
    let container = schema::Biscuit::decode(token).ok()?;
    let authority = schema::Block::decode(container.authority.block.as_slice()).ok()?;
    let blocks = container
        .blocks
        .iter()
        .map(|signed| {
            let block = schema::Block::decode(signed.block.as_slice()).ok()?;
            Some((block, signed.external_signature.is_some()))
        })
        .collect::<Option<Vec<_>>>()?;
    proto_block_to_token_block(&authority, None).ok()?;
    if container.authority.external_signature.is_some()
        || !authority.rules.is_empty()
        || !authority.scope.is_empty()
    {
        return None;
    }
    let mut symbols = Symbols {
        defaults: SymbolTable::new(),
        own: authority.symbols.iter().map(String::as_str).collect(),
    };
    for (block, third_party) in &blocks {
        if !third_party {
            symbols.own.extend(block.symbols.iter().map(String::as_str));
        }
    }
    let authority_facts = authority
        .facts
        .iter()
        .map(|f| fact(&f.predicate, &symbols))
        .collect::<Option<Vec<_>>>()?;
    let checks = recognise(&authority, &blocks, &symbols);
    if checks.is_some() {
        // The Datalog path validates blocks when it loads them into an authorizer; this one
        // must refuse exactly the same blocks.
        for (block, _) in &blocks {
            proto_block_to_token_block(block, None).ok()?;
        }
    }
    Some(Layout {
        authority_facts,
        checks,
    })
}

/// Every block's checks, if each block is plain and each check a recognised form.
fn recognise(
    authority: &schema::Block,
    blocks: &[(schema::Block, bool)],
    symbols: &Symbols<'_>,
) -> Option<Vec<Narrowing>> {
    let mut out = Vec::new();
    for check in &authority.checks {
        out.push(recognise_check(check, symbols)?);
    }
    for (block, third_party) in blocks {
        if *third_party || !plain(block) {
            return None;
        }
        for check in &block.checks {
            out.push(recognise_check(check, symbols)?);
        }
    }
    Some(out)
}

/// A fact of strings, integers and byte strings (the only terms Keymesh writes).
fn fact(predicate: &Predicate, symbols: &Symbols<'_>) -> Option<builder::Fact> {
    let terms = predicate
        .terms
        .iter()
        .map(|t| match &t.content {
            Some(term::Content::String(s)) => Some(builder::Term::Str(symbols.get(*s)?.to_owned())),
            Some(term::Content::Integer(i)) => Some(builder::Term::Integer(*i)),
            Some(term::Content::Bytes(b)) => Some(builder::Term::Bytes(b.clone())),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?;
    Some(builder::fact(symbols.get(predicate.name)?, &terms))
}

/// A block with checks only: no facts, no rules, default trust, no public keys.
fn plain(block: &schema::Block) -> bool {
    block.facts.is_empty()
        && block.rules.is_empty()
        && block.scope.is_empty()
        && block.public_keys.is_empty()
}

const CONTAINS: i32 = op_binary::Kind::Contains as i32;
const PREFIX: i32 = op_binary::Kind::Prefix as i32;
const LESS_OR_EQUAL: i32 = op_binary::Kind::LessOrEqual as i32;

fn recognise_check(check: &Check, symbols: &Symbols<'_>) -> Option<Narrowing> {
    if check.kind.unwrap_or(check::Kind::One as i32) != check::Kind::One as i32 {
        return None;
    }
    let [query] = check.queries.as_slice() else {
        return None;
    };
    let ([predicate], [expression]) = (query.body.as_slice(), query.expressions.as_slice()) else {
        return None;
    };
    if !query.scope.is_empty() {
        return None;
    }
    let variable = single_variable(predicate)?;
    let (left, right, operator) = binary(expression)?;
    let is_var = |t: &Term| matches!(t.content, Some(term::Content::Variable(v)) if v == variable);
    match (
        symbols.get(predicate.name)?,
        operator,
        &left.content,
        &right.content,
    ) {
        ("operation", CONTAINS, Some(term::Content::Set(set)), _) if is_var(right) => {
            let ops = set
                .set
                .iter()
                .map(|t| match t.content {
                    Some(term::Content::String(s)) => symbols.get(s)?.parse().ok(),
                    _ => None,
                })
                .collect::<Option<Vec<Op>>>()?;
            Some(Narrowing::Ops(ops))
        }
        ("resource", PREFIX, _, Some(term::Content::String(s))) if is_var(left) => {
            Some(Narrowing::Prefix(symbols.get(*s)?.to_owned()))
        }
        ("time", LESS_OR_EQUAL, _, Some(term::Content::Date(d))) if is_var(left) => {
            Some(Narrowing::NotAfter(*d))
        }
        _ => None,
    }
}

/// The single variable a one-term predicate binds.
fn single_variable(predicate: &Predicate) -> Option<u32> {
    match predicate.terms.as_slice() {
        [
            Term {
                content: Some(term::Content::Variable(v)),
            },
        ] => Some(*v),
        _ => None,
    }
}

/// An expression of exactly `value value binary-operator` (no FFI).
fn binary(expression: &Expression) -> Option<(&Term, &Term, i32)> {
    let [a, b, c] = expression.ops.as_slice() else {
        return None;
    };
    match (&a.content, &b.content, &c.content) {
        (
            Some(op::Content::Value(a)),
            Some(op::Content::Value(b)),
            Some(op::Content::Binary(OpBinary {
                kind,
                ffi_name: None,
            })),
        ) => Some((a, b, *kind)),
        _ => None,
    }
}
