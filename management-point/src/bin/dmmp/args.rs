//! `dmmp`'s command line: every command, its arguments and their help, as clap reads them.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// dmmp: the management point devices poll (hawkBit DDI over HTTPS), and its admin commands.
#[derive(Parser, Debug)]
#[command(name = "dmmp", version)]
pub struct Cli {
    /// The configuration file.
    #[arg(long, global = true, env = "DMMP_CONFIG", default_value = "dmmp.toml")]
    pub config: PathBuf,
    /// Print JSON for scripts instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    /// Run the command through this management point's API (`https://host:port`) instead of
    /// its database: devices, packages, programs, collections, advertisements, rollouts,
    /// tokens and the audit trail (docs/management-api.md).
    #[arg(long, global = true, env = "DMMP_SERVER")]
    pub server: Option<String>,
    /// The file holding the API token (`dmmp token create`), with `--server`.
    #[arg(long, global = true, env = "DMMP_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM roots the server's certificate must chain to, with `--server` (default: the
    /// system's).
    #[arg(long, global = true, env = "DMMP_SERVER_CA")]
    pub server_ca: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a configuration file and an empty database.
    Init(InitArgs),
    /// Serve devices until SIGTERM; prints "listening https://ADDR" when ready.
    Serve {
        /// management-point, or distribution-point: content only, copied from the management
        /// point named in --config's `[distribution_point]` (docs/distribution-points.md).
        #[arg(long, default_value = "management-point", value_parser = ["management-point", "distribution-point"])]
        role: String,
    },
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
    /// Software updates: the Debian update catalog, approvals, update deployments and
    /// compliance (docs/software-updates.md).
    #[command(subcommand)]
    Update(UpdateCmd),
    /// Phased rollouts: an advertisement released group by group, each gated on the
    /// previous group's confirmed successes (docs/rollouts.md).
    #[command(subcommand)]
    Rollout(RolloutCmd),
    /// Management API tokens (docs/management-api.md).
    #[command(subcommand)]
    Token(TokenCmd),
    /// Distribution points: packages copied near the devices, and their state
    /// (docs/distribution-points.md).
    #[command(subcommand)]
    Dp(DpCmd),
    /// The audit trail: every change, who made it, from where, before and after.
    Audit {
        /// From when (RFC 3339; default: the last day).
        #[arg(long)]
        since: Option<String>,
    },
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
    /// unhealthy-local, advertisement-devices, update-summary, update-compliance,
    /// device-updates.
    Report {
        /// The report.
        name: String,
        /// Only this advertisement (distribution-status, advertisement-devices).
        #[arg(long)]
        advertisement: Option<String>,
        /// Only this device (deployment-details; device-updates needs one).
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
pub enum AdminCmd {
    /// Add an administrator, or set the password of one: read from standard input (one
    /// line), or from --password-file.
    Add {
        /// The name they log in with.
        #[arg(long)]
        name: String,
        /// A file whose first line is the password.
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// What they may do in the console: read-only (pages), operator (also pause, resume,
        /// approve and stop rollouts) or administrator.
        #[arg(long, default_value = "administrator")]
        role: String,
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
    /// Unpin an administrator's client certificate: it opens nothing from the next request.
    Unpin {
        /// The certificate's SHA-256 (as `admin list` shows it).
        #[arg(long, conflicts_with = "file", required_unless_present = "file")]
        sha256: Option<String>,
        /// The certificate, PEM.
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// Remove an administrator: their password and pinned certificates; their sessions end
    /// within a second.
    Remove {
        /// The administrator.
        name: String,
    },
    /// List the administrators and their pinned certificates.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ConfigItemCmd {
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
pub enum ConfigPackageCmd {
    /// Import a signed configuration package (dmpack package --kind configuration --items).
    Add {
        /// The signed folder (or bundle).
        #[arg(long)]
        source: PathBuf,
        /// PEM roots its publisher must chain to.
        #[arg(long)]
        roots: PathBuf,
        /// An external HTTPS server this one does not manage that already holds its files
        /// (read-only; devices check every byte by hash and signature). Managed copies near
        /// the devices: `dmmp dp`.
        #[arg(long)]
        distribution_point: Option<String>,
    },
}

#[derive(Args, Debug)]
pub struct InitArgs {
    /// Folder for dmmp.toml, the database and package content.
    #[arg(long)]
    pub dir: PathBuf,
    /// Address and port to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub listen: SocketAddr,
    /// The base URL devices reach the server at (default: https://LISTEN).
    #[arg(long)]
    pub public_url: Option<String>,
    /// The server's PEM certificate chain.
    #[arg(long)]
    pub tls_cert: PathBuf,
    /// The server's PEM private key.
    #[arg(long)]
    pub tls_key: PathBuf,
    /// PEM roots of the device client certificates of the tenant DEFAULT (enables certificate
    /// authentication; other tenants' CAs are named in dmmp.toml's tenant_client_ca table).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
    /// register or refuse devices it has never seen.
    #[arg(long, default_value = "refuse", value_parser = ["register", "refuse"])]
    pub unknown_devices: String,
    /// A gateway token (at least 16 characters) accepted for any device.
    #[arg(long)]
    pub gateway_token: Option<String>,
    /// Seconds devices are told to sleep between polls.
    #[arg(long, default_value_t = 300)]
    pub poll_sleep: u64,
}

#[derive(Subcommand, Debug)]
pub enum PackageCmd {
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
        /// An external HTTPS server this one does not manage (such as nginx) that already
        /// holds the files, instead of this server (read-only; devices check every byte by
        /// hash and signature). Managed copies near the devices: `dmmp dp`.
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
pub enum ProgramCmd {
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
pub enum CollectionCmd {
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
    /// Set a collection's daily maintenance window in UTC, such as 22:00-04:00 (none given:
    /// clear it): its devices run advertisements without a window of their own, and install
    /// update deployments, only inside it, each at its own offset into its first half.
    Window {
        /// The collection (id or name).
        collection: String,
        /// HH:MM-HH:MM in UTC.
        window: Option<String>,
    },
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
pub struct AdvertiseArgs {
    /// The advertisement's name.
    #[arg(long)]
    pub name: String,
    /// The program (id or name).
    #[arg(long)]
    pub program: String,
    /// The collection (id or name).
    #[arg(long)]
    pub collection: String,
    /// Runs when due.
    #[arg(long, group = "kind")]
    pub mandatory: bool,
    /// Offered; runs when the device's user asks.
    #[arg(long, group = "kind")]
    pub available: bool,
    /// Downloaded, not run.
    #[arg(long, group = "kind")]
    pub download_only: bool,
    /// When it becomes due (RFC 3339; default now).
    #[arg(long)]
    pub start: Option<String>,
    /// When it expires (RFC 3339).
    #[arg(long)]
    pub expires: Option<String>,
    /// Daily window in UTC when mandatory programs may run, such as 22:00-04:00.
    #[arg(long)]
    pub maintenance_window: Option<String>,
    /// Whether a program that ran before on a device runs again: never (default), always,
    /// if-failed, if-succeeded.
    #[arg(long, default_value = "never")]
    pub rerun: String,
    /// Let devices take this version even when they have had a newer one.
    #[arg(long)]
    pub allow_downgrade: bool,
}

#[derive(Subcommand, Debug)]
pub enum AdvertisementCmd {
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
pub enum CrlCmd {
    /// Add a CA's revocation list (PEM or DER); devices fetch it at their next poll.
    Add {
        /// The CRL file.
        file: PathBuf,
    },
    /// List the revocation lists devices are given.
    List,
}

#[derive(Subcommand, Debug)]
pub enum DeviceCmd {
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
    /// Move a device registered with a target token to client certificates: its token is
    /// removed, and any certificate its tenant's device CA issued for it authenticates it.
    UseCertificate {
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

#[derive(Subcommand, Debug)]
pub enum UpdateCmd {
    /// Import a Debian repository's package versions into the catalog, its release file
    /// verified against a keyring.
    Import {
        /// The repository's name on the management point.
        #[arg(long)]
        name: String,
        /// The repository: its folder (holding dists/ and pool/), or its https:// URL.
        #[arg(long)]
        source: String,
        /// PEM roots an https source's certificate must chain to (default: the system's,
        /// /etc/ssl/certs/ca-certificates.crt).
        #[arg(long)]
        source_ca: Option<PathBuf>,
        /// The suite (dists/SUITE), such as bookworm-security.
        #[arg(long)]
        suite: String,
        /// The binary OpenPGP keyring its release file must be signed with (such as
        /// /usr/share/keyrings/debian-archive-keyring.gpg).
        #[arg(long)]
        keyring: PathBuf,
        /// A component to import (repeat; default: every one listed).
        #[arg(long = "component")]
        components: Vec<String>,
        /// An architecture to import (repeat; default: every one listed).
        #[arg(long = "arch")]
        architectures: Vec<String>,
        /// Count its updates as security updates whatever the suite says.
        #[arg(long)]
        security: bool,
    },
    /// The imported repositories.
    Repositories,
    /// The catalog's updates (the newest version of each package, unless --all-versions).
    List {
        /// Only this package (every version).
        #[arg(long)]
        package: Option<String>,
        /// Only approved updates.
        #[arg(long)]
        approved: bool,
        /// Superseded versions too.
        #[arg(long)]
        all_versions: bool,
    },
    /// Approve updates: their .deb files are copied and checked, then they may be deployed.
    Approve {
        /// Updates: an id, PACKAGE=VERSION, or PACKAGE (its newest version).
        updates: Vec<String>,
        /// Every security update not superseded.
        #[arg(long)]
        security: bool,
    },
    /// Approval rules: updates they match are approved as they are imported.
    #[command(subcommand)]
    Rule(UpdateRuleCmd),
    /// Deploy approved updates to a collection.
    Deploy {
        /// The deployment's name.
        #[arg(long)]
        name: String,
        /// The collection (id or name).
        #[arg(long)]
        collection: String,
        /// An update (repeat): an id, PACKAGE=VERSION, or PACKAGE.
        #[arg(long = "update")]
        updates: Vec<String>,
        /// The newest approved version of every package.
        #[arg(long)]
        all_approved: bool,
        /// The newest approved security updates.
        #[arg(long)]
        security: bool,
        /// From when devices may download (RFC 3339; default now).
        #[arg(long)]
        available: Option<String>,
        /// When devices install (RFC 3339; default: when available).
        #[arg(long)]
        deadline: Option<String>,
        /// Each device's deadline moves later by a random offset up to this (such as 30m,
        /// 2h, 1d; default 0).
        #[arg(long, default_value = "0")]
        spread: String,
        /// allow: restart after installing when an update asks for it; suppress: report it
        /// pending a reboot.
        #[arg(long, default_value = "suppress")]
        reboot: String,
        /// Daily window in UTC when devices install, such as 22:00-04:00 (they download
        /// whenever the deployment is available).
        #[arg(long)]
        maintenance_window: Option<String>,
        /// Offer it to no device until a rollout releases it group by group (`dmmp rollout
        /// create --update-deployment NAME`).
        #[arg(long)]
        held: bool,
    },
    /// The update deployments.
    Deployments,
    /// Which devices require, have installed, or do not need each update.
    Compliance {
        /// One update (id, PACKAGE=VERSION or PACKAGE).
        #[arg(long)]
        update: Option<String>,
        /// One device's updates (controller id or TENANT/ID).
        #[arg(long)]
        device: Option<String>,
        /// Only the devices of this collection.
        #[arg(long)]
        collection: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum UpdateRuleCmd {
    /// Add an approval rule.
    Add {
        /// Name.
        #[arg(long)]
        name: String,
        /// Only updates of this repository.
        #[arg(long)]
        repository: Option<String>,
        /// Only security updates.
        #[arg(long)]
        security_only: bool,
        /// Only updates of this section (repeat).
        #[arg(long = "section")]
        sections: Vec<String>,
    },
    /// List the approval rules.
    List,
}

#[derive(Args, Debug)]
pub struct RolloutCreateArgs {
    /// The rollout's name (its advertisement's too).
    #[arg(long)]
    pub name: String,
    /// The program (id or name): the rollout makes its advertisement.
    #[arg(
        long,
        required_unless_present = "update_deployment",
        conflicts_with = "update_deployment"
    )]
    pub program: Option<String>,
    /// A held software update deployment (id or name; `dmmp update deploy --held`) the
    /// rollout releases group by group.
    #[arg(long)]
    pub update_deployment: Option<String>,
    /// The collection (id or name); an update deployment's own by default.
    #[arg(long)]
    pub collection: Option<String>,
    /// The groups: cumulative percentages of the collection (1%,10%,50%,100%) or a group
    /// size (size:50).
    #[arg(long, default_value = "10%,50%,100%")]
    pub groups: String,
    /// Percent of a group that must be confirmed before the next group starts.
    #[arg(long, default_value_t = 95)]
    pub success_threshold: u8,
    /// Percent of a group whose failure pauses the rollout.
    #[arg(long, default_value_t = 10)]
    pub error_threshold: u8,
    /// Seconds a device must stay healthy and in touch after installing to count.
    #[arg(long, default_value_t = 600)]
    pub soak: i64,
    /// Seconds without a poll after which an installed device counts as failed.
    #[arg(long, default_value_t = 3600)]
    pub silent_after: i64,
    /// When it starts by itself (RFC 3339); default: at `dmmp rollout start`.
    #[arg(long)]
    pub start: Option<String>,
    /// An administrator approves it (`dmmp rollout approve`) before it can start.
    #[arg(long)]
    pub approval: bool,
    /// Devices that join the collection while it runs join the current group, at most this
    /// many a minute.
    #[arg(long, default_value_t = 60)]
    pub joins_per_minute: u32,
    /// Let devices take this version even when they have had a newer one.
    #[arg(long)]
    pub allow_downgrade: bool,
    /// On the error threshold, besides pausing, advertise this program (the previous
    /// version; a downgrade allowed, run again) to the failed group's devices.
    #[arg(long)]
    pub rollback_program: Option<String>,
    /// Daily window in UTC when devices install, such as 22:00-04:00 (they download whenever).
    #[arg(long)]
    pub maintenance_window: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum RolloutCmd {
    /// Create a rollout and its advertisement (mandatory).
    Create(RolloutCreateArgs),
    /// List rollouts.
    List,
    /// A rollout's groups, the devices behind its failures, and its log.
    Show {
        /// id or name.
        rollout: String,
    },
    /// Start a ready rollout now: its collection is cut into groups and group 1 released.
    Start {
        /// id or name.
        rollout: String,
    },
    /// Pause a running rollout: no further group is released.
    Pause {
        /// id or name.
        rollout: String,
    },
    /// Resume a paused rollout; the current group's failures so far count no more.
    Resume {
        /// id or name.
        rollout: String,
        /// Resume with this program instead (a fixed version): every device of the groups
        /// released so far gets it, failed ones too, and every failure counts again.
        #[arg(long)]
        program: Option<String>,
    },
    /// Stop a rollout for good.
    Stop {
        /// id or name.
        rollout: String,
    },
    /// Approve a rollout created with --approval.
    Approve {
        /// id or name.
        rollout: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum DpCmd {
    /// Register a distribution point; its credential is printed once.
    Add {
        /// Its name.
        #[arg(long)]
        name: String,
        /// Where devices reach it: https://HOST:PORT.
        #[arg(long)]
        url: String,
        /// Its site code: devices whose site code is this one use it.
        #[arg(long, default_value = "")]
        site: String,
        /// An address range (CIDR) of the devices that use it; repeat for more.
        #[arg(long = "boundary")]
        boundaries: Vec<String>,
        /// Copy from this distribution point (when it has the package) instead of the
        /// management point: a pull chain for remote sites.
        #[arg(long)]
        pull_from: Option<String>,
        /// KiB per second it copies at most (0: no limit).
        #[arg(long, default_value_t = 0)]
        rate_limit_kib: u64,
        /// Daily window in UTC in which it copies, such as 22:00-06:00.
        #[arg(long)]
        window: Option<String>,
    },
    /// List distribution points and their health.
    List,
    /// Forget a distribution point (gone, or its credential leaked): its credential and links
    /// stop working at once. To give it a new credential, retire it and add it again.
    Retire {
        /// Its name.
        dp: String,
    },
    /// Copy a package to distribution points.
    Distribute {
        /// The package: NAME@VERSION or id.
        package: String,
        /// A distribution point (or all); repeat for more.
        #[arg(long = "dp", required = true)]
        dps: Vec<String>,
    },
    /// Copy the newest version of a package to every distribution point holding an older one
    /// (and remove the older one there).
    Update {
        /// The package's name.
        package: String,
    },
    /// Copy a package again to distribution points.
    Refresh {
        /// The package: NAME@VERSION or id.
        package: String,
        /// A distribution point (or all); repeat for more.
        #[arg(long = "dp", required = true)]
        dps: Vec<String>,
    },
    /// Remove a package from distribution points.
    Remove {
        /// The package: NAME@VERSION or id.
        package: String,
        /// A distribution point (or all); repeat for more.
        #[arg(long = "dp", required = true)]
        dps: Vec<String>,
    },
    /// Rehash a package on distribution points now (corrupt or missing content is reported
    /// and copied again).
    Validate {
        /// The package: NAME@VERSION or id.
        package: String,
        /// A distribution point (or all); repeat for more.
        #[arg(long = "dp", required = true)]
        dps: Vec<String>,
    },
    /// Each package's state on each distribution point.
    Status {
        /// Only this package.
        #[arg(long)]
        package: Option<String>,
        /// Only this distribution point.
        #[arg(long)]
        dp: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum TokenCmd {
    /// Make a token; its secret is printed once and only its SHA-256 is kept.
    Create {
        /// Its name (in the audit trail).
        #[arg(long)]
        name: String,
        /// read-only, operator or administrator.
        #[arg(long)]
        role: String,
        /// How long it works (90d, 12h, 30m or seconds); default: until revoked.
        #[arg(long)]
        expires: Option<String>,
        /// The one tenant it sees: another tenant's devices, collections, advertisements and
        /// rollouts do not exist for it, and what spans tenants is refused.
        #[arg(long)]
        tenant: Option<String>,
    },
    /// The tokens (never their secrets).
    List,
    /// Revoke a token: refused from now on.
    Revoke {
        /// Its name.
        name: String,
    },
}
