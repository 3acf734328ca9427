//! `ha-ingestor`: one binary with subcommands (`run`, `demo`, token tooling).
//!
//! Not built yet: the client library it stands on (`ha-client`) comes first. This placeholder keeps
//! the workspace layout honest and tells anyone who runs it where things stand.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "ha-ingestor {}: the service (`run`, `demo`) is not implemented yet; \
         see README.md for what exists today (the ha-client library).",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
