//! Small pieces every program's command line shares: the version line and how usage errors
//! are reported.

use std::process::ExitCode;

use crate::platform::Platform;
use crate::status::StatusCode;

/// `dminstaller 0.1.0 (linux-aarch64)`.
pub fn version_line(program: &str) -> String {
    format!("{program} {} ({})", env!("CARGO_PKG_VERSION"), Platform::current())
}

/// Prints a usage error and the hint to run `--help`; returns the usage exit code.
pub fn usage_error(program: &str, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("{program}: {message}");
    eprintln!("Run `{program} --help` for usage.");
    ExitCode::from(StatusCode::E_INVALIDARG.exit_code())
}

/// Writes data to stdout. A closed pipe (`dmmp device list | head`) is not an error: the
/// reader has what it wanted, so the rest is dropped quietly instead of panicking as
/// `println!` would.
pub fn out(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush());
}

/// The exit code for a status.
pub fn exit(code: StatusCode) -> ExitCode {
    ExitCode::from(code.exit_code())
}
