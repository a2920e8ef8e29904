//! Vault integration tests: the real router in process, real tokens and proofs of possession,
//! a fresh database per test on the selected backend. One test binary; areas are modules.

mod harness;
mod lifecycle;
mod tokens;
