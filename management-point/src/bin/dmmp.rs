//! `dmmp`: the management point and its admin commands.

use clap::Parser;

/// dmmp: the management point devices poll, and its admin commands.
#[derive(Parser, Debug)]
#[command(name = "dmmp", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
