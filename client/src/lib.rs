//! keymesh-client: what a node runs. Key generation and the encrypted key file, HPKE envelopes
//! (sealed on the sender's machine, opened on the recipient's: the relay sees ciphertext only),
//! and the relay connection.

/// HPKE envelopes: the `enc` and `payload` a node sends through the relay.
pub use keymesh_proto::envelope;
/// The node key file, encrypted at rest under a passphrase (Argon2id + XChaCha20-Poly1305).
pub mod keyfile;
/// A node's identity key and versioned encryption keys; rotation and signed key statements.
pub use keymesh_proto::keys;
/// Enrollment and token requests at the management server.
pub mod management;
/// The relay client: key publication and lookup, the reconnecting connection, send and receive.
pub mod relay;
/// Signed JSON calls from a node to management and the vault.
pub mod service;
/// TLS trust (the platform's or a CA file) and the plain-HTTP rule for every connection.
pub mod transport;
/// Secrets at the group vault.
pub mod vault;
