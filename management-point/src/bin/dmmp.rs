//! `dmmp`: the management point devices poll, and its admin commands.

/// jemalloc: an open connection's memory is a few small allocations that live as long as it
/// does, next to request buffers freed after each poll. glibc's allocator keeps the freed
/// buffers' pages, scattered between the live ones, and never returns them; jemalloc keeps
/// each size in slabs of its own and returns emptied pages (`.cargo/config.toml` sets how
/// soon).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use dm_mp::admin::init::InitSpec;
use dm_mp::admin::packages::{self, PackageSource, ProgramSpec};
use dm_mp::admin::targeting::{self, AdvertiseSpec};
use dm_mp::admin::{self, Out, config, devices};
use dm_mp::config::{Config, UnknownDevices};
use dm_mp::model::AdvertisementKind;
use dm_mp::{Error, Result};

/// dmmp: the management point devices poll (hawkBit DDI over HTTPS), and its admin commands.
#[derive(Parser, Debug)]
#[command(name = "dmmp", version)]
struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "DMMP_CONFIG", default_value = "dmmp.toml")]
    config: PathBuf,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a configuration file and an empty database.
    Init(InitArgs),
    /// Serve devices until SIGTERM; prints "listening https://ADDR" when ready.
    Serve,
    /// Packages: source folders imported as artifacts.
    #[command(subcommand)]
    Package(PackageCmd),
    /// Programs: what a device does with a package.
    #[command(subcommand)]
    Program(ProgramCmd),
    /// Collections of devices.
    #[command(subcommand)]
    Collection(CollectionCmd),
    /// Advertise a program to a collection.
    Advertise(AdvertiseArgs),
    /// Advertisements.
    #[command(subcommand)]
    Advertisement(AdvertisementCmd),
    /// Devices.
    #[command(subcommand)]
    Device(DeviceCmd),
    /// Certificate revocation lists of the code-signing CAs, passed on to devices.
    #[command(subcommand)]
    Crl(CrlCmd),
    /// Configuration items: the catalog packaged with dmpack.
    #[command(subcommand, name = "config-item")]
    ConfigItem(ConfigItemCmd),
    /// Configuration packages: signed packages of configuration items.
    #[command(subcommand, name = "config-package")]
    ConfigPackage(ConfigPackageCmd),
    /// Administrators of the web console (docs/console.md).
    #[command(subcommand)]
    Admin(AdminCmd),
    /// Copy a fleet's state from a SQLite file into an empty PostgreSQL database, comparing
    /// every table's count (docs/management-point.md).
    Migrate {
        /// The source: sqlite:PATH.
        #[arg(long)]
        from: String,
        /// The target: postgres://user@host:port/database.
        #[arg(long)]
        to: String,
        /// PEM roots of the target server's certificate: connect over TLS.
        #[arg(long)]
        to_ca: Option<PathBuf>,
    },
    /// A report for client installation (docs/health.md): distribution-status,
    /// tethered-desktops, deployment-details, deployment-failures, deployment-successes,
    /// health-summary, healthy, unhealthy, unhealthy-certificate, unhealthy-communication,
    /// unhealthy-local, advertisement-devices.
    Report {
        /// The report.
        name: String,
        /// Only this advertisement (distribution-status, advertisement-devices).
        #[arg(long)]
        advertisement: Option<String>,
        /// Only this device (deployment-details).
        #[arg(long)]
        device: Option<String>,
        /// Only devices in this distribution state (advertisement-devices): targeted,
        /// received, downloading, running, succeeded or failed.
        #[arg(long)]
        state: Option<String>,
        /// Only rows with a cell containing this text (any case).
        #[arg(long)]
        filter: Option<String>,
        /// Sort by this column (largest first with --desc).
        #[arg(long)]
        sort: Option<String>,
        /// Sort largest first.
        #[arg(long)]
        desc: bool,
        /// Print CSV instead of text.
        #[arg(long)]
        csv: bool,
    },
    /// What devices report about their configuration items.
    Compliance {
        /// Only this device (controller id or TENANT/ID).
        #[arg(long)]
        device: Option<String>,
        /// Only the devices and items of this advertisement (id or name).
        #[arg(long)]
        advertisement: Option<String>,
    },
    /// Counts per state of one advertisement (same as `advertisement status`).
    Status {
        /// The advertisement (id or name).
        advertisement: String,
    },
}

#[derive(Subcommand, Debug)]
enum AdminCmd {
    /// Add an administrator, or set the password of one: read from standard input (one
    /// line), or from --password-file.
    Add {
        /// The name they log in with.
        #[arg(long)]
        name: String,
        /// A file whose first line is the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Pin a client certificate (PEM) to an administrator: it opens the console with no
    /// password while it is valid.
    Certificate {
        /// The administrator.
        #[arg(long)]
        name: String,
        /// The certificate, PEM.
        #[arg(long)]
        file: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigItemCmd {
    /// Add an item (TOML or JSON, docs/configuration-items.md) to the catalog.
    Add {
        /// The item file.
        #[arg(long)]
        file: PathBuf,
    },
    /// List the items of the catalog and of configuration packages.
    List,
    /// Print an item as JSON (for `dmpack package --items`).
    Show {
        /// Its name.
        name: String,
        /// Its version (default: the highest).
        #[arg(long = "item-version")]
        version: Option<u32>,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigPackageCmd {
    /// Import a signed configuration package (dmpack package --kind configuration --items).
    Add {
        /// The signed folder (or bundle).
        #[arg(long)]
        source: PathBuf,
        /// PEM roots its publisher must chain to.
        #[arg(long)]
        roots: PathBuf,
        /// An external HTTPS distribution point serving its files.
        #[arg(long)]
        distribution_point: Option<String>,
    },
}

#[derive(Args, Debug)]
struct InitArgs {
    /// Folder for dmmp.toml, the database and package content.
    #[arg(long)]
    dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// The base URL devices reach the server at (default: https://LISTEN).
    #[arg(long)]
    public_url: Option<String>,
    /// The server's PEM certificate chain.
    #[arg(long)]
    tls_cert: PathBuf,
    /// The server's PEM private key.
    #[arg(long)]
    tls_key: PathBuf,
    /// PEM roots of device client certificates (enables certificate authentication).
    #[arg(long)]
    client_ca: Option<PathBuf>,
    /// register or refuse devices it has never seen.
    #[arg(long, default_value = "refuse", value_parser = ["register", "refuse"])]
    unknown_devices: String,
    /// A gateway token (at least 16 characters) accepted for any device.
    #[arg(long)]
    gateway_token: Option<String>,
    /// Seconds devices are told to sleep between polls.
    #[arg(long, default_value_t = 300)]
    poll_sleep: u64,
}

#[derive(Subcommand, Debug)]
enum PackageCmd {
    /// Import a signed package folder (dmpack package), or raw files with --raw.
    Add {
        /// A signed folder.
        #[arg(long, conflicts_with = "raw")]
        source: Option<PathBuf>,
        /// PEM roots the folder's publisher must chain to.
        #[arg(long, requires = "source")]
        roots: Option<PathBuf>,
        /// Files served as they are (such as a signed SWUpdate .swu), for clients that verify
        /// them themselves.
        #[arg(long, num_args = 1..)]
        raw: Vec<PathBuf>,
        /// Name of a raw package.
        #[arg(long)]
        name: Option<String>,
        /// Version of a raw package.
        #[arg(long = "package-version")]
        package_version: Option<String>,
        /// Kind of a raw package.
        #[arg(long, default_value = "software-distribution")]
        kind: String,
        /// An external HTTPS distribution point serving the files (such as nginx), instead
        /// of this server.
        #[arg(long)]
        distribution_point: Option<String>,
    },
    /// List packages.
    List,
    /// Remove a package no advertisement uses.
    Remove {
        /// id, name or name@version.
        package: String,
    },
}

#[derive(Subcommand, Debug)]
enum ProgramCmd {
    /// Add a program: one of the package's signed programs, under a name advertisements use.
    Add {
        /// The package (id, name or name@version).
        #[arg(long)]
        package: String,
        /// The program's name in dmmp.
        #[arg(long)]
        name: String,
        /// The package's signed program it runs (see `dmmp package list --json`).
        #[arg(long = "program")]
        signed_program: Option<String>,
        /// Raw packages only (SWUpdate images): a command for clients that read one.
        #[arg(long)]
        command: Option<String>,
        /// A platform it may run on (repeat): narrows the signed platforms.
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// Seconds it may run before it is stopped: shortens the signed limit.
        #[arg(long)]
        max_run_time: Option<u64>,
        /// Raw packages only: mobile or desktop (a signed program's class is signed).
        #[arg(long)]
        device_class: Option<String>,
    },
    /// List programs.
    List,
}

#[derive(Subcommand, Debug)]
enum CollectionCmd {
    /// Add a collection.
    Add {
        /// Name.
        #[arg(long)]
        name: String,
        /// all, platform=P, model=M, client-version<V (<=, =, >=, >), attribute:KEY=VALUE, or explicit.
        #[arg(long, default_value = "explicit")]
        rule: String,
        /// The tenant whose devices it holds.
        #[arg(long, default_value = "DEFAULT")]
        tenant: String,
    },
    /// List collections.
    List,
    /// Show (or add to) a collection's members.
    Members {
        /// The collection (id or name).
        collection: String,
        /// Devices to add explicitly (controller id or TENANT/ID).
        #[arg(long)]
        add: Vec<String>,
    },
}

#[derive(Args, Debug)]
struct AdvertiseArgs {
    /// The advertisement's name.
    #[arg(long)]
    name: String,
    /// The program (id or name).
    #[arg(long)]
    program: String,
    /// The collection (id or name).
    #[arg(long)]
    collection: String,
    /// Runs when due.
    #[arg(long, group = "kind")]
    mandatory: bool,
    /// Offered; runs when the device's user asks.
    #[arg(long, group = "kind")]
    available: bool,
    /// Downloaded, not run.
    #[arg(long, group = "kind")]
    download_only: bool,
    /// When it becomes due (RFC 3339; default now).
    #[arg(long)]
    start: Option<String>,
    /// When it expires (RFC 3339).
    #[arg(long)]
    expires: Option<String>,
    /// Daily window in UTC when mandatory programs may run, such as 22:00-04:00.
    #[arg(long)]
    maintenance_window: Option<String>,
    /// Whether a program that ran before on a device runs again: never (default), always,
    /// if-failed, if-succeeded.
    #[arg(long, default_value = "never")]
    rerun: String,
    /// Let devices take this version even when they have had a newer one.
    #[arg(long)]
    allow_downgrade: bool,
}

#[derive(Subcommand, Debug)]
enum AdvertisementCmd {
    /// List advertisements.
    List,
    /// Cancel an advertisement: devices that have not started it are told to cancel.
    Cancel {
        /// id or name.
        advertisement: String,
    },
    /// Counts per state and each device's state.
    Status {
        /// id or name.
        advertisement: String,
    },
}

#[derive(Subcommand, Debug)]
enum CrlCmd {
    /// Add a CA's revocation list (PEM or DER); devices fetch it at their next poll.
    Add {
        /// The CRL file.
        file: PathBuf,
    },
    /// List the revocation lists devices are given.
    List,
}

#[derive(Subcommand, Debug)]
enum DeviceCmd {
    /// Register a device with a target token (generated unless given); prints the token.
    Add {
        /// Controller id.
        #[arg(long)]
        id: String,
        /// Tenant (default: the first in the configuration).
        #[arg(long)]
        tenant: Option<String>,
        /// The device's target token.
        #[arg(long)]
        token: Option<String>,
    },
    /// Register many devices from a CSV file of `controller_id,target_token` lines (a header
    /// line and `#` comments are skipped); existing devices are left alone.
    Import {
        /// The CSV file.
        #[arg(long)]
        csv: PathBuf,
        /// Tenant (default: the first in the configuration).
        #[arg(long)]
        tenant: Option<String>,
    },
    /// List devices.
    List,
    /// Refuse the client certificate the device last authenticated with, from its next request.
    Revoke {
        /// Controller id or TENANT/ID.
        device: String,
    },
    /// Approve a device that registered itself: it may then receive client deployments.
    Approve {
        /// Controller id or TENANT/ID.
        device: String,
    },
    /// Inventory, last poll, actions and status history of one device.
    Show {
        /// Controller id or TENANT/ID.
        device: String,
    },
}

fn open(cli: &Cli) -> Result<(Config, Box<dyn dm_mp::storage::Storage>)> {
    let cfg = Config::load(&cli.config)?;
    let store = dm_mp::storage::open(&cfg, "admin")?;
    Ok((cfg, store))
}

fn init(a: &InitArgs) -> Result<Out> {
    admin::init::init(&InitSpec {
        dir: a.dir.clone(),
        listen: a.listen,
        public_url: a.public_url.clone(),
        tls_cert: a.tls_cert.clone(),
        tls_key: a.tls_key.clone(),
        client_ca: a.client_ca.clone(),
        unknown_devices: if a.unknown_devices == "refuse" {
            UnknownDevices::Refuse
        } else {
            UnknownDevices::Register
        },
        gateway_token: a.gateway_token.clone(),
        poll_sleep: a.poll_sleep,
    })
}

fn package(cli: &Cli, cmd: &PackageCmd) -> Result<Out> {
    let (cfg, store) = open(cli)?;
    match cmd {
        PackageCmd::Add { source, roots, raw, name, package_version, kind, distribution_point } => {
            let src = match (source, raw.is_empty()) {
                (Some(dir), true) => PackageSource::Signed {
                    dir: dir.clone(),
                    roots: roots.clone().ok_or_else(|| {
                        Error::Usage(
                            "--source needs --roots (the PEM roots its publisher must chain to)"
                                .into(),
                        )
                    })?,
                },
                (None, false) => PackageSource::Raw {
                    files: raw.clone(),
                    name: name.clone().ok_or_else(|| Error::Usage("--raw needs --name".into()))?,
                    version: package_version
                        .clone()
                        .ok_or_else(|| Error::Usage("--raw needs --package-version".into()))?,
                    kind: kind.parse().map_err(Error::Usage)?,
                },
                _ => {
                    return Err(Error::Usage(
                        "give --source DIR --roots FILE, or --raw FILE...".into(),
                    ));
                }
            };
            packages::package_add(&cfg, &*store, &src, distribution_point.as_deref(), admin::now())
        }
        PackageCmd::List => packages::package_list(&*store),
        PackageCmd::Remove { package } => packages::package_remove(&*store, package),
    }
}

fn program(cli: &Cli, cmd: &ProgramCmd) -> Result<Out> {
    let (_, store) = open(cli)?;
    match cmd {
        ProgramCmd::Add {
            package,
            name,
            signed_program,
            command,
            platforms,
            max_run_time,
            device_class,
        } => {
            let spec = ProgramSpec {
                package: package.clone(),
                name: name.clone(),
                signed_program: signed_program.clone(),
                command: command.clone(),
                platforms: platforms.clone(),
                max_run_time: *max_run_time,
                device_class: device_class.clone(),
            };
            packages::program_add(&*store, &spec)
        }
        ProgramCmd::List => packages::program_list(&*store),
    }
}

fn collection(cli: &Cli, cmd: &CollectionCmd) -> Result<Out> {
    let (cfg, store) = open(cli)?;
    match cmd {
        CollectionCmd::Add { name, rule, tenant } => {
            targeting::collection_add(&cfg, &*store, name, tenant, rule)
        }
        CollectionCmd::List => targeting::collection_list(&*store),
        CollectionCmd::Members { collection, add } => {
            targeting::collection_members(&*store, collection, add)
        }
    }
}

fn advertise(cli: &Cli, a: &AdvertiseArgs) -> Result<Out> {
    let (_, store) = open(cli)?;
    let kind = if a.available {
        AdvertisementKind::Available
    } else if a.download_only {
        AdvertisementKind::DownloadOnly
    } else {
        AdvertisementKind::Mandatory
    };
    let spec = AdvertiseSpec {
        name: a.name.clone(),
        program: a.program.clone(),
        collection: a.collection.clone(),
        kind,
        start: a.start.clone(),
        expires: a.expires.clone(),
        maintenance_window: a.maintenance_window.clone(),
        rerun: a.rerun.parse().map_err(Error::Usage)?,
        allow_downgrade: a.allow_downgrade,
    };
    targeting::advertise(&*store, &spec, admin::now())
}

fn advertisement(cli: &Cli, cmd: &AdvertisementCmd) -> Result<Out> {
    let (_, store) = open(cli)?;
    match cmd {
        AdvertisementCmd::List => targeting::advertisement_list(&*store, admin::now()),
        AdvertisementCmd::Cancel { advertisement } => {
            targeting::advertisement_cancel(&*store, advertisement, admin::now())
        }
        AdvertisementCmd::Status { advertisement } => {
            let a = admin::find_advertisement(&*store, advertisement)?;
            targeting::advertisement_status(&*store, &a)
        }
    }
}

fn device(cli: &Cli, cmd: &DeviceCmd) -> Result<Out> {
    let (cfg, store) = open(cli)?;
    let now = admin::now();
    match cmd {
        DeviceCmd::Add { id, tenant, token } => {
            devices::device_add(&cfg, &*store, id, tenant.as_deref(), token.as_deref(), now)
        }
        DeviceCmd::Import { csv, tenant } => {
            devices::device_import(&cfg, &*store, csv, tenant.as_deref(), now)
        }
        DeviceCmd::List => devices::device_list(&*store),
        DeviceCmd::Approve { device } => devices::device_approve(&*store, device),
        DeviceCmd::Revoke { device } => devices::device_revoke(&*store, device, now),
        DeviceCmd::Show { device } => devices::device_show(&*store, device),
    }
}

fn crl(cli: &Cli, cmd: &CrlCmd) -> Result<Out> {
    let (_, store) = open(cli)?;
    match cmd {
        CrlCmd::Add { file } => admin::crl::crl_add(&*store, file, admin::now()),
        CrlCmd::List => admin::crl::crl_list(&*store),
    }
}

/// Runs one command; `None` for `serve`, which prints as it goes.
fn run(cli: &Cli) -> Result<Option<Out>> {
    Ok(Some(match &cli.command {
        Command::Init(a) => init(a)?,
        Command::Migrate { from, to, to_ca } => {
            admin::migrate::migrate(from, to, to_ca.as_deref())?
        }
        Command::Serve => {
            dm_mp::server::run(Config::load(&cli.config)?)?;
            return Ok(None);
        }
        Command::Package(c) => package(cli, c)?,
        Command::Program(c) => program(cli, c)?,
        Command::Collection(c) => collection(cli, c)?,
        Command::Advertise(a) => advertise(cli, a)?,
        Command::Advertisement(c) => advertisement(cli, c)?,
        Command::Status { advertisement: a } => {
            advertisement(cli, &AdvertisementCmd::Status { advertisement: a.clone() })?
        }
        Command::Device(c) => device(cli, c)?,
        Command::Crl(c) => crl(cli, c)?,
        Command::Report { name, advertisement, device, state, filter, sort, desc, csv } => {
            let (cfg, store) = open(cli)?;
            let o = dm_mp::reports::Options {
                advertisement: advertisement.clone(),
                device: device.clone(),
                state: state.clone(),
                filter: filter.clone(),
                sort: sort.clone(),
                desc: *desc,
                page: Default::default(),
            };
            let r = dm_mp::reports::build(&*store, &cfg, name, admin::now(), &o)?;
            Out::new(if *csv { r.csv() } else { r.text() }, r.json())
        }
        Command::Admin(AdminCmd::Add { name, password_file }) => {
            let (_, store) = open(cli)?;
            let text = admin::administrators::password_text(password_file.as_deref())?;
            admin::administrators::add(&*store, name, &text, admin::now())?
        }
        Command::Admin(AdminCmd::Certificate { name, file }) => {
            let (_, store) = open(cli)?;
            admin::administrators::certificate(&*store, name, file, admin::now())?
        }
        Command::ConfigItem(c) => config_item(cli, c)?,
        Command::ConfigPackage(c) => config_package(cli, c)?,
        Command::Compliance { device, advertisement } => {
            let (_, store) = open(cli)?;
            config::compliance(&*store, device.as_deref(), advertisement.as_deref())?
        }
    }))
}

fn config_item(cli: &Cli, cmd: &ConfigItemCmd) -> Result<Out> {
    let (_, store) = open(cli)?;
    match cmd {
        ConfigItemCmd::Add { file } => config::item_add(&*store, file, admin::now()),
        ConfigItemCmd::List => config::item_list(&*store),
        ConfigItemCmd::Show { name, version } => config::item_show(&*store, name, *version),
    }
}

fn config_package(cli: &Cli, cmd: &ConfigPackageCmd) -> Result<Out> {
    let (cfg, store) = open(cli)?;
    match cmd {
        ConfigPackageCmd::Add { source, roots, distribution_point } => config::package_add(
            &cfg,
            &*store,
            source,
            roots,
            distribution_point.as_deref(),
            admin::now(),
        ),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    let serving = matches!(cli.command, Command::Serve);
    let level = if std::env::var_os("DMMP_DEBUG").is_some() {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let _ = simplelog::WriteLogger::init(
        if serving { level } else { log::LevelFilter::Warn },
        simplelog::ConfigBuilder::new()
            .set_time_format_rfc3339()
            .set_target_level(log::LevelFilter::Off)
            .set_thread_level(log::LevelFilter::Off)
            .build(),
        std::io::stderr(),
    );
    match run(&cli) {
        Ok(Some(out)) => {
            if json {
                if let Err(e) = dm_shared::cli::out_json(&out.json) {
                    eprintln!("dmmp: error: {e}");
                    return ExitCode::from(dm_shared::StatusCode::E_FAIL.exit_code());
                }
            } else {
                dm_shared::cli::out(&out.text);
            }
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmmp: error: {e}");
            ExitCode::from(e.code().exit_code())
        }
    }
}
