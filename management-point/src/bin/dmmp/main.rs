//! `dmmp`: the management point devices poll, and its admin commands.

/// jemalloc: an open connection's memory is a few small allocations that live as long as it
/// does, next to request buffers freed after each poll. glibc's allocator keeps the freed
/// buffers' pages, scattered between the live ones, and never returns them; jemalloc keeps
/// each size in slabs of its own and returns emptied pages (`.cargo/config.toml` sets how
/// soon). Feature `jemalloc`, on by default.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use std::process::ExitCode;

use clap::Parser;
use dm_mp::admin::init::InitSpec;
use dm_mp::admin::packages::{self, PackageSource};
use dm_mp::admin::targeting;
use dm_mp::admin::{self, Out, config, devices};
use dm_mp::api::client::Client;
use dm_mp::api::ops::{Cx, Op};
use dm_mp::config::{Config, UnknownDevices};
use dm_mp::{Error, Result};

mod args;
use args::*;

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
        PackageCmd::List => Err(through_op()),
        PackageCmd::Remove { package } => packages::package_remove(&*store, package),
    }
}

fn collection(cli: &Cli, cmd: &CollectionCmd) -> Result<Out> {
    let (_, store) = open(cli)?;
    match cmd {
        CollectionCmd::Add { .. } | CollectionCmd::List => Err(through_op()),
        CollectionCmd::Window { collection, window } => {
            targeting::collection_window(&*store, collection, window.as_deref())
        }
        CollectionCmd::Members { collection, add } => {
            targeting::collection_members(&*store, collection, add)
        }
    }
}

fn device(cli: &Cli, cmd: &DeviceCmd) -> Result<Out> {
    let (cfg, store) = open(cli)?;
    match cmd {
        DeviceCmd::UseCertificate { device } => {
            devices::device_use_certificate(&cfg, &*store, device)
        }
        DeviceCmd::Add { .. }
        | DeviceCmd::Import { .. }
        | DeviceCmd::List
        | DeviceCmd::Approve { .. }
        | DeviceCmd::Revoke { .. }
        | DeviceCmd::Show { .. } => Err(through_op()),
    }
}

fn crl(cli: &Cli, cmd: &CrlCmd) -> Result<Out> {
    let (_, store) = open(cli)?;
    match cmd {
        CrlCmd::Add { file } => admin::crl::crl_add(&*store, file, admin::now()),
        CrlCmd::List => admin::crl::crl_list(&*store),
    }
}

/// An operation the management API serves, asked of a function that handles the others: the
/// command line sends every such one through [`run_op`] before.
fn through_op() -> Error {
    Error::Usage("this command runs as an operation of the management API".into())
}

/// The operation a `dmmp dp` command asks for.
fn dp_op(c: &DpCmd) -> Op {
    let act = |package: &String, action: &str, dps: &[String]| Op::DpAct {
        package: package.clone(),
        action: action.into(),
        dps: dps.to_vec(),
    };
    match c {
        DpCmd::Add { name, url, site, boundaries, pull_from, rate_limit_kib, window } => {
            Op::DpAdd {
                name: name.clone(),
                url: url.clone(),
                site: site.clone(),
                boundaries: boundaries.clone(),
                pull_from: pull_from.clone(),
                rate_limit_kib: *rate_limit_kib,
                window: window.clone(),
            }
        }
        DpCmd::List => Op::DpList {},
        DpCmd::Retire { dp } => Op::DpRetire { dp: dp.clone() },
        DpCmd::Distribute { package, dps } => act(package, "distribute", dps),
        DpCmd::Update { package } => act(package, "update", &[]),
        DpCmd::Refresh { package, dps } => act(package, "refresh", dps),
        DpCmd::Remove { package, dps } => act(package, "remove", dps),
        DpCmd::Validate { package, dps } => act(package, "validate", dps),
        DpCmd::Status { package, dp } => Op::DpStatus { package: package.clone(), dp: dp.clone() },
    }
}

/// The operation a command asks for, when it is one the management API serves.
fn op_of(cmd: &Command) -> Result<Option<Op>> {
    let act = |rollout: &String, action: &str, program: Option<&String>| Op::RolloutAct {
        rollout: rollout.clone(),
        action: action.into(),
        program: program.cloned(),
    };
    Ok(Some(match cmd {
        Command::Device(DeviceCmd::List) => Op::DeviceList {},
        Command::Device(DeviceCmd::Show { device }) => Op::DeviceShow { device: device.clone() },
        Command::Device(DeviceCmd::Add { id, tenant, token }) => {
            Op::DeviceAdd { id: id.clone(), tenant: tenant.clone(), token: token.clone() }
        }
        Command::Device(DeviceCmd::Approve { device }) => {
            Op::DeviceApprove { device: device.clone() }
        }
        Command::Device(DeviceCmd::Revoke { device }) => {
            Op::DeviceRevoke { device: device.clone() }
        }
        Command::Package(PackageCmd::List) => Op::PackageList {},
        Command::Program(ProgramCmd::List) => Op::ProgramList {},
        Command::Program(ProgramCmd::Add {
            package,
            name,
            signed_program,
            command,
            platforms,
            max_run_time,
            device_class,
        }) => Op::ProgramAdd {
            package: package.clone(),
            name: name.clone(),
            signed_program: signed_program.clone(),
            command: command.clone(),
            platforms: platforms.clone(),
            max_run_time: *max_run_time,
            device_class: device_class.clone(),
        },
        Command::Collection(CollectionCmd::List) => Op::CollectionList {},
        Command::Collection(CollectionCmd::Add { name, rule, tenant }) => {
            Op::CollectionAdd { name: name.clone(), rule: rule.clone(), tenant: tenant.clone() }
        }
        Command::Advertise(a) => Op::Advertise {
            name: a.name.clone(),
            program: a.program.clone(),
            collection: a.collection.clone(),
            kind: if a.available {
                "available"
            } else if a.download_only {
                "download-only"
            } else {
                "mandatory"
            }
            .into(),
            start: a.start.clone(),
            expires: a.expires.clone(),
            maintenance_window: a.maintenance_window.clone(),
            rerun: a.rerun.clone(),
            allow_downgrade: a.allow_downgrade,
        },
        Command::Advertisement(AdvertisementCmd::List) => Op::AdvertisementList {},
        Command::Advertisement(AdvertisementCmd::Status { advertisement })
        | Command::Status { advertisement } => {
            Op::AdvertisementStatus { advertisement: advertisement.clone() }
        }
        Command::Advertisement(AdvertisementCmd::Cancel { advertisement }) => {
            Op::AdvertisementCancel { advertisement: advertisement.clone() }
        }
        Command::Rollout(RolloutCmd::List) => Op::RolloutList {},
        Command::Dp(c) => dp_op(c),
        Command::Rollout(RolloutCmd::Show { rollout }) => {
            Op::RolloutShow { rollout: rollout.clone() }
        }
        Command::Rollout(RolloutCmd::Approve { rollout }) => act(rollout, "approve", None),
        Command::Rollout(RolloutCmd::Start { rollout }) => act(rollout, "start", None),
        Command::Rollout(RolloutCmd::Pause { rollout }) => act(rollout, "pause", None),
        Command::Rollout(RolloutCmd::Resume { rollout, program }) => {
            act(rollout, "resume", program.as_ref())
        }
        Command::Rollout(RolloutCmd::Stop { rollout }) => act(rollout, "stop", None),
        Command::Token(TokenCmd::Create { name, role, expires, tenant }) => Op::TokenCreate {
            name: name.clone(),
            role: role.clone(),
            expires: expires.clone(),
            tenant: tenant.clone(),
        },
        Command::Token(TokenCmd::List) => Op::TokenList {},
        Command::Token(TokenCmd::Revoke { name }) => Op::TokenRevoke { name: name.clone() },
        Command::Audit { since } => Op::Audit { since: since.clone() },
        Command::Device(DeviceCmd::Import { csv, tenant }) => {
            let bytes = dm_shared::fs::read_capped(csv, 16 << 20)?;
            let text = String::from_utf8(bytes)
                .map_err(|_| Error::Usage(format!("{}: not UTF-8 text", csv.display())))?;
            Op::DeviceImport { csv: text, tenant: tenant.clone() }
        }
        Command::Update(UpdateCmd::Deploy {
            name,
            collection,
            updates,
            all_approved,
            security,
            available,
            deadline,
            spread,
            reboot,
            maintenance_window,
            held,
        }) => Op::UpdateDeploy {
            name: name.clone(),
            collection: collection.clone(),
            updates: updates.clone(),
            all_approved: *all_approved,
            security: *security,
            available: available.clone(),
            deadline: deadline.clone(),
            spread: Some(spread.clone()),
            reboot: Some(reboot.clone()),
            maintenance_window: maintenance_window.clone(),
            held: *held,
        },
        Command::Update(UpdateCmd::Deployments) => Op::UpdateDeployments {},
        Command::Update(UpdateCmd::Compliance { update, device, collection }) => {
            Op::UpdateCompliance {
                update: update.clone(),
                device: device.clone(),
                collection: collection.clone(),
            }
        }
        Command::Compliance { device, advertisement } => {
            Op::Compliance { device: device.clone(), advertisement: advertisement.clone() }
        }
        Command::Report { name, advertisement, device, state, filter, sort, desc, csv: false } => {
            Op::Report {
                name: name.clone(),
                advertisement: advertisement.clone(),
                device: device.clone(),
                state: state.clone(),
                filter: filter.clone(),
                sort: sort.clone(),
                dir: desc.then(|| "desc".to_string()),
                limit: None,
                after_tenant: None,
                after: None,
                offset: None,
            }
        }
        Command::Rollout(RolloutCmd::Create(a)) => Op::RolloutCreate {
            name: a.name.clone(),
            program: a.program.clone(),
            update_deployment: a.update_deployment.clone(),
            collection: a.collection.clone(),
            groups: Some(a.groups.clone()),
            success_threshold: Some(a.success_threshold),
            error_threshold: Some(a.error_threshold),
            soak: Some(a.soak),
            silent_after: Some(a.silent_after),
            start: a.start.clone(),
            approval: a.approval,
            joins_per_minute: Some(a.joins_per_minute),
            allow_downgrade: a.allow_downgrade,
            rollback_program: a.rollback_program.clone(),
            maintenance_window: a.maintenance_window.clone(),
        },
        _ => return Ok(None),
    }))
}

/// The management API client `--server` and `--token-file` name.
fn client(cli: &Cli) -> Result<Client> {
    let server = cli.server.as_deref().unwrap_or_default();
    let token = cli.token_file.as_deref().ok_or_else(|| {
        Error::Usage("--server needs --token-file (a token from `dmmp token create`)".into())
    })?;
    Client::new(server, token, cli.server_ca.as_deref())
}

/// Runs an operation: through the management API with `--server`, else on the database (and
/// its audit trail) as the user running `dmmp`.
fn run_op(cli: &Cli, op: &Op) -> Result<Out> {
    if cli.server.is_some() {
        return client(cli)?.run(op, cli.json);
    }
    let (cfg, store) = open(cli)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "an administrator".into());
    let actor = format!("dmmp ({user})");
    let now = admin::now();
    let cx = Cx { cfg: &cfg, store: &*store, actor: &actor, source: "dmmp", now, tenant: None };
    op.run(&cx)
}

/// What a command that changes the database but is no API operation does, and to what, for
/// the audit trail: every change is in it, whichever way it was made.
fn local_change(cmd: &Command) -> Option<(&'static str, String)> {
    let path = |p: &std::path::Path| p.display().to_string();
    Some(match cmd {
        Command::Package(PackageCmd::Add { source, name, .. }) => {
            ("package-add", source.as_deref().map(path).or(name.clone()).unwrap_or_default())
        }
        Command::Package(PackageCmd::Remove { package }) => ("package-remove", package.clone()),
        Command::Collection(CollectionCmd::Window { collection, .. }) => {
            ("collection-window", format!("collection {collection}"))
        }
        Command::Collection(CollectionCmd::Members { collection, add }) if !add.is_empty() => {
            ("collection-members", format!("collection {collection}"))
        }
        Command::Device(DeviceCmd::UseCertificate { device }) => {
            ("device-use-certificate", format!("device {device}"))
        }
        Command::Crl(CrlCmd::Add { file }) => ("crl-add", path(file)),
        Command::Update(UpdateCmd::Import { name, .. }) => ("update-import", name.clone()),
        Command::Update(UpdateCmd::Approve { updates, .. }) => {
            ("update-approve", updates.join(", "))
        }
        Command::Update(UpdateCmd::Rule(UpdateRuleCmd::Add { name, .. })) => {
            ("update-rule-add", name.clone())
        }
        Command::Admin(AdminCmd::Add { name, .. }) => {
            ("admin-add", format!("administrator {name}"))
        }
        Command::Admin(AdminCmd::Certificate { name, .. }) => {
            ("admin-certificate", format!("administrator {name}"))
        }
        Command::Admin(AdminCmd::Unpin { sha256, file }) => {
            ("admin-unpin", sha256.clone().or(file.as_deref().map(path)).unwrap_or_default())
        }
        Command::Admin(AdminCmd::Remove { name }) => {
            ("admin-remove", format!("administrator {name}"))
        }
        Command::ConfigItem(ConfigItemCmd::Add { file }) => ("config-item-add", path(file)),
        Command::ConfigPackage(ConfigPackageCmd::Add { source, .. }) => {
            ("config-package-add", path(source))
        }
        _ => return None,
    })
}

/// Records a change `dmmp` made on the machine outside the API's operations.
fn audit_local(cli: &Cli, action: &str, target: String, out: &Out) -> Result<()> {
    let (_, store) = open(cli)?;
    let user = std::env::var("USER").unwrap_or_else(|_| "an administrator".into());
    store.add_audit(&dm_mp::api::AuditEntry {
        id: 0,
        time: admin::now(),
        actor: format!("dmmp ({user})"),
        source: "dmmp".into(),
        action: action.into(),
        target,
        before: None,
        after: Some(dm_mp::api::ops::redacted(&out.json).to_string()),
    })?;
    Ok(())
}

/// Runs one command; `None` for `serve`, which prints as it goes.
fn run(cli: &Cli) -> Result<Option<Out>> {
    let out = run_command(cli)?;
    // Through the API, the server records what it did.
    if let (Some(out), Some((action, target)), None) =
        (&out, local_change(&cli.command), &cli.server)
    {
        audit_local(cli, action, target, out)?;
    }
    Ok(out)
}

/// Runs one command, as [`run`] records it.
fn run_command(cli: &Cli) -> Result<Option<Out>> {
    if let Some(op) = op_of(&cli.command)? {
        return run_op(cli, &op).map(Some);
    }
    if cli.server.is_some() {
        return match &cli.command {
            Command::Package(PackageCmd::Add { source: Some(bundle), .. }) => {
                client(cli)?.upload(bundle).map(Some)
            }
            _ => Err(Error::Usage(
                "with --server this command is not served by the management API: run it on the management point's machine (docs/management-api.md)".into(),
            )),
        };
    }
    Ok(Some(match &cli.command {
        Command::Init(a) => init(a)?,
        Command::Migrate { from, to, to_ca } => {
            admin::migrate::migrate(from, to, to_ca.as_deref())?
        }
        Command::Serve { role } if role == "distribution-point" => {
            dm_mp::dp::run(&cli.config)?;
            return Ok(None);
        }
        Command::Serve { .. } => {
            dm_mp::server::run(Config::load(&cli.config)?)?;
            return Ok(None);
        }
        Command::Package(c) => package(cli, c)?,
        Command::Collection(c) => collection(cli, c)?,
        Command::Device(c) => device(cli, c)?,
        Command::Crl(c) => crl(cli, c)?,
        Command::Report { name, advertisement, device, state, filter, sort, desc, csv: true } => {
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
            Out::new(r.csv(), r.json())
        }
        Command::Update(c) => update(cli, c)?,
        Command::Program(_)
        | Command::Rollout(_)
        | Command::Dp(_)
        | Command::Advertise(_)
        | Command::Advertisement(_)
        | Command::Status { .. }
        | Command::Token(_)
        | Command::Report { .. }
        | Command::Compliance { .. }
        | Command::Audit { .. } => return Err(through_op()),
        Command::Admin(c) => administrator(cli, c)?,
        Command::ConfigItem(c) => config_item(cli, c)?,
        Command::ConfigPackage(c) => config_package(cli, c)?,
    }))
}

fn update(cli: &Cli, cmd: &UpdateCmd) -> Result<Out> {
    use admin::updates as u;
    let (cfg, store) = open(cli)?;
    let now = admin::now();
    match cmd {
        UpdateCmd::Import {
            name,
            source,
            source_ca,
            suite,
            keyring,
            components,
            architectures,
            security,
        } => {
            let a = u::ImportArgs {
                name: name.clone(),
                source: source.clone(),
                source_ca: source_ca.clone(),
                suite: suite.clone(),
                keyring: keyring.clone(),
                components: components.clone(),
                architectures: architectures.clone(),
                security: *security,
            };
            u::import(&cfg, &*store, &a, now)
        }
        UpdateCmd::Repositories => u::repositories(&*store),
        UpdateCmd::List { package, approved, all_versions } => {
            u::list(&*store, package.as_deref(), *approved, *all_versions)
        }
        UpdateCmd::Approve { updates, security } => {
            u::approve(&cfg, &*store, updates, *security, now)
        }
        UpdateCmd::Rule(UpdateRuleCmd::Add { name, repository, security_only, sections }) => {
            u::rule_add(&*store, name, repository.as_deref(), *security_only, sections, now)
        }
        UpdateCmd::Rule(UpdateRuleCmd::List) => u::rule_list(&*store),
        UpdateCmd::Deploy { .. } | UpdateCmd::Deployments | UpdateCmd::Compliance { .. } => {
            Err(through_op())
        }
    }
}

fn administrator(cli: &Cli, cmd: &AdminCmd) -> Result<Out> {
    use admin::administrators as a;
    let (_, store) = open(cli)?;
    match cmd {
        AdminCmd::Add { name, password_file, role } => {
            let text = a::password_text(password_file.as_deref())?;
            let role = role.parse().map_err(Error::Usage)?;
            a::add_with_role(&*store, name, &text, role, admin::now())
        }
        AdminCmd::Certificate { name, file } => a::certificate(&*store, name, file, admin::now()),
        AdminCmd::Unpin { sha256, file } => a::unpin(&*store, sha256.as_deref(), file.as_deref()),
        AdminCmd::Remove { name } => a::remove(&*store, name),
        AdminCmd::List => a::list(&*store),
    }
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
    let serving = matches!(cli.command, Command::Serve { .. });
    let level = if std::env::var_os("DMMP_DEBUG").is_some() {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    dm_shared::logging::init_stderr(if serving { level } else { log::LevelFilter::Warn });
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
