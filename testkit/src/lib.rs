//! keymesh-testkit: what the tests of several crates share, so that no production crate carries
//! test support behind a feature. Today: [`Cluster`], a real vault and a real relay on loopback
//! (the relay's own integration tests and the node SDK's use it), and [`Pki`], certificates for
//! TLS tests. Database and SMTP test
//! support stay in `keymesh-core` (feature `testing`), whose own unit tests need them.

mod cluster;
mod pki;

pub use cluster::{Cluster, FEED_KEY, MGMT_KEY, TestNode};
pub use pki::Pki;
