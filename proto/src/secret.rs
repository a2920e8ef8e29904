//! Comparing secrets without leaking where they differ.

use subtle::ConstantTimeEq;

/// Constant-time equality of two secrets. Lengths are not secret (tokens have a fixed length);
/// contents are compared without early exit.
pub fn secret_eq(presented: &[u8], expected: &[u8]) -> bool {
    presented.ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::secret_eq;

    #[test]
    fn equal_only_when_identical() {
        assert!(secret_eq(b"abc", b"abc"));
        assert!(!secret_eq(b"abc", b"abd"));
        assert!(!secret_eq(b"abc", b"abcd"));
        assert!(!secret_eq(b"", b"x"));
    }
}
