//! A management point in a temp folder for the fast tests: a demo PKI, a SQLite store and the
//! server state, with helpers to advertise a package and to act as a device. No process, no
//! socket: the handlers' logic is called directly.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, header};
use dm_shared::devpki::{self, Issued, Purpose, Spec};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::auth::authenticate;
use super::conn_info::ConnInfo;
use super::http::ApiError;
use super::state::AppState;
use crate::config::{Config, UnknownDevices};
use crate::model::*;
use crate::storage::{SqliteStore, Storage};

/// A management point's state over a temp folder.
pub struct Fixture {
    /// The folder (kept alive).
    pub dir: tempfile::TempDir,
    /// The state the handlers take.
    pub state: Arc<AppState>,
    /// The demo CA that issues client certificates.
    pub ca: Issued,
}

/// A certificate spec valid for `days` from `from`.
pub fn spec(cn: &str, purpose: Purpose, from: SystemTime, days: u64) -> Spec {
    Spec {
        common_name: cn.into(),
        purpose,
        not_before: from,
        not_after: from + Duration::from_secs(86_400 * days),
    }
}

impl Fixture {
    /// A fresh management point; `tweak` edits its configuration first.
    pub fn new(tweak: impl FnOnce(&mut Config)) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let now = SystemTime::now() - Duration::from_secs(3600);
        let ca = devpki::root_ca(&spec("fixture CA", Purpose::Ca, now, 10)).unwrap();
        let server = devpki::issue(
            &ca,
            &spec("fixture", Purpose::Server(vec!["127.0.0.1".into()]), now, 10),
        )
        .unwrap();
        std::fs::write(dir.path().join("server.pem"), &server.cert_pem).unwrap();
        std::fs::write(dir.path().join("server.key"), &server.key_pem).unwrap();
        std::fs::write(dir.path().join("root-ca.pem"), &ca.cert_pem).unwrap();
        let mut cfg = Config::new(
            dir.path(),
            "127.0.0.1:0".parse().unwrap(),
            "server.pem".into(),
            "server.key".into(),
        );
        // Most tests let devices register themselves; `refusing` turns that off.
        cfg.devices.unknown_devices = UnknownDevices::Register;
        cfg.server.client_ca = Some("root-ca.pem".into());
        tweak(&mut cfg);
        let store: Arc<dyn Storage> = Arc::new(SqliteStore::open(&cfg.database()).unwrap());
        let trust = super::trust::ClientTrust::load(&cfg).unwrap();
        let state = Arc::new(AppState::new(cfg, store, trust).unwrap());
        Fixture { dir, state, ca }
    }

    /// A client certificate for `cn` from this fixture's CA (or from `ca`), as DER.
    pub fn client_cert(&self, cn: &str, ca: Option<&Issued>, days: u64) -> CertificateDer<'static> {
        let from = SystemTime::now() - Duration::from_secs(3600 * 24 * 30);
        let issued =
            devpki::issue(ca.unwrap_or(&self.ca), &spec(cn, Purpose::Client, from, days)).unwrap();
        CertificateDer::from_pem_slice(issued.cert_pem.as_bytes()).unwrap().into_owned()
    }

    /// Headers with `Authorization: <value>`.
    pub fn auth(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        h
    }

    /// A connection without a client certificate.
    pub fn conn() -> ConnInfo {
        ConnInfo { peer: "127.0.0.1:1".parse().unwrap(), client_chain: None }
    }

    /// Authenticates as a device with a target token (registering it the first time).
    pub fn device(&self, cid: &str, token: &str) -> Device {
        let h = Fixture::auth(&format!("TargetToken {token}"));
        authenticate(&self.state, &h, &Fixture::conn(), "DEFAULT", cid).unwrap()
    }

    /// Authenticates with the given headers and connection.
    pub fn try_auth(&self, h: &HeaderMap, conn: &ConnInfo, cid: &str) -> Result<Device, ApiError> {
        authenticate(&self.state, h, conn, "DEFAULT", cid)
    }

    /// A mandatory advertisement of a one-file software distribution package to every device,
    /// written as the admin commands would, and the view reloaded.
    pub fn advertise(&self, name: &str, kind: AdvertisementKind) -> Advertisement {
        self.advertise_package(name, kind, PackageKind::SoftwareDistribution)
    }

    /// [`Fixture::advertise`] for a package of any kind.
    pub fn advertise_package(
        &self,
        name: &str,
        kind: AdvertisementKind,
        package_kind: PackageKind,
    ) -> Advertisement {
        let store = &self.state.store;
        let pkg = Package {
            config_items: Vec::new(),
            id: 0,
            name: name.into(),
            version: "1.0.0.0".into(),
            kind: package_kind,
            publisher: Some("CN=fixture".into()),
            distribution_point: None,
            created: 1,
            artifacts: vec![ArtifactRecord {
                filename: "run.sh".into(),
                size: 10,
                sha256: "a".repeat(64),
                sha1: "b".repeat(40),
                md5: "c".repeat(32),
                path: None,
            }],
            programs: vec![],
        };
        let package_id = store.add_package(&pkg).unwrap();
        let program_id = store
            .add_program(&Program {
                id: 0,
                package_id,
                name: format!("{name}-run"),
                command: "./run.sh".into(),
                platforms: vec![],
                max_run_time: 60,
                device_class: DeviceClass::Mobile,
                signed_program: None,
            })
            .unwrap();
        let collection_id =
            store.add_collection(&format!("{name}-all"), "DEFAULT", &CollectionRule::All).unwrap();
        let mut adv = Advertisement {
            id: 0,
            name: format!("{name}-ad"),
            program_id,
            collection_id,
            kind,
            start_time: 0,
            expires: None,
            window: None,
            created: 1,
            canceled: false,
            rerun: Rerun::Never,
            allow_downgrade: false,
        };
        adv.id = store.add_advertisement(&adv).unwrap();
        self.reload();
        adv
    }

    /// Reloads the view, as the server does when the admin commands changed the database.
    pub fn reload(&self) {
        // The fixture wrote through the server's own connection, which data_version does not
        // count: load unconditionally.
        let seen = self.state.read().local_writes;
        let view = super::state::View::load(self.state.store.as_ref()).unwrap();
        assert!(self.state.install_if_unchanged(view, seen));
    }

    /// A feedback body.
    pub fn feedback(execution: &str, finished: &str, code: i32, details: &[&str]) -> Bytes {
        Bytes::from(
            serde_json::json!({"status": {"execution": execution, "result": {"finished": finished}, "code": code, "details": details}})
                .to_string(),
        )
    }

    /// Makes unknown devices refused.
    pub fn refusing() -> impl FnOnce(&mut Config) {
        |c: &mut Config| c.devices.unknown_devices = UnknownDevices::Refuse
    }
}
