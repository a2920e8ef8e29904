//! Client integration tests against a real vault and relay, on the backend
//! `KEYMESH_TEST_BACKEND` selects (SQLite by default, or PostgreSQL).

mod cli;
mod relay;
mod support;
