//! Relay integration tests, on the backend `KEYMESH_TEST_BACKEND` selects (SQLite or
//! PostgreSQL; `scripts/test` runs both).

mod root_keys;
mod store;
mod ws;
