//! `dmpack`: builds and signs deployment folders and packages on the publisher's side.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand, ValueEnum};
use dm_mp::pack::{self, FolderSpec, PackageSpec, Signer};
use dm_shared::devpki::{Purpose, Spec};
use dm_shared::manifest::PackageKind;
use dm_shared::{ClientVersion, Platform, clock};

/// dmpack: build and sign client deployment folders and packages.
#[derive(Parser, Debug)]
#[command(name = "dmpack", version = concat!(env!("CARGO_PKG_VERSION")))]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a demo PKI: a root CA, a code-signing publisher and a TLS server certificate.
    DevPki {
        /// Folder to write root-ca.pem/.key, publisher.pem/.key, server.pem/.key into.
        #[arg(long)]
        out: PathBuf,
        /// Days the certificates are valid.
        #[arg(long, default_value_t = 365, value_parser = clap::value_parser!(u64).range(1..=36500))]
        days: u64,
        /// Names (DNS or IP) the server certificate is for.
        #[arg(long = "server-name", default_values_t = ["localhost".to_string(), "127.0.0.1".to_string()])]
        server_names: Vec<String>,
    },
    /// Issue another certificate from a dev-pki root CA (for tests: expired, wrong usage, …).
    Cert(CertArgs),
    /// Build and sign a client deployment folder.
    Folder {
        /// The folder to create (must not exist or be empty).
        #[arg(long)]
        out: PathBuf,
        /// The client version, such as 1.2.0.345.
        #[arg(long = "client-version")]
        client_version: ClientVersion,
        /// PLATFORM=DIR: the folder holding the built client for a platform (its one program
        /// `dm`, or an older build's four programs), such as
        /// linux-aarch64=target/cross/aarch64-unknown-linux-gnu/device. Repeat per platform.
        #[arg(long = "platform-bin", required = true)]
        platform_bins: Vec<String>,
        /// DMCommonInstaller.ini and/or ClientSettings.ini to include.
        #[arg(long)]
        settings: Vec<PathBuf>,
        /// The publisher's PKCS#8 private key.
        #[arg(long)]
        key: PathBuf,
        /// The publisher's certificate chain (publisher first).
        #[arg(long)]
        cert: PathBuf,
    },
    /// Build and sign a software distribution or configuration package from a folder.
    Package(PackageArgs),
    /// Write a signed folder as one `.dmpkg` bundle file.
    Bundle {
        /// The signed folder.
        #[arg(long)]
        source: PathBuf,
        /// PEM file of the roots its publisher chains to (it is verified first).
        #[arg(long)]
        roots: PathBuf,
        /// The bundle file, or a folder to write `<name>-<version>.dmpkg` into.
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a certificate revocation list from a dev-pki root CA.
    Crl {
        /// The dev-pki folder holding root-ca.pem and root-ca.key.
        #[arg(long)]
        ca_dir: PathBuf,
        /// A PEM file of certificates to revoke (repeat; none: an empty list).
        #[arg(long)]
        revoke: Vec<PathBuf>,
        /// The list's number (higher than the last one's).
        #[arg(long, default_value_t = 1)]
        number: u64,
        /// Days until the next list is due.
        #[arg(long, default_value_t = 30)]
        days: u64,
        /// Where to write it (PEM).
        #[arg(long)]
        out: PathBuf,
    },
    /// Verify a signed folder or bundle against trusted roots.
    Verify {
        /// The folder or bundle.
        folder: PathBuf,
        /// PEM file of trusted root certificates.
        #[arg(long)]
        roots: PathBuf,
    },
}

/// `dmpack cert`.
#[derive(Args, Debug)]
struct CertArgs {
    /// The dev-pki folder holding root-ca.pem and root-ca.key.
    #[arg(long)]
    ca_dir: PathBuf,
    /// Subject common name.
    #[arg(long)]
    cn: String,
    /// What the certificate is for.
    #[arg(long, value_enum)]
    purpose: CertPurpose,
    /// Start of validity (RFC 3339); default an hour ago.
    #[arg(long)]
    valid_from: Option<String>,
    /// End of validity (RFC 3339); default a year from now.
    #[arg(long)]
    valid_until: Option<String>,
    /// Names for a server certificate.
    #[arg(long = "server-name")]
    server_names: Vec<String>,
    /// Certificate output file.
    #[arg(long)]
    out_cert: PathBuf,
    /// Key output file (written 0600).
    #[arg(long)]
    out_key: PathBuf,
}

/// `dmpack package`.
#[derive(Args, Debug)]
struct PackageArgs {
    /// The folder whose files make the package (a configuration package of items alone
    /// needs none).
    #[arg(long)]
    source: Option<PathBuf>,
    /// A configuration item, TOML or JSON (docs/configuration-items.md); with
    /// `--kind configuration`. Repeat.
    #[arg(long = "items")]
    items: Vec<PathBuf>,
    /// The folder to create (must not exist or be empty).
    #[arg(long)]
    out: PathBuf,
    /// The package name.
    #[arg(long)]
    name: String,
    /// The package version, four parts such as 1.0.0.0.
    #[arg(long = "package-version")]
    package_version: ClientVersion,
    /// software-distribution or configuration.
    #[arg(long, default_value = "software-distribution")]
    kind: String,
    /// A platform the package has binaries for (repeat).
    #[arg(long = "platform")]
    platforms: Vec<String>,
    /// A program devices may run, NAME=COMMAND: a file of the package (`./` allowed) and
    /// its arguments, split into words as a shell splits them (no shell runs it), with the
    /// defaults: at most an hour, any platform, mobile. Repeat.
    #[arg(long = "program")]
    programs: Vec<String>,
    /// The program devices run when their server names none (a DDI server without this
    /// project's metadata); a package of one program needs none.
    #[arg(long)]
    default_program: Option<String>,
    /// The package's health check, one of its programs: run on the device after another of
    /// its programs succeeded, and again at the end of a rollout's soak (docs/rollouts.md).
    #[arg(long)]
    health_check: Option<String>,
    /// A TOML (or JSON) file of `[[program]]` tables, for everything a program can say
    /// (docs/deployment-folder.md).
    #[arg(long = "programs")]
    programs_file: Option<PathBuf>,
    /// The publisher's PKCS#8 private key.
    #[arg(long)]
    key: PathBuf,
    /// The publisher's certificate chain (publisher first).
    #[arg(long)]
    cert: PathBuf,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum CertPurpose {
    Ca,
    CodeSigning,
    Server,
    Client,
    ServerAuthOnly,
}

fn parse_platform_bin(s: &str) -> Result<(Platform, PathBuf), dm_mp::Error> {
    let (p, d) = s.split_once('=').ok_or_else(|| {
        dm_mp::Error::Usage(format!("--platform-bin {s:?}: expected PLATFORM=DIR"))
    })?;
    Ok((Platform::parse(p).map_err(dm_mp::Error::Usage)?, PathBuf::from(d)))
}

fn time_arg(s: Option<&str>, default: SystemTime, what: &str) -> Result<SystemTime, dm_mp::Error> {
    match s {
        None => Ok(default),
        Some(s) => clock::parse_rfc3339(s).ok_or_else(|| {
            dm_mp::Error::Usage(format!(
                "--{what} {s:?}: expected RFC 3339 such as 2026-11-24T13:20:01Z"
            ))
        }),
    }
}

/// `dmpack cert`: the certificate's spec from the arguments, issued, its file named.
fn cert(a: CertArgs, now: SystemTime) -> dm_mp::Result<()> {
    let purpose = match a.purpose {
        CertPurpose::Ca => Purpose::Ca,
        CertPurpose::CodeSigning => Purpose::CodeSigning,
        CertPurpose::Server => Purpose::Server(a.server_names),
        CertPurpose::Client => Purpose::Client,
        CertPurpose::ServerAuthOnly => Purpose::ServerAuthOnly,
    };
    let hour = Duration::from_secs(3600);
    let spec = Spec {
        common_name: a.cn,
        purpose,
        not_before: time_arg(a.valid_from.as_deref(), now - hour, "valid-from")?,
        not_after: time_arg(a.valid_until.as_deref(), now + 365 * 24 * hour, "valid-until")?,
    };
    pack::issue_cert(&a.ca_dir, &spec, &a.out_cert, &a.out_key)?;
    dm_shared::cli::out(&format!("{}\n", a.out_cert.display()));
    Ok(())
}

/// What `dmpack package` signs, from its arguments: the kind, the platforms, the programs (a
/// programs file's, then each `--program`'s) and the configuration items.
fn package_spec(a: PackageArgs) -> dm_mp::Result<(PackageSpec, PathBuf, PathBuf, PathBuf)> {
    let kind = match a.kind.as_str() {
        "software-distribution" => PackageKind::SoftwareDistribution,
        "configuration" => PackageKind::Configuration,
        other => {
            return Err(dm_mp::Error::Usage(format!(
                "--kind {other:?}: expected software-distribution or configuration"
            )));
        }
    };
    let platforms = a
        .platforms
        .iter()
        .map(|p| Platform::parse(p).map_err(dm_mp::Error::Usage))
        .collect::<Result<Vec<_>, _>>()?;
    let mut programs = match &a.programs_file {
        Some(f) => pack::read_programs(f)?,
        None => Vec::new(),
    };
    for p in &a.programs {
        programs.push(pack::program_flag(p)?);
    }
    if let Some(d) = &a.default_program {
        let p = programs.iter_mut().find(|p| &p.name == d).ok_or_else(|| {
            dm_mp::Error::Usage(format!("--default-program {d}: the package has no program {d}"))
        })?;
        p.default = true;
    }
    if let Some(h) = &a.health_check {
        let p = programs.iter_mut().find(|p| &p.name == h).ok_or_else(|| {
            dm_mp::Error::Usage(format!("--health-check {h}: the package has no program {h}"))
        })?;
        p.health_check = true;
    }
    let spec = PackageSpec {
        source: a.source,
        name: a.name,
        version: a.package_version,
        kind,
        platforms,
        programs,
        items: a.items.iter().map(|p| pack::read_item(p)).collect::<Result<_, _>>()?,
    };
    Ok((spec, a.out, a.key, a.cert))
}

/// `dmpack package`: planned from the arguments, built and signed, reported.
fn package(a: PackageArgs, now: SystemTime) -> dm_mp::Result<()> {
    let (spec, out, key, cert) = package_spec(a)?;
    let signer = Signer::load(&key, &cert)?;
    let m = pack::build_package(&spec, &signer, &out, now)?;
    dm_shared::cli::out(&format!("{}\n", out.display()));
    eprintln!(
        "dmpack: signed package {} {} ({} files, {} bytes) as {}",
        m.name,
        m.version,
        m.files.len(),
        m.total_size(),
        signer.publisher().describe()
    );
    Ok(())
}

fn run(cli: Cli) -> dm_mp::Result<()> {
    let now = SystemTime::now();
    match cli.command {
        Command::DevPki { out, days, server_names } => {
            pack::dev_pki(&out, days, &server_names, now)?;
            dm_shared::cli::out(&format!("{}\n", out.join(pack::names::ROOT_CERT).display()));
            eprintln!(
                "dmpack: demo PKI written to {} (root CA, code-signing publisher, server for {})",
                out.display(),
                server_names.join(", ")
            );
        }
        Command::Cert(a) => cert(a, now)?,
        Command::Folder { out, client_version, platform_bins, settings, key, cert } => {
            let platforms = platform_bins
                .iter()
                .map(|s| parse_platform_bin(s))
                .collect::<Result<Vec<_>, _>>()?;
            let signer = Signer::load(&key, &cert)?;
            let spec = FolderSpec { version: client_version, platforms, settings };
            let m = pack::build_folder(&spec, &signer, &out, now)?;
            dm_shared::cli::out(&format!("{}\n", out.display()));
            eprintln!(
                "dmpack: signed client deployment {} for {} ({} files, {} bytes) as {}",
                m.version,
                m.platforms.iter().map(Platform::as_str).collect::<Vec<_>>().join(", "),
                m.files.len(),
                m.total_size(),
                signer.publisher().describe()
            );
        }
        Command::Package(a) => package(a, now)?,
        Command::Verify { folder, roots } => {
            let m = pack::verify(&folder, &roots, now)?;
            dm_shared::cli::out(&format!("ok {} {} {}\n", m.name, m.version, m.kind));
            eprintln!(
                "dmpack: {} verified: {} files, {} programs ({})",
                folder.display(),
                m.files.len(),
                m.programs.len(),
                m.programs.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(", ")
            );
        }
        Command::Bundle { source, roots, out } => {
            let path = pack::bundle(&source, &roots, &out, now)?;
            dm_shared::cli::out(&format!("{}\n", path.display()));
            eprintln!("dmpack: bundle written to {}", path.display());
        }
        Command::Crl { ca_dir, revoke, number, days, out } => {
            let n = pack::issue_crl(&ca_dir, &revoke, number, days, &out, now)?;
            dm_shared::cli::out(&format!("{}\n", out.display()));
            eprintln!(
                "dmpack: revocation list {number} revoking {n} certificate(s) written to {}",
                out.display()
            );
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmpack: error: {e}");
            eprintln!("dmpack: status {}", e.code());
            ExitCode::from(e.code().exit_code())
        }
    }
}
