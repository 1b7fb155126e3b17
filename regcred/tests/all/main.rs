//! regcred's integration tests, one binary with a module per topic: the binary as a user
//! runs it (`cli`), and the admission webhook over real HTTPS (`webhook`).

#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed unwrap is a failed test, with its message"
)]

mod cli;
mod webhook;
