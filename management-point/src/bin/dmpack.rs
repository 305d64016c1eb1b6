//! `dmpack`: builds and signs deployment folders and packages on the publisher's side.

use clap::Parser;

/// dmpack: build and sign deployment folders and packages.
#[derive(Parser, Debug)]
#[command(name = "dmpack", version)]
struct Cli {}

fn main() {
    let _ = Cli::parse();
}
