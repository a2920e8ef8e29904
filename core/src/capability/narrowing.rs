//! The attenuation blocks Keymesh itself writes, recognised structurally.
//!
//! `VerifiedToken::attenuate` appends blocks made only of three check forms:
//!
//! - `check if operation($op), {"read", ...}.contains($op)`
//! - `check if resource($r), $r.starts_with("prefix")`
//! - `check if time($t), $t <= 2026-01-01T00:00:00Z`
//!
//! When every appended block holds nothing but such checks (no facts, no rules, no scope
//! annotations, no third-party signature), the authorizer's decision is a plain function of the
//! request: each check trusts only the authority block, its own block and the authorizer, none
//! of which holds `operation`, `resource` or `time` facts other than the request's own single
//! fact each, and the allow policy only sees the authority block's rights. The checks are then
//! evaluated directly, which is what makes a warm check of an attenuated token cost the same as
//! an unattenuated one. Anything else — any other form, any extra term — is left to the real
//! Biscuit authorizer. Equivalence with the authorizer is property-tested.
//!
//! Recognition reads the blocks as the authorizer loaded them (its snapshot), in the protobuf
//! schema biscuit-auth serialises, so it matches exactly what will be evaluated, not a printed
//! rendering of it.

use biscuit_auth::{
    Authorizer,
    datalog::SymbolTable,
    format::schema::{
        Check, Expression, OpBinary, Predicate, SnapshotBlock, Term, check, op, op_binary, term,
    },
};

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

/// The checks of every appended block of the token loaded in `authorizer`, if every one of
/// them is a recognised form; `None` sends the token to the Datalog path.
pub fn recognise(authorizer: &Authorizer) -> Option<Vec<Narrowing>> {
    let world = authorizer.snapshot().ok()?.world;
    let symbols = SymbolTable::from(world.symbols).ok()?;
    let mut out = Vec::new();
    for block in world.blocks.iter().skip(1) {
        if !plain(block) {
            return None;
        }
        for check in &block.checks {
            out.push(recognise_check(check, &symbols)?);
        }
    }
    Some(out)
}

/// A block with checks only: no facts, no rules, default trust, first-party.
fn plain(block: &SnapshotBlock) -> bool {
    block.facts.is_empty()
        && block.rules.is_empty()
        && block.scope.is_empty()
        && block.external_key.is_none()
}

const CONTAINS: i32 = op_binary::Kind::Contains as i32;
const PREFIX: i32 = op_binary::Kind::Prefix as i32;
const LESS_OR_EQUAL: i32 = op_binary::Kind::LessOrEqual as i32;

fn recognise_check(check: &Check, symbols: &SymbolTable) -> Option<Narrowing> {
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
        symbols.get_symbol(predicate.name)?,
        operator,
        &left.content,
        &right.content,
    ) {
        ("operation", CONTAINS, Some(term::Content::Set(set)), _) if is_var(right) => {
            let ops = set
                .set
                .iter()
                .map(|t| match t.content {
                    Some(term::Content::String(s)) => symbols.get_symbol(s)?.parse().ok(),
                    _ => None,
                })
                .collect::<Option<Vec<Op>>>()?;
            Some(Narrowing::Ops(ops))
        }
        ("resource", PREFIX, _, Some(term::Content::String(s))) if is_var(left) => {
            Some(Narrowing::Prefix(symbols.get_symbol(*s)?.to_owned()))
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
