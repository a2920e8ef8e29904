//! Workspace end-to-end tests: the real `keymesh` binary, started as a process and driven over
//! HTTP. One test binary (links are slow on two cores); each area is a module.

mod cross_service;
mod enroll;
mod process;
mod relay_crash;
mod server;
mod support;
