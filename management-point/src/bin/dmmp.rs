//! `dmmp`: the management point devices poll, and its admin commands.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use dm_mp::admin::{self, PackageSource};
use dm_mp::config::{Config, UnknownDevices};
use dm_mp::model::*;
use dm_mp::store::{SqliteStore, Storage};
use dm_mp::{Error, Result};
use serde_json::Value;

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
    /// Counts per state of one advertisement (same as `advertisement status`).
    Status {
        /// The advertisement (id or name).
        advertisement: String,
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
    #[arg(long, default_value = "register", value_parser = ["register", "refuse"])]
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
    /// Add a program to a package.
    Add {
        /// The package (id, name or name@version).
        #[arg(long)]
        package: String,
        /// The program's name.
        #[arg(long)]
        name: String,
        /// The command line, run in the package folder.
        #[arg(long)]
        command: String,
        /// A platform it may run on (repeat; none: any).
        #[arg(long = "platform")]
        platforms: Vec<String>,
        /// Seconds it may run before it is stopped.
        #[arg(long, default_value_t = 3600)]
        max_run_time: u64,
        /// mobile or desktop.
        #[arg(long, default_value = "mobile")]
        device_class: String,
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
    /// Inventory, last poll, actions and status history of one device.
    Show {
        /// Controller id or TENANT/ID.
        device: String,
    },
}

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn time_arg(s: &str, flag: &str) -> Result<i64> {
    dm_shared::clock::parse_rfc3339(s)
        .map(|t| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64))
        .ok_or_else(|| {
            Error::Usage(format!("--{flag} {s:?}: expected RFC 3339 such as 2026-11-24T13:20:01Z"))
        })
}

fn open(cli: &Cli) -> Result<(Config, SqliteStore)> {
    let cfg = Config::load(&cli.config)?;
    let store = SqliteStore::open(&cfg.database())?;
    Ok((cfg, store))
}

/// What a command prints: text for people, JSON for scripts.
struct Out(String, Value);

fn run(cli: Cli) -> Result<Option<Out>> {
    let t = now();
    Ok(Some(match &cli.command {
        Command::Init(a) => {
            let path = a.dir.join("dmmp.toml");
            if path.exists() {
                return Err(Error::OutputExists { path });
            }
            dm_shared::fs::create_dir_all(&a.dir, dm_shared::fs::MODE_DIR_PRIVATE)?;
            let abs = |p: &PathBuf| std::path::absolute(p).unwrap_or_else(|_| p.clone());
            let mut cfg = Config::new(&a.dir, a.listen, abs(&a.tls_cert), abs(&a.tls_key));
            cfg.server.public_url = a.public_url.clone();
            cfg.server.client_ca = a.client_ca.as_ref().map(abs);
            cfg.devices.unknown_devices = if a.unknown_devices == "refuse" {
                UnknownDevices::Refuse
            } else {
                UnknownDevices::Register
            };
            cfg.devices.gateway_token = a.gateway_token.clone();
            cfg.devices.poll_sleep_secs = a.poll_sleep;
            dm_shared::fs::write_atomic(
                &path,
                cfg.to_toml().as_bytes(),
                dm_shared::fs::MODE_PRIVATE,
            )?;
            let cfg = Config::load(&path)?;
            SqliteStore::open(&cfg.database())?;
            Out(format!("{}\n", path.display()), serde_json::json!({"config": path}))
        }
        Command::Serve => {
            let cfg = Config::load(&cli.config)?;
            dm_mp::server::run(cfg)?;
            return Ok(None);
        }
        Command::Package(PackageCmd::Add {
            source,
            roots,
            raw,
            name,
            package_version,
            kind,
            distribution_point,
        }) => {
            let (cfg, store) = open(&cli)?;
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
            let p = admin::add_package(&cfg, &store, &src, distribution_point.as_deref(), t)?;
            Out(
                format!(
                    "package {} added: {} {} ({}, {} files)\n",
                    p.id,
                    p.name,
                    p.version,
                    p.kind.as_str(),
                    p.artifacts.len()
                ),
                serde_json::json!(p),
            )
        }
        Command::Package(PackageCmd::List) => {
            let (_, store) = open(&cli)?;
            let (t, j) = admin::package_list(&store)?;
            Out(t, j)
        }
        Command::Package(PackageCmd::Remove { package }) => {
            let (_, store) = open(&cli)?;
            let p = admin::find_package(&store, package)?;
            store.remove_package(p.id)?;
            Out(format!("package {} removed\n", p.id), serde_json::json!({"removed": p.id}))
        }
        Command::Program(ProgramCmd::Add {
            package,
            name,
            command,
            platforms,
            max_run_time,
            device_class,
        }) => {
            let (_, store) = open(&cli)?;
            let pkg = admin::find_package(&store, package)?;
            for p in platforms {
                dm_shared::Platform::parse(p).map_err(Error::Usage)?;
            }
            if command.trim().is_empty() {
                return Err(Error::Usage("--command must not be empty".into()));
            }
            let mut prog = Program {
                id: 0,
                package_id: pkg.id,
                name: name.clone(),
                command: command.clone(),
                platforms: platforms.clone(),
                max_run_time: *max_run_time,
                device_class: device_class.parse().map_err(Error::Usage)?,
            };
            prog.id = store.add_program(&prog)?;
            Out(
                format!("program {} added: {} runs {:?}\n", prog.id, prog.name, prog.command),
                serde_json::json!(prog),
            )
        }
        Command::Program(ProgramCmd::List) => {
            let (_, store) = open(&cli)?;
            let (t, j) = admin::program_list(&store)?;
            Out(t, j)
        }
        Command::Collection(CollectionCmd::Add { name, rule }) => {
            let (_, store) = open(&cli)?;
            let rule = CollectionRule::parse(rule).map_err(Error::Usage)?;
            let id = store.add_collection(name, &rule)?;
            Out(
                format!("collection {id} added: {name} ({rule})\n"),
                serde_json::json!({"id": id, "name": name, "rule": rule}),
            )
        }
        Command::Collection(CollectionCmd::List) => {
            let (_, store) = open(&cli)?;
            let (t, j) = admin::collection_list(&store)?;
            Out(t, j)
        }
        Command::Collection(CollectionCmd::Members { collection, add }) => {
            let (_, store) = open(&cli)?;
            let c = admin::find_collection(&store, collection)?;
            for d in add {
                let dev = admin::find_device(&store, d)?;
                store.add_member(c.id, dev.id)?;
            }
            let c = admin::find_collection(&store, collection)?;
            let (t, j) = admin::collection_members(&store, &c)?;
            Out(t, j)
        }
        Command::Advertise(a) => {
            let (_, store) = open(&cli)?;
            let prog = admin::find_program(&store, &a.program)?;
            let col = admin::find_collection(&store, &a.collection)?;
            let kind = if a.available {
                AdvertisementKind::Available
            } else if a.download_only {
                AdvertisementKind::DownloadOnly
            } else {
                AdvertisementKind::Mandatory
            };
            let start = a.start.as_deref().map(|s| time_arg(s, "start")).transpose()?.unwrap_or(t);
            let expires = a.expires.as_deref().map(|s| time_arg(s, "expires")).transpose()?;
            if expires.is_some_and(|e| e <= start) {
                return Err(Error::Usage("--expires must be after --start".into()));
            }
            let window = a
                .maintenance_window
                .as_deref()
                .map(MaintenanceWindow::parse)
                .transpose()
                .map_err(Error::Usage)?;
            let mut adv = Advertisement {
                id: 0,
                name: a.name.clone(),
                program_id: prog.id,
                collection_id: col.id,
                kind,
                start_time: start,
                expires,
                window,
                created: t,
                canceled: false,
            };
            adv.id = store.add_advertisement(&adv)?;
            Out(
                format!(
                    "advertisement {} added: {} of {} to {} ({})\n",
                    adv.id,
                    prog.name,
                    prog.package_id,
                    col.name,
                    kind.as_str()
                ),
                serde_json::json!(adv),
            )
        }
        Command::Advertisement(AdvertisementCmd::List) => {
            let (_, store) = open(&cli)?;
            let (t2, j) = admin::advertisement_list(&store, t)?;
            Out(t2, j)
        }
        Command::Advertisement(AdvertisementCmd::Cancel { advertisement }) => {
            let (_, store) = open(&cli)?;
            let a = admin::find_advertisement(&store, advertisement)?;
            let n = store.cancel_advertisement(a.id, t)?;
            Out(
                format!("advertisement {} canceled; {n} device(s) told to cancel\n", a.id),
                serde_json::json!({"canceled": a.id, "actions_canceling": n}),
            )
        }
        Command::Advertisement(AdvertisementCmd::Status { advertisement })
        | Command::Status { advertisement } => {
            let (_, store) = open(&cli)?;
            let a = admin::find_advertisement(&store, advertisement)?;
            let (t2, j) = admin::advertisement_status(&store, &a)?;
            Out(t2, j)
        }
        Command::Device(DeviceCmd::Add { id, tenant, token }) => {
            let (cfg, store) = open(&cli)?;
            let tenant = tenant
                .clone()
                .or_else(|| cfg.devices.tenants.first().cloned())
                .unwrap_or_else(|| "DEFAULT".into());
            let token = token.clone().unwrap_or_else(admin::new_token);
            let d = store.add_device(
                &tenant,
                id,
                Some(&dm_shared::pki::sha256_hex(token.as_bytes())),
                "admin",
                t,
            )?;
            Out(format!("{token}\n"), serde_json::json!({"device": d, "target_token": token}))
        }
        Command::Device(DeviceCmd::Import { csv, tenant }) => {
            let (cfg, store) = open(&cli)?;
            let tenant = tenant
                .clone()
                .or_else(|| cfg.devices.tenants.first().cloned())
                .unwrap_or_else(|| "DEFAULT".into());
            let text = String::from_utf8(dm_shared::fs::read_capped(csv, 256 * 1024 * 1024)?)
                .map_err(|_| Error::Usage(format!("{}: not UTF-8 text", csv.display())))?;
            let mut rows = Vec::new();
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty()
                    || line.starts_with('#')
                    || (i == 0 && line.starts_with("controller_id"))
                {
                    continue;
                }
                let (cid, tok) =
                    line.split_once(',').map_or((line, None), |(c, t)| (c.trim(), Some(t.trim())));
                if cid.is_empty()
                    || cid.len() > 64
                    || !cid.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                {
                    return Err(Error::Usage(format!(
                        "{} line {}: bad controller id {cid:?}",
                        csv.display(),
                        i + 1
                    )));
                }
                let sha =
                    tok.filter(|t| !t.is_empty()).map(|t| dm_shared::pki::sha256_hex(t.as_bytes()));
                rows.push((tenant.clone(), cid.to_string(), sha));
            }
            let n = store.import_devices(&rows, t)?;
            Out(
                format!("{n} devices added ({} already known)\n", rows.len() - n),
                serde_json::json!({"added": n, "read": rows.len()}),
            )
        }
        Command::Device(DeviceCmd::List) => {
            let (_, store) = open(&cli)?;
            let (t2, j) = admin::device_list(&store)?;
            Out(t2, j)
        }
        Command::Device(DeviceCmd::Show { device }) => {
            let (_, store) = open(&cli)?;
            let d = admin::find_device(&store, device)?;
            let (t2, j) = admin::device_show(&store, &d)?;
            Out(t2, j)
        }
    }))
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
    match run(cli) {
        Ok(Some(Out(text, value))) => {
            if json {
                dm_shared::cli::out(&format!(
                    "{}\n",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                ));
            } else {
                dm_shared::cli::out(&text);
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
