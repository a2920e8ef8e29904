//! Management integration tests: one binary, real router, real SMTP server, the selected
//! database backend.

mod approvals;
mod audit;
mod conformance;
mod enroll;
mod harness;
mod login;
mod mail_tls;
mod operations;
mod responders;
mod sessions;
