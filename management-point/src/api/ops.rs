//! The administrative operations the management API serves and `dmmp` runs, one type for
//! both: `dmmp` builds an [`Op`] from its command line and runs it against the database, or,
//! with `--server`, sends it to the API ([`Op::request`]); the API builds the same [`Op`] from
//! the route and the JSON body ([`ROUTES`]) and runs it. Each says the role it needs and
//! whether it changes anything (then the audit trail records it, with who, from where, before
//! and after). The OpenAPI document is made from [`ROUTES`] (`openapi`).

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{ApiToken, AuditEntry, Role, TOKEN_PREFIX, token_hash};
use crate::admin::{self, Out};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::rollout::Command;
use crate::storage::Storage;

/// One administrative operation. The fields are what the route's path and JSON body say,
/// under the same names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Op {
    /// Every device.
    DeviceList {},
    /// One device, its inventory and its actions.
    DeviceShow {
        /// Controller id or `TENANT/ID`.
        device: String,
    },
    /// Registers a device with a target token (made when not given; answered once).
    DeviceAdd {
        /// Its controller id.
        id: String,
        /// Its tenant (the first served by default).
        #[serde(default)]
        tenant: Option<String>,
        /// Its target token.
        #[serde(default)]
        token: Option<String>,
    },
    /// Registers the devices of a CSV text (`controller_id,target_token` lines); known ones
    /// are left alone.
    DeviceImport {
        /// The CSV text.
        csv: String,
        /// Their tenant.
        #[serde(default)]
        tenant: Option<String>,
    },
    /// Approves a device that registered itself.
    DeviceApprove {
        /// Controller id or `TENANT/ID`.
        device: String,
    },
    /// Revokes a device: it is refused from now on.
    DeviceRevoke {
        /// Controller id or `TENANT/ID`.
        device: String,
    },
    /// Every package.
    PackageList {},
    /// Every program.
    ProgramList {},
    /// Adds a program of a package (one its publisher signed).
    ProgramAdd {
        /// The package (`name@version` or id).
        package: String,
        /// The program's name.
        name: String,
        /// The signed program it runs (default: `name`).
        #[serde(default)]
        signed_program: Option<String>,
        /// The command, checked against the signed one.
        #[serde(default)]
        command: Option<String>,
        /// Platforms it is narrowed to.
        #[serde(default)]
        platforms: Vec<String>,
        /// A shorter maximum run time.
        #[serde(default)]
        max_run_time: Option<u64>,
        /// `mobile` or `desktop`.
        #[serde(default)]
        device_class: Option<String>,
    },
    /// Every collection.
    CollectionList {},
    /// Adds a collection.
    CollectionAdd {
        /// Its name.
        name: String,
        /// Its rule (`all`, `platform=…`, `explicit`, …).
        rule: String,
        /// Its tenant.
        #[serde(default = "default_tenant")]
        tenant: String,
    },
    /// Every advertisement.
    AdvertisementList {},
    /// Advertises a program to a collection.
    Advertise {
        /// The advertisement's name.
        name: String,
        /// The program.
        program: String,
        /// The collection.
        collection: String,
        /// `mandatory` (default), `available` or `download-only`.
        #[serde(default = "mandatory")]
        kind: String,
        /// When it becomes due (RFC 3339; default now).
        #[serde(default)]
        start: Option<String>,
        /// When it expires (RFC 3339).
        #[serde(default)]
        expires: Option<String>,
        /// The daily window in UTC (`22:00-04:00`).
        #[serde(default)]
        maintenance_window: Option<String>,
        /// `never` (default), `always`, `if-failed`, `if-succeeded`.
        #[serde(default = "never")]
        rerun: String,
        /// Whether an older version than a device had is allowed.
        #[serde(default)]
        allow_downgrade: bool,
    },
    /// An advertisement's devices and their actions.
    AdvertisementStatus {
        /// Its name or id.
        advertisement: String,
    },
    /// Cancels an advertisement.
    AdvertisementCancel {
        /// Its name or id.
        advertisement: String,
    },
    /// Approves a software update of the catalog (its `.deb` is fetched and kept).
    UpdateApprove {
        /// An id, `PACKAGE=VERSION`, or `PACKAGE` (its newest version).
        update: String,
    },
    /// Makes an update deployment of approved updates.
    UpdateDeploy {
        /// Its name.
        name: String,
        /// The collection.
        collection: String,
        /// Updates: ids, `PACKAGE=VERSION` or `PACKAGE`.
        #[serde(default)]
        updates: Vec<String>,
        /// The newest approved version of every package.
        #[serde(default)]
        all_approved: bool,
        /// The newest approved security updates.
        #[serde(default)]
        security: bool,
        /// From when devices may download (RFC 3339; default now).
        #[serde(default)]
        available: Option<String>,
        /// When devices install (RFC 3339; default when available).
        #[serde(default)]
        deadline: Option<String>,
        /// Each device's deadline later by up to this (`2h`, `1d`; default 0).
        #[serde(default)]
        spread: Option<String>,
        /// `allow` or `suppress` (default).
        #[serde(default)]
        reboot: Option<String>,
        /// The daily window in UTC.
        #[serde(default)]
        maintenance_window: Option<String>,
        /// Offered to no device until a rollout releases it.
        #[serde(default)]
        held: bool,
    },
    /// Every update deployment.
    UpdateDeployments {},
    /// Software update compliance: the summary and each update, or one device's.
    UpdateCompliance {
        /// One update.
        #[serde(default)]
        update: Option<String>,
        /// One device.
        #[serde(default)]
        device: Option<String>,
        /// One collection's devices.
        #[serde(default)]
        collection: Option<String>,
    },
    /// Configuration baseline compliance.
    Compliance {
        /// One device.
        #[serde(default)]
        device: Option<String>,
        /// One advertisement's devices and items.
        #[serde(default)]
        advertisement: Option<String>,
    },
    /// A report (docs/health.md), a page at a time as the console's JSON.
    Report {
        /// Its name.
        name: String,
        /// One advertisement.
        #[serde(default)]
        advertisement: Option<String>,
        /// One device.
        #[serde(default)]
        device: Option<String>,
        /// One distribution state.
        #[serde(default)]
        state: Option<String>,
        /// Rows holding this text.
        #[serde(default)]
        filter: Option<String>,
        /// The column to sort by.
        #[serde(default)]
        sort: Option<String>,
        /// `desc` for largest first.
        #[serde(default)]
        dir: Option<String>,
        /// The most rows (1 to 1000; default every row).
        #[serde(default)]
        limit: Option<String>,
        /// A page starts after this device: its tenant,
        #[serde(default)]
        after_tenant: Option<String>,
        /// and its controller id (the previous answer's `next`).
        #[serde(default)]
        after: Option<String>,
        /// A sorted page starts after this many rows.
        #[serde(default)]
        offset: Option<String>,
    },
    /// Makes a rollout of a program, or of a held update deployment.
    RolloutCreate {
        /// Its name.
        name: String,
        /// The program, or
        #[serde(default)]
        program: Option<String>,
        /// the held update deployment.
        #[serde(default)]
        update_deployment: Option<String>,
        /// The collection (a program's).
        #[serde(default)]
        collection: Option<String>,
        /// `1%,10%,50%,100%` or `size:N` (default `10%,50%,100%`).
        #[serde(default)]
        groups: Option<String>,
        /// Percent confirmed before the next group (default 95).
        #[serde(default)]
        success_threshold: Option<u8>,
        /// Percent failed that pauses (default 10).
        #[serde(default)]
        error_threshold: Option<u8>,
        /// Seconds of soak (default 600).
        #[serde(default)]
        soak: Option<i64>,
        /// Seconds of silence after installing that fail a device (default 3600).
        #[serde(default)]
        silent_after: Option<i64>,
        /// When it starts by itself (RFC 3339).
        #[serde(default)]
        start: Option<String>,
        /// Whether it waits for approval.
        #[serde(default)]
        approval: bool,
        /// Joiners a minute (default 60).
        #[serde(default)]
        joins_per_minute: Option<u32>,
        /// Whether an older version is allowed.
        #[serde(default)]
        allow_downgrade: bool,
        /// The previous version's program, to roll a failed group back to.
        #[serde(default)]
        rollback_program: Option<String>,
        /// The daily window in UTC.
        #[serde(default)]
        maintenance_window: Option<String>,
    },
    /// Every rollout.
    RolloutList {},
    /// A rollout's groups, failures, log and progress.
    RolloutShow {
        /// Its name or id.
        rollout: String,
    },
    /// Approves, starts, pauses, resumes or stops a rollout.
    RolloutAct {
        /// Its name or id.
        rollout: String,
        /// `approve`, `start`, `pause`, `resume` or `stop`.
        action: String,
        /// With `resume`: the fixed version's program.
        #[serde(default)]
        program: Option<String>,
    },
    /// Every distribution point and its health.
    DpList {},
    /// Registers a distribution point; its credential is answered once.
    DpAdd {
        /// Its name.
        name: String,
        /// Where devices reach it (`https://host:port`).
        url: String,
        /// Its site code.
        #[serde(default)]
        site: String,
        /// The address ranges (CIDR) of its devices.
        #[serde(default)]
        boundaries: Vec<String>,
        /// The distribution point it copies from.
        #[serde(default)]
        pull_from: Option<String>,
        /// KiB per second it copies at most (0: no limit).
        #[serde(default)]
        rate_limit_kib: u64,
        /// Its daily copy window in UTC (`22:00-06:00`).
        #[serde(default)]
        window: Option<String>,
    },
    /// Forgets a distribution point: its credential stops working, its rows go.
    DpRetire {
        /// Its name.
        dp: String,
    },
    /// Distributes, updates, refreshes, removes or validates a package on distribution points.
    DpAct {
        /// The package (`name@version` or id; `update`: its name).
        package: String,
        /// `distribute`, `update`, `refresh`, `remove` or `validate`.
        action: String,
        /// The distribution points (`all`: every one); not with `update`.
        #[serde(default)]
        dps: Vec<String>,
    },
    /// Each package's state on each distribution point.
    DpStatus {
        /// Only this package.
        #[serde(default)]
        package: Option<String>,
        /// Only this distribution point.
        #[serde(default)]
        dp: Option<String>,
    },
    /// The audit trail from a time on.
    Audit {
        /// RFC 3339 or Unix seconds (default: the last day).
        #[serde(default)]
        since: Option<String>,
    },
    /// Every API token (never their secrets).
    TokenList {},
    /// Makes an API token; its secret is answered once.
    TokenCreate {
        /// Its name.
        name: String,
        /// `read-only`, `operator` or `administrator`.
        role: String,
        /// How long it works (`90d`, `12h`, seconds); default: until revoked.
        #[serde(default)]
        expires: Option<String>,
        /// The one tenant it sees (default: every tenant).
        #[serde(default)]
        tenant: Option<String>,
    },
    /// Revokes an API token.
    TokenRevoke {
        /// Its name.
        name: String,
    },
}

fn default_tenant() -> String {
    "DEFAULT".into()
}

fn mandatory() -> String {
    "mandatory".into()
}

fn never() -> String {
    "never".into()
}

/// What an operation runs with.
pub struct Cx<'a> {
    /// The management point's configuration.
    pub cfg: &'a Config,
    /// Its store.
    pub store: &'a dyn Storage,
    /// Who asks, for the audit trail and rollout logs (`token ci`, `dmmp (root)`).
    pub actor: &'a str,
    /// From where (an address, or `dmmp`).
    pub source: &'a str,
    /// Now (Unix seconds).
    pub now: i64,
    /// The one tenant the caller sees, for a token scoped to it.
    pub tenant: Option<&'a str>,
}

/// A route of the management API: the method, the path (its `{…}` parts are fields of the
/// operation), the operation, the role it needs, and what it does.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// Below the server's root, such as `/api/v1/devices/{device}`.
    pub path: &'static str,
    /// The operation's name (`device-show`).
    pub op: &'static str,
    /// The role it needs.
    pub role: Role,
    /// What it does, for the OpenAPI document.
    pub summary: &'static str,
}

const fn route(
    method: &'static str,
    path: &'static str,
    op: &'static str,
    role: Role,
    summary: &'static str,
) -> Route {
    Route { method, path, op, role, summary }
}

/// The operation that uploads a package (a `.dmpkg` bundle as the body), which is no [`Op`]:
/// a path on the server is never something a client names.
pub const PACKAGE_UPLOAD: &str = "package-upload";

/// Every route of the management API but the OpenAPI document itself.
pub const ROUTES: &[Route] = &[
    route("GET", "/api/v1/devices", "device-list", Role::ReadOnly, "List devices"),
    route("POST", "/api/v1/devices", "device-add", Role::Operator, "Register a device"),
    route(
        "POST",
        "/api/v1/devices/import",
        "device-import",
        Role::Operator,
        "Register the devices of a CSV text",
    ),
    route("GET", "/api/v1/devices/{device}", "device-show", Role::ReadOnly, "Show a device"),
    route(
        "POST",
        "/api/v1/devices/{device}/approve",
        "device-approve",
        Role::Operator,
        "Approve a device",
    ),
    route(
        "POST",
        "/api/v1/devices/{device}/revoke",
        "device-revoke",
        Role::Administrator,
        "Revoke a device",
    ),
    route("GET", "/api/v1/packages", "package-list", Role::ReadOnly, "List packages"),
    route(
        "POST",
        "/api/v1/packages",
        PACKAGE_UPLOAD,
        Role::Operator,
        "Upload a signed package (.dmpkg bundle); verified as `dmmp package add` does",
    ),
    route("GET", "/api/v1/programs", "program-list", Role::ReadOnly, "List programs"),
    route("POST", "/api/v1/programs", "program-add", Role::Operator, "Add a program"),
    route("GET", "/api/v1/collections", "collection-list", Role::ReadOnly, "List collections"),
    route("POST", "/api/v1/collections", "collection-add", Role::Operator, "Add a collection"),
    route(
        "GET",
        "/api/v1/advertisements",
        "advertisement-list",
        Role::ReadOnly,
        "List advertisements",
    ),
    route("POST", "/api/v1/advertisements", "advertise", Role::Operator, "Advertise a program"),
    route(
        "GET",
        "/api/v1/advertisements/{advertisement}/status",
        "advertisement-status",
        Role::ReadOnly,
        "An advertisement's devices and actions",
    ),
    route(
        "POST",
        "/api/v1/advertisements/{advertisement}/cancel",
        "advertisement-cancel",
        Role::Operator,
        "Cancel an advertisement",
    ),
    route(
        "POST",
        "/api/v1/updates/{update}/approve",
        "update-approve",
        Role::Operator,
        "Approve a software update",
    ),
    route(
        "GET",
        "/api/v1/update-deployments",
        "update-deployments",
        Role::ReadOnly,
        "List update deployments",
    ),
    route(
        "POST",
        "/api/v1/update-deployments",
        "update-deploy",
        Role::Operator,
        "Make an update deployment",
    ),
    route(
        "GET",
        "/api/v1/compliance/updates",
        "update-compliance",
        Role::ReadOnly,
        "Software update compliance",
    ),
    route(
        "GET",
        "/api/v1/compliance/baselines",
        "compliance",
        Role::ReadOnly,
        "Configuration baseline compliance",
    ),
    route("GET", "/api/v1/reports/{name}", "report", Role::ReadOnly, "A report, a page at a time"),
    route("GET", "/api/v1/rollouts", "rollout-list", Role::ReadOnly, "List rollouts"),
    route("POST", "/api/v1/rollouts", "rollout-create", Role::Operator, "Make a rollout"),
    route("GET", "/api/v1/rollouts/{rollout}", "rollout-show", Role::ReadOnly, "Show a rollout"),
    route(
        "POST",
        "/api/v1/rollouts/{rollout}/{action}",
        "rollout-act",
        Role::Operator,
        "Approve, start, pause, resume or stop a rollout",
    ),
    route(
        "GET",
        "/api/v1/distribution-points",
        "dp-list",
        Role::ReadOnly,
        "List distribution points",
    ),
    route(
        "POST",
        "/api/v1/distribution-points",
        "dp-add",
        Role::Administrator,
        "Register a distribution point",
    ),
    route(
        "POST",
        "/api/v1/distribution-points/{dp}/retire",
        "dp-retire",
        Role::Administrator,
        "Retire a distribution point",
    ),
    route(
        "GET",
        "/api/v1/distribution-points/status",
        "dp-status",
        Role::ReadOnly,
        "Packages on distribution points",
    ),
    route(
        "POST",
        "/api/v1/packages/{package}/distribution/{action}",
        "dp-act",
        Role::Operator,
        "Distribute, update, refresh, remove or validate a package on distribution points",
    ),
    route("GET", "/api/v1/audit", "audit", Role::ReadOnly, "The audit trail"),
    route("GET", "/api/v1/tokens", "token-list", Role::Administrator, "List API tokens"),
    route("POST", "/api/v1/tokens", "token-create", Role::Administrator, "Make an API token"),
    route(
        "POST",
        "/api/v1/tokens/{name}/revoke",
        "token-revoke",
        Role::Administrator,
        "Revoke an API token",
    ),
];

/// The route of operation `op`.
pub fn route_of(op: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|r| r.op == op)
}

impl Op {
    /// Its name (`device-show`), as routes and the audit trail say.
    pub fn name(&self) -> String {
        match serde_json::to_value(self) {
            Ok(v) => v["op"].as_str().unwrap_or("?").to_string(),
            Err(_) => "?".into(),
        }
    }

    /// The role it needs.
    pub fn role(&self) -> Role {
        route_of(&self.name()).map_or(Role::Administrator, |r| r.role)
    }

    /// Whether it changes anything (the audit trail records those).
    pub fn changes(&self) -> bool {
        route_of(&self.name()).is_some_and(|r| r.method == "POST")
    }

    /// The operation a route asks for: its path's parts and the JSON body's fields, under
    /// the operation's field names.
    pub fn from_route(
        r: &Route,
        params: impl IntoIterator<Item = (String, String)>,
        body: Value,
    ) -> std::result::Result<Op, String> {
        let mut fields = match body {
            Value::Object(m) => m,
            Value::Null => serde_json::Map::new(),
            _ => return Err("the body is a JSON object".into()),
        };
        for (k, v) in params {
            fields.insert(k, Value::String(v));
        }
        fields.insert("op".into(), Value::String(r.op.into()));
        serde_json::from_value(Value::Object(fields)).map_err(|e| e.to_string())
    }

    /// The request that asks the API for it: the method, the path (its parts filled and
    /// escaped) and the JSON body (the fields the path does not hold).
    pub fn request(&self) -> Result<(&'static str, String, Value)> {
        let name = self.name();
        let r = route_of(&name)
            .ok_or_else(|| Error::Usage(format!("{name} is not served by the management API")))?;
        let Value::Object(mut fields) = serde_json::to_value(self).unwrap_or_default() else {
            return Err(Error::Usage(format!("{name} cannot be sent")));
        };
        fields.remove("op");
        let mut path = String::new();
        for part in r.path.split('/').filter(|p| !p.is_empty()) {
            path.push('/');
            match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(key) => {
                    let v = fields.remove(key).unwrap_or_default();
                    let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
                    path.push_str(&crate::server::http::encode_segment(&v));
                }
                None => path.push_str(part),
            }
        }
        if r.method != "GET" {
            return Ok((r.method, path, Value::Object(fields)));
        }
        // A GET's other fields go in the query string (none are empty or null).
        let mut sep = '?';
        for (k, v) in fields {
            let v = match v {
                Value::Null => continue,
                Value::String(s) => s,
                other => other.to_string(),
            };
            path.push(sep);
            path.push_str(&crate::server::http::encode_segment(&k));
            path.push('=');
            path.push_str(&crate::server::http::encode_segment(&v));
            sep = '&';
        }
        Ok((r.method, path, Value::Null))
    }

    /// What it is done to, for the audit trail.
    pub fn target(&self) -> String {
        match self {
            Op::DeviceShow { device }
            | Op::DeviceApprove { device }
            | Op::DeviceRevoke { device } => format!("device {device}"),
            Op::DeviceAdd { id, .. } => format!("device {id}"),
            Op::ProgramAdd { name, .. } => format!("program {name}"),
            Op::CollectionAdd { name, .. } => format!("collection {name}"),
            Op::Advertise { name, .. } => format!("advertisement {name}"),
            Op::AdvertisementStatus { advertisement }
            | Op::AdvertisementCancel { advertisement } => {
                format!("advertisement {advertisement}")
            }
            Op::RolloutShow { rollout } | Op::RolloutAct { rollout, .. } => {
                format!("rollout {rollout}")
            }
            Op::TokenCreate { name, .. } | Op::TokenRevoke { name } => format!("token {name}"),
            Op::UpdateApprove { update } => format!("update {update}"),
            Op::UpdateDeploy { name, .. } => format!("update deployment {name}"),
            Op::RolloutCreate { name, .. } => format!("rollout {name}"),
            Op::DpAdd { name, .. } => format!("distribution point {name}"),
            Op::DpRetire { dp } => format!("distribution point {dp}"),
            Op::DpAct { package, .. } => format!("package {package}"),
            Op::DeviceImport { tenant, .. } => {
                format!("devices of tenant {}", tenant.as_deref().unwrap_or("(default)"))
            }
            _ => String::new(),
        }
    }

    /// Runs it, and records it in the audit trail when it changed something.
    pub fn run(&self, cx: &Cx<'_>) -> Result<Out> {
        if let Some(t) = cx.tenant {
            self.within_tenant(cx.store, t)?;
        }
        // The name costs a serialization of the whole operation (an import's CSV): once.
        let name = self.name();
        let changes = route_of(&name).is_some_and(|r| r.method == "POST");
        let before = if changes { self.before(cx) } else { None };
        let out = self.execute(cx)?;
        if changes {
            let e = AuditEntry {
                id: 0,
                time: cx.now,
                actor: cx.actor.to_string(),
                source: cx.source.to_string(),
                action: name,
                target: self.target(),
                before: before.map(|b| b.to_string()),
                after: Some(redacted(&out.json).to_string()),
            };
            cx.store.add_audit(&e)?;
            log::info!("{} from {}: {} {}", e.actor, e.source, e.action, e.target);
        }
        Ok(out)
    }

    /// For a caller that sees one tenant: whether what it names is that tenant's. Another
    /// tenant's device, collection, advertisement or rollout is answered as if it did not
    /// exist; what spans tenants (packages and programs added, the audit trail, tokens) is
    /// refused. Lists are filtered where they are made.
    fn within_tenant(&self, store: &dyn Storage, t: &str) -> Result<()> {
        let mine = |tenant: Option<String>, what: String| {
            if tenant.as_deref() == Some(t) { Ok(()) } else { Err(Error::NotFound(what)) }
        };
        let collection_tenant = |id: i64| -> Result<Option<String>> {
            Ok(store.collections()?.into_iter().find(|c| c.id == id).map(|c| c.tenant))
        };
        match self {
            Op::DeviceList {}
            | Op::CollectionList {}
            | Op::AdvertisementList {}
            | Op::RolloutList {}
            | Op::PackageList {}
            | Op::ProgramList {} => Ok(()),
            Op::DeviceShow { device }
            | Op::DeviceApprove { device }
            | Op::DeviceRevoke { device } => {
                let d = admin::find_device(store, device).ok();
                mine(d.map(|d| d.tenant), format!("device {device}"))
            }
            Op::DeviceAdd { tenant: Some(other), .. } | Op::CollectionAdd { tenant: other, .. }
                if other != t =>
            {
                Err(Error::Unauthorized(format!(
                    "a token of tenant {t} adds only to tenant {t}, not {other}"
                )))
            }
            Op::DeviceAdd { tenant: None, .. } => Err(Error::Usage(format!(
                "a token of tenant {t} names the tenant of a device it adds: {t}"
            ))),
            Op::DeviceAdd { .. } | Op::CollectionAdd { .. } => Ok(()),
            Op::Advertise { collection, .. } => {
                let c = admin::find_collection(store, collection).ok();
                mine(c.map(|c| c.tenant), format!("collection {collection}"))
            }
            Op::AdvertisementStatus { advertisement }
            | Op::AdvertisementCancel { advertisement } => {
                let tenant = match admin::find_advertisement(store, advertisement) {
                    Ok(a) => collection_tenant(a.collection_id)?,
                    Err(_) => None,
                };
                mine(tenant, format!("advertisement {advertisement}"))
            }
            Op::RolloutShow { rollout } | Op::RolloutAct { rollout, .. } => {
                let tenant = match admin::rollouts::find(store, rollout) {
                    Ok(r) => admin::rollouts::tenant_of(store, &r)?,
                    Err(_) => None,
                };
                mine(tenant, format!("rollout {rollout}"))
            }
            other => Err(Error::Unauthorized(format!(
                "a token of tenant {t} cannot {}: it spans tenants",
                other.name()
            ))),
        }
    }

    /// The object as it was before a change, when there was one.
    fn before(&self, cx: &Cx<'_>) -> Option<Value> {
        let store = cx.store;
        match self {
            Op::DeviceApprove { device } | Op::DeviceRevoke { device } => {
                admin::find_device(store, device).ok().map(|d| json!(d))
            }
            Op::AdvertisementCancel { advertisement } => {
                admin::find_advertisement(store, advertisement).ok().map(|a| json!(a))
            }
            Op::RolloutAct { rollout, .. } => {
                admin::rollouts::find(store, rollout).ok().map(|r| json!(r))
            }
            Op::TokenRevoke { name } => {
                store.api_tokens().ok()?.into_iter().find(|t| &t.name == name).map(|t| json!(t))
            }
            _ => None,
        }
    }

    fn execute(&self, cx: &Cx<'_>) -> Result<Out> {
        use crate::admin::{devices, packages, rollouts, targeting};
        let (cfg, store, now) = (cx.cfg, cx.store, cx.now);
        match self {
            Op::DeviceList {} => devices::device_list(store, cx.tenant),
            Op::DeviceShow { device } => devices::device_show(store, device),
            Op::DeviceAdd { id, tenant, token } => {
                devices::device_add(cfg, store, id, tenant.as_deref(), token.as_deref(), now)
            }
            Op::DeviceImport { csv, tenant } => {
                devices::device_import_text(cfg, store, csv, "the CSV", tenant.as_deref(), now)
            }
            Op::DeviceApprove { device } => devices::device_approve(cfg, store, device),
            Op::DeviceRevoke { device } => devices::device_revoke(store, device, now),
            Op::PackageList {} => packages::package_list(store),
            Op::ProgramList {} => packages::program_list(store),
            Op::ProgramAdd {
                package,
                name,
                signed_program,
                command,
                platforms,
                max_run_time,
                device_class,
            } => packages::program_add(
                store,
                &packages::ProgramSpec {
                    package: package.clone(),
                    name: name.clone(),
                    signed_program: signed_program.clone(),
                    command: command.clone(),
                    platforms: platforms.clone(),
                    max_run_time: *max_run_time,
                    device_class: device_class.clone(),
                },
            ),
            Op::CollectionList {} => targeting::collection_list(store, cx.tenant),
            Op::CollectionAdd { name, rule, tenant } => {
                targeting::collection_add(cfg, store, name, tenant, rule)
            }
            Op::AdvertisementList {} => targeting::advertisement_list(store, now, cx.tenant),
            Op::Advertise {
                name,
                program,
                collection,
                kind,
                start,
                expires,
                maintenance_window,
                rerun,
                allow_downgrade,
            } => {
                let spec = targeting::AdvertiseSpec {
                    name: name.clone(),
                    program: program.clone(),
                    collection: collection.clone(),
                    kind: kind.parse().map_err(Error::Usage)?,
                    start: start.clone(),
                    expires: expires.clone(),
                    maintenance_window: maintenance_window.clone(),
                    rerun: rerun.parse().map_err(Error::Usage)?,
                    allow_downgrade: *allow_downgrade,
                };
                targeting::advertise(store, &spec, now)
            }
            Op::AdvertisementStatus { advertisement } => {
                let a = admin::find_advertisement(store, advertisement)?;
                targeting::advertisement_status(store, &a)
            }
            Op::AdvertisementCancel { advertisement } => {
                targeting::advertisement_cancel(store, advertisement, now)
            }
            Op::UpdateApprove { update } => {
                crate::admin::updates::approve(cfg, store, std::slice::from_ref(update), false, now)
            }
            Op::UpdateDeploy {
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
            } => {
                let time =
                    |t: &Option<String>, flag| t.as_deref().map(|t| admin::time_arg(t, flag));
                let available = time(available, "available").transpose()?.unwrap_or(now);
                let a = crate::admin::updates::DeployArgs {
                    name: name.clone(),
                    collection: collection.clone(),
                    updates: updates.clone(),
                    all_approved: *all_approved,
                    security: *security,
                    available,
                    deadline: time(deadline, "deadline").transpose()?.unwrap_or(available),
                    spread: spread.as_deref().map(duration).transpose()?.unwrap_or(0),
                    reboot: crate::model::updates::RebootPolicy::parse(
                        reboot.as_deref().unwrap_or("suppress"),
                    )
                    .map_err(|e| Error::Usage(format!("--reboot: {e}")))?,
                    window: maintenance_window
                        .as_deref()
                        .map(crate::model::MaintenanceWindow::parse)
                        .transpose()
                        .map_err(Error::Usage)?,
                    held: *held,
                };
                crate::admin::updates::deploy(store, &a, now)
            }
            Op::UpdateDeployments {} => crate::admin::updates::deployments(store),
            Op::UpdateCompliance { update, device, collection } => {
                crate::admin::update_compliance::compliance(
                    store,
                    update.as_deref(),
                    device.as_deref(),
                    collection.as_deref(),
                )
            }
            Op::Compliance { device, advertisement } => {
                crate::admin::config::compliance(store, device.as_deref(), advertisement.as_deref())
            }
            Op::Report { .. } => self.report(cx),
            Op::RolloutCreate { .. } => self.rollout_create(store, now),
            Op::RolloutList {} => rollouts::list(store, cx.tenant),
            Op::RolloutShow { rollout } => rollouts::show(store, rollout, now),
            Op::RolloutAct { rollout, action, program } => {
                let cmd = command_of(action)?;
                match (cmd, program) {
                    (Command::Resume, Some(p)) => {
                        rollouts::resume_with(store, rollout, p, cx.actor, now)
                    }
                    (_, Some(_)) => Err(Error::Usage("only resume takes a program".into())),
                    (cmd, None) => rollouts::act(store, rollout, cmd, cx.actor, now),
                }
            }
            Op::DpList {}
            | Op::DpAdd { .. }
            | Op::DpAct { .. }
            | Op::DpRetire { .. }
            | Op::DpStatus { .. } => self.distribution(cx),
            Op::Audit { since } => {
                let since = match since.as_deref() {
                    None => now - 86_400,
                    Some(s) => match s.parse::<i64>() {
                        Ok(t) => t,
                        Err(_) => admin::time_arg(s, "since")?,
                    },
                };
                audit(store, since)
            }
            Op::TokenList {} => token_list(store),
            Op::TokenCreate { name, role, expires, tenant } => {
                token_create(cfg, store, name, role, expires.as_deref(), tenant.as_deref(), now)
            }
            Op::TokenRevoke { name } => {
                if !store.revoke_api_token(name, now)? {
                    return Err(Error::NotFound(format!("a usable token named {name}")));
                }
                Ok(Out::new(format!("token {name} revoked\n"), json!({"revoked": name})))
            }
        }
    }
}

impl Op {
    /// A report, a page at a time (`limit`, then `after_tenant`/`after` or `offset` from the
    /// answer's `next`), as the console's JSON.
    fn report(&self, cx: &Cx<'_>) -> Result<Out> {
        let Op::Report {
            name,
            advertisement,
            device,
            state,
            filter,
            sort,
            dir,
            limit,
            after_tenant,
            after,
            offset,
        } = self
        else {
            return Err(Error::Usage("not a report".into()));
        };
        let number = |v: &Option<String>, what: &str| -> Result<Option<usize>> {
            v.as_deref()
                .map(|n| {
                    n.parse::<usize>()
                        .map_err(|_| Error::Usage(format!("{what} {n:?} is not a number")))
                })
                .transpose()
        };
        let limit = number(limit, "limit")?;
        if limit.is_some_and(|l| !(1..=1000).contains(&l)) {
            return Err(Error::Usage("limit is 1 to 1000".into()));
        }
        let tenant = after_tenant.clone().unwrap_or_else(|| crate::config::DEFAULT_TENANT.into());
        let o = crate::reports::Options {
            advertisement: advertisement.clone(),
            device: device.clone(),
            state: state.clone(),
            filter: filter.clone(),
            sort: sort.clone(),
            desc: dir.as_deref() == Some("desc"),
            page: crate::reports::Paging {
                after: after.clone().map(|a| (tenant, a)),
                offset: number(offset, "offset")?.unwrap_or(0),
                limit,
            },
        };
        let r = crate::reports::build(cx.store, cx.cfg, name, cx.now, &o)?;
        Ok(Out::new(r.text(), r.json()))
    }

    /// The distribution point operations (docs/distribution-points.md).
    fn distribution(&self, cx: &Cx<'_>) -> Result<Out> {
        let (store, now) = (cx.store, cx.now);
        match self {
            Op::DpList {} => admin::dps::list(store, now, cx.cfg.distribution.silent_after()),
            Op::DpAdd { name, url, site, boundaries, pull_from, rate_limit_kib, window } => {
                let new = admin::dps::NewDp {
                    name,
                    url,
                    site,
                    boundaries,
                    pull_from: pull_from.as_deref(),
                    rate_limit_kib: *rate_limit_kib,
                    window: window.as_deref(),
                };
                admin::dps::add(store, &new, now)
            }
            Op::DpAct { package, action, dps } => match action.as_str() {
                "distribute" => admin::dps::distribute(store, package, dps, now),
                "update" if dps.is_empty() => admin::dps::update(store, package, now),
                "update" => Err(Error::Usage(
                    "update copies to every distribution point holding the package: it names none"
                        .into(),
                )),
                "refresh" => admin::dps::refresh(store, package, dps, now),
                "remove" => admin::dps::remove(store, package, dps, now),
                "validate" => admin::dps::validate(store, package, dps),
                other => Err(Error::Usage(format!(
                    "{other:?}: distribute, update, refresh, remove or validate"
                ))),
            },
            Op::DpRetire { dp } => admin::dps::retire(store, dp),
            Op::DpStatus { package, dp } => {
                admin::dps::status(store, package.as_deref(), dp.as_deref())
            }
            _ => {
                Err(Error::Usage(format!("{} is not a distribution point operation", self.name())))
            }
        }
    }

    /// `dmmp rollout create`, with its defaults.
    fn rollout_create(&self, store: &dyn Storage, now: i64) -> Result<Out> {
        let Op::RolloutCreate {
            name,
            program,
            update_deployment,
            collection,
            groups,
            success_threshold,
            error_threshold,
            soak,
            silent_after,
            start,
            approval,
            joins_per_minute,
            allow_downgrade,
            rollback_program,
            maintenance_window,
        } = self
        else {
            return Err(Error::Usage("not a rollout".into()));
        };
        let spec = crate::admin::rollouts::CreateSpec {
            name: name.clone(),
            program: program.clone(),
            update_deployment: update_deployment.clone(),
            collection: collection.clone(),
            groups: groups.clone().unwrap_or_else(|| "10%,50%,100%".into()),
            gates: crate::rollout::Gates {
                success_threshold: success_threshold.unwrap_or(95),
                error_threshold: error_threshold.unwrap_or(10),
            },
            soak: soak.unwrap_or(600),
            silent_after: silent_after.unwrap_or(3600),
            start: start.clone(),
            approval: *approval,
            joins_per_minute: joins_per_minute.unwrap_or(60),
            allow_downgrade: *allow_downgrade,
            rollback_program: rollback_program.clone(),
            maintenance_window: maintenance_window.clone(),
        };
        crate::admin::rollouts::create(store, &spec, now)
    }
}

/// An operation's answer as the audit trail keeps it: a secret it answered (a token) is
/// never kept.
pub fn redacted(v: &Value) -> Value {
    let mut v = v.clone();
    if let Value::Object(m) = &mut v {
        for k in ["token", "target_token", "credential"] {
            if m.contains_key(k) {
                m.insert(k.into(), Value::String("(redacted)".into()));
            }
        }
    }
    v
}

/// The rollout command an action names.
pub fn command_of(action: &str) -> Result<Command> {
    Ok(match action {
        "approve" => Command::Approve,
        "start" => Command::Start,
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "stop" => Command::Stop,
        other => {
            return Err(Error::Usage(format!(
                "{other:?} is not a rollout action: approve, start, pause, resume or stop"
            )));
        }
    })
}

/// The longest a token may be made to work, and the most audit entries one answer holds.
const MAX_TOKEN_SECS: i64 = 5 * 365 * 86_400;
const MAX_AUDIT: usize = 10_000;

/// `dmmp audit`.
fn audit(store: &dyn Storage, since: i64) -> Result<Out> {
    let entries = store.audit(since, MAX_AUDIT)?;
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                admin::when(Some(e.time)),
                e.actor.clone(),
                e.source.clone(),
                e.action.clone(),
                e.target.clone(),
            ]
        })
        .collect();
    Ok(Out::new(admin::table(&["TIME", "WHO", "FROM", "WHAT", "ON"], &rows), json!(entries)))
}

/// `dmmp token list`.
fn token_list(store: &dyn Storage) -> Result<Out> {
    let tokens = store.api_tokens()?;
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .map(|t| {
            vec![
                t.name.clone(),
                t.role.as_str().into(),
                admin::when(Some(t.created)),
                t.expires.map_or("never".into(), |e| admin::when(Some(e))),
                t.tenant.clone().unwrap_or_else(|| "all".into()),
                t.revoked.map_or(String::new(), |r| format!("revoked {}", admin::when(Some(r)))),
            ]
        })
        .collect();
    let header = ["NAME", "ROLE", "CREATED", "EXPIRES", "TENANT", ""];
    Ok(Out::new(admin::table(&header, &rows), json!(tokens)))
}

/// `dmmp token create`: the secret is answered once and only its SHA-256 is stored.
fn token_create(
    cfg: &Config,
    store: &dyn Storage,
    name: &str,
    role: &str,
    expires: Option<&str>,
    tenant: Option<&str>,
    now: i64,
) -> Result<Out> {
    if let Some(t) = tenant.filter(|t| !cfg.devices.tenants.iter().any(|x| x == t)) {
        return Err(Error::Usage(format!(
            "--tenant {t:?}: this server serves {} (dmmp.toml [devices] tenants)",
            cfg.devices.tenants.join(", ")
        )));
    }
    let role: Role = role.parse().map_err(Error::Usage)?;
    let ok_name = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok_name {
        return Err(Error::Usage(format!(
            "token name {name:?}: 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    if store.api_tokens()?.iter().any(|t| t.name == name) {
        return Err(Error::Conflict(format!("a token is named {name} already")));
    }
    let expires = match expires {
        Some(e) => {
            let secs = duration(e)?;
            if !(1..=MAX_TOKEN_SECS).contains(&secs) {
                return Err(Error::Usage("--expires is a second to five years".into()));
            }
            Some(now + secs)
        }
        None => None,
    };
    let secret = format!("{TOKEN_PREFIX}{}", crate::random::hex(32, "an API token")?);
    let t = ApiToken {
        id: 0,
        name: name.to_string(),
        role,
        tenant: tenant.map(str::to_string),
        token_sha256: token_hash(&secret),
        created: now,
        expires,
        revoked: None,
    };
    let id = store.add_api_token(&t)?;
    Ok(Out::new(
        format!("{secret}\n"),
        json!({"id": id, "name": name, "role": role, "tenant": tenant, "expires": expires, "token": secret}),
    ))
}

/// Seconds in `90d`, `12h`, `30m` or a number of seconds.
pub fn duration(s: &str) -> Result<i64> {
    let (n, unit) = match s.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&s[..i], c),
        _ => (s, 's'),
    };
    let n: i64 = n.parse().map_err(|_| Error::Usage(format!("{s:?} is not a duration")))?;
    let unit = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(Error::Usage(format!("{s:?}: a duration ends in s, m, h or d"))),
    };
    n.checked_mul(unit)
        .filter(|v| *v >= 0)
        .ok_or_else(|| Error::Usage(format!("{s:?} is too long")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pct_decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn an_op_goes_to_its_route_and_back() {
        let ops = [
            Op::DeviceShow { device: "DEFAULT/gw 1".into() },
            Op::RolloutAct { rollout: "r1".into(), action: "pause".into(), program: None },
            Op::Advertise {
                name: "a".into(),
                program: "p".into(),
                collection: "c".into(),
                kind: "mandatory".into(),
                start: None,
                expires: None,
                maintenance_window: None,
                rerun: "never".into(),
                allow_downgrade: false,
            },
            Op::DeviceList {},
            Op::Audit { since: Some("2026-12-01T00:00:00Z".into()) },
            Op::Report {
                name: "healthy".into(),
                advertisement: None,
                device: Some("DEFAULT/gw 1".into()),
                state: None,
                filter: Some("a&b=c".into()),
                sort: None,
                dir: Some("desc".into()),
                limit: Some("10".into()),
                after_tenant: None,
                after: None,
                offset: None,
            },
        ];
        for op in ops {
            let (method, full, body) = op.request().unwrap();
            let (path, query) = full.split_once('?').unwrap_or((&full, ""));
            let r = ROUTES.iter().find(|r| r.method == method && r.op == op.name()).unwrap();
            // The server matches the path against the route's pattern and decodes each part,
            // then adds the query's fields.
            let mut params: Vec<(String, String)> = r
                .path
                .split('/')
                .zip(path.split('/'))
                .filter_map(|(p, v)| {
                    let key = p.strip_prefix('{')?.strip_suffix('}')?;
                    Some((key.to_string(), pct_decode(v)))
                })
                .collect();
            params.extend(
                query
                    .split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (pct_decode(k), pct_decode(v))),
            );
            assert_eq!(Op::from_route(r, params, body).unwrap(), op, "{full}");
        }
    }

    #[test]
    fn routes_name_known_operations_with_the_roles_they_need() {
        for r in ROUTES {
            if r.op == PACKAGE_UPLOAD {
                continue;
            }
            let fields = r.path.split('/').filter_map(|p| p.strip_prefix('{')?.strip_suffix('}'));
            let params = fields.map(|f| (f.to_string(), "x".to_string()));
            let body = match r.op {
                "device-add" => json!({"id": "x"}),
                "program-add" => json!({"package": "x", "name": "x"}),
                "collection-add" => json!({"name": "x", "rule": "all"}),
                "advertise" => json!({"name": "x", "program": "x", "collection": "x"}),
                "rollout-act" => json!({}),
                "token-create" => json!({"name": "x", "role": "operator"}),
                "device-import" => json!({"csv": "x"}),
                "update-deploy" => json!({"name": "x", "collection": "x"}),
                "rollout-create" => json!({"name": "x"}),
                "dp-add" => json!({"name": "x", "url": "https://x"}),
                _ => json!({}),
            };
            let op = Op::from_route(r, params, body).unwrap_or_else(|e| panic!("{}: {e}", r.op));
            assert_eq!(op.role(), r.role, "{}", r.op);
            assert_eq!(op.changes(), r.method == "POST", "{}", r.op);
        }
        assert!(!Op::DeviceList {}.changes());
        assert!(Op::from_route(&ROUTES[0], [], json!({"extra": 1})).is_err(), "unknown fields");
    }

    #[test]
    fn durations_and_secrets() {
        assert_eq!(duration("90d").unwrap(), 90 * 86_400);
        assert_eq!(duration("12h").unwrap(), 43_200);
        assert_eq!(duration("600").unwrap(), 600);
        assert!(duration("1y").is_err() && duration("x").is_err() && duration("").is_err());
        let v = redacted(&json!({"device": 1, "target_token": "secret"}));
        assert_eq!(v["target_token"], "(redacted)");
    }
}
