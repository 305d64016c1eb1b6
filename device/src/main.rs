//! `dm`: the device's one program (a multi-call binary, as busybox is), which is each client
//! program by the name it is started with (`dmsvc`, a link to it on the device;
//! `dminstaller_linux-aarch64`, a copy or link on a card) or by its first argument
//! (`dm svc --once`). One program instead of four shares one copy of the TLS stack, the HTTP
//! client, X.509 and the hashing code: the client's whole footprint on the device.

#[allow(unsafe_code)]
mod trim;

use std::ffi::OsString;
use std::process::ExitCode;

use dm_shared::{cli, deployment};

/// A program's entry point: its arguments, its own name not among them.
type Main = fn(Vec<OsString>) -> ExitCode;

/// The client programs, by name, with their entry points.
const PROGRAMS: [(&str, Main); 4] = [
    ("dminstaller", dm_installer::cli::main),
    ("dmclientsetup", dm_client::cli::setup::main),
    ("dmsvc", dm_client::cli::svc::main),
    ("dmcertenroll", dm_client::cli::certenroll::main),
];

const HELP: &str = "\
dm: the device management client's one program

Usage: dm installer|setup|svc|certenroll [ARGS...]
       dminstaller|dmclientsetup|dmsvc|dmcertenroll [ARGS...]   (a link or copy by that name)

Each program's own --help says what it does and takes.
";

/// The program a name selects: the file name, without a folder, that is a program's name
/// alone or followed by `_` or `-` (`dmsvc`, `dminstaller_linux-aarch64`), or a program's
/// first argument (`svc`, or the program's own name).
fn select(name: &str) -> Option<(&'static str, Main)> {
    let base = name.rsplit('/').next().unwrap_or(name);
    PROGRAMS.iter().copied().find(|(program, _)| {
        let by_name = base
            .strip_prefix(program)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['_', '-']));
        by_name || base == deployment::subcommand(program)
    })
}

fn main() -> ExitCode {
    dm_client::agent::trim_before_sleep(trim::trim);
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    let rest: Vec<OsString> = args.collect();
    if let Some((_, main)) = select(&argv0.to_string_lossy()) {
        return main(rest);
    }
    // `dm …`: the first argument says which program; the agent starts the programs it runs
    // through its own executable (resolved to this file), with its launch argument first.
    let first = rest.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
    if first == dm_client::agent::contain::LAUNCH_ARG {
        return dm_client::cli::svc::main(rest);
    }
    match (select(&first), first.as_str()) {
        (Some((_, main)), _) => main(rest[1..].to_vec()),
        (None, "-h" | "--help") => {
            cli::out(HELP);
            ExitCode::SUCCESS
        }
        (None, "-V" | "--version") => {
            cli::out(&format!("{}\n", cli::version_line("dm")));
            ExitCode::SUCCESS
        }
        (None, "") => cli::usage_error("dm", "which program? installer, setup, svc or certenroll"),
        (None, other) => cli::usage_error("dm", format!("unknown program {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_first_arguments_select_programs() {
        let picks = |n: &str| select(n).map(|(program, _)| program);
        assert_eq!(picks("/opt/dm/current/dmsvc"), Some("dmsvc"));
        assert_eq!(picks("svc"), Some("dmsvc"));
        assert_eq!(picks("dmsvc"), Some("dmsvc"));
        assert_eq!(picks("/media/card/dminstaller_linux-aarch64"), Some("dminstaller"));
        assert_eq!(picks("installer"), Some("dminstaller"));
        assert_eq!(picks("dmclientsetup-old"), Some("dmclientsetup"));
        assert_eq!(picks("setup"), Some("dmclientsetup"));
        assert_eq!(picks("certenroll"), Some("dmcertenroll"));
        for none in ["dm", "dm_linux-aarch64", "dmsvcx", "setup.sh", ""] {
            assert_eq!(picks(none), None, "{none}");
        }
    }
}
