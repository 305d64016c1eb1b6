//! What every program's command line shares: argument parsing with `--help` and `--version`,
//! the version line, how usage errors are reported, and output that survives a closed pipe.

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

/// A program's command line, read with lexopt. `-h`/`--help` prints the help text and
/// `-V`/`--version` the version line; a mistake is said on stderr with the hint to run
/// `--help`. Every method's `Err` is the exit code the program stops with.
#[derive(Debug)]
pub struct Parser {
    inner: lexopt::Parser,
    program: &'static str,
    help: &'static str,
}

impl Parser {
    /// The process's arguments.
    pub fn from_env(program: &'static str, help: &'static str) -> Parser {
        Parser { inner: lexopt::Parser::from_env(), program, help }
    }

    /// These arguments (the program's name not among them): how the one client program
    /// hands each of its programs the rest of its command line.
    pub fn from_args(
        program: &'static str,
        help: &'static str,
        args: Vec<std::ffi::OsString>,
    ) -> Parser {
        Parser { inner: lexopt::Parser::from_args(args), program, help }
    }

    /// The next argument other than help and version.
    pub fn next_arg(&mut self) -> Result<Option<lexopt::Arg<'_>>, ExitCode> {
        use lexopt::Arg::{Long, Short};
        match self.inner.next() {
            Ok(Some(Short('h') | Long("help"))) => {
                out(self.help);
                Err(ExitCode::SUCCESS)
            }
            Ok(Some(Short('V') | Long("version"))) => {
                out(&format!("{}\n", version_line(self.program)));
                Err(ExitCode::SUCCESS)
            }
            Ok(arg) => Ok(arg),
            Err(e) => Err(usage_error(self.program, e)),
        }
    }

    /// The value of the option just read.
    pub fn value(&mut self) -> Result<std::ffi::OsString, ExitCode> {
        self.inner.value().map_err(|e| usage_error(self.program, e))
    }

    /// The value of the option just read, parsed.
    pub fn parse_value<T>(&mut self) -> Result<T, ExitCode>
    where
        T: std::str::FromStr,
        T::Err: std::fmt::Display,
    {
        let v = self.value()?;
        let text = v.to_string_lossy();
        text.parse().map_err(|e| usage_error(self.program, format!("{text:?}: {e}")))
    }

    /// Says that `arg` is not expected here.
    pub fn unexpected(&self, arg: lexopt::Error) -> ExitCode {
        usage_error(self.program, arg)
    }
}

/// Writes a value as pretty JSON to stdout.
pub fn out_json<T: serde::Serialize>(value: &T) -> Result<(), String> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| format!("cannot print JSON: {e}"))?;
    out(&format!("{text}\n"));
    Ok(())
}
