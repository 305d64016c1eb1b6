//! Writes the fuzz fixtures and the seed inputs of every target's corpus, with the project's
//! own code (fuzz/README.md):
//!
//! - `dm-fuzz-seeds fixtures`: the fixed PKI the targets check signatures with, in
//!   `fuzz/fixtures/` (kept when present; `--force` makes new ones, which makes every signed
//!   seed of the corpora stale);
//! - `dm-fuzz-seeds corpus`: `fuzz/corpus/<target>/seed-*`, signed with the fixtures.

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use cms::cert::CertificateChoices;
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{CertificateSet, EncapsulatedContentInfo, SignedData, SignerInfos};
use der::asn1::SetOfVec;
use der::{Any, Decode, DecodePem, Encode};
use dm_client::enroll::cms as scep;
use dm_shared::config_item::ConfigItem;
use dm_shared::devpki::{self, Issued, Purpose, Spec};
use dm_shared::manifest::{self, PackageKind, SignRequest};
use dm_shared::message::{MessageId, StatusMessage};
use dm_shared::pki::Cert;
use dm_shared::programs::SignedProgram;
use dm_shared::settings::KEYS;
use dm_shared::vocab::DeviceClass;
use dm_shared::{ClientVersion, Platform, StatusCode, bundle};
use rand_core::OsRng;
use rsa::RsaPrivateKey;
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey, LineEnding};
use x509_cert::Certificate;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The time the fuzz targets check validity at (`dm_shared::fuzzing::NOW_UNIX`).
const NOW_UNIX: u64 = 1_900_000_000;
/// 2020-01-01 and 2100-01-01: the fixtures' validity.
const FROM_UNIX: u64 = 1_577_836_800;
const UNTIL_UNIX: u64 = 4_102_444_800;

fn at(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

fn spec(cn: &str, purpose: Purpose) -> Spec {
    Spec { common_name: cn.into(), purpose, not_before: at(FROM_UNIX), not_after: at(UNTIL_UNIX) }
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixture(name: &str) -> PathBuf {
    fuzz_dir().join("fixtures").join(name)
}

fn read_text(name: &str) -> Result<String> {
    let p = fixture(name);
    std::fs::read_to_string(&p).map_err(|e| format!("{}: {e}", p.display()).into())
}

fn fixtures(force: bool) -> Result<()> {
    if fixture("codesign-root.pem").exists() && !force {
        println!("fixtures kept (--force makes new ones)");
        return Ok(());
    }
    let root = devpki::root_ca(&spec("dm fuzz Root", Purpose::Ca))?;
    let publisher = devpki::issue(&root, &spec("dm fuzz Publisher", Purpose::CodeSigning))?;
    let key = RsaPrivateKey::new(&mut OsRng, 1024)?;
    let cert = scep::self_signed(&key, scep::cn_name("dm fuzz SCEP CA")?)?;
    std::fs::create_dir_all(fixture(""))?;
    std::fs::write(fixture("codesign-root.pem"), &root.cert_pem)?;
    std::fs::write(fixture("codesign-root.key"), &root.key_pem)?;
    std::fs::write(fixture("publisher.pem"), &publisher.cert_pem)?;
    std::fs::write(fixture("publisher.key"), &publisher.key_pem)?;
    std::fs::write(fixture("scep-key.pem"), key.to_pkcs8_pem(LineEnding::LF)?.as_bytes())?;
    std::fs::write(fixture("scep-cert.der"), cert.to_der()?)?;
    println!("fixtures written to {}", fixture("").display());
    Ok(())
}

/// The seeds of one target.
struct Seeds {
    dir: PathBuf,
}

impl Seeds {
    fn new(target: &str) -> Result<Seeds> {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir)?;
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("seed-")) {
                std::fs::remove_file(p)?;
            }
        }
        Ok(Seeds { dir })
    }

    fn put(&self, name: &str, data: impl AsRef<[u8]>) -> Result<()> {
        std::fs::write(self.dir.join(format!("seed-{name}")), data)?;
        Ok(())
    }
}

/// `split_parts`' framing (`dm_shared::fuzzing::join_parts`, which this tool cannot use: the
/// `fuzzing` feature reads the fixtures this tool writes).
fn join_parts(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        if i + 1 < parts.len() {
            out.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_le_bytes());
        }
        out.extend_from_slice(p);
    }
    out
}

fn program(name: &str, command: &[&str]) -> SignedProgram {
    SignedProgram {
        name: name.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        max_run_time: 600,
        platforms: vec![],
        device_class: DeviceClass::Mobile,
        environment: Default::default(),
        default: false,
        health_check: false,
    }
}

/// A signed folder: its name, the files of it and how it is signed.
struct Folder {
    name: &'static str,
    files: Vec<(&'static str, Vec<u8>, bool)>,
    req: SignRequest,
}

fn config_items_json() -> serde_json::Value {
    serde_json::json!([
        {"name": "ssh-hardening", "version": 2, "description": "sshd as the fleet wants it",
         "platforms": ["linux-aarch64"], "restore_on_removal": true, "settings": [
            {"name": "root-login", "value": "no", "severity": "critical",
             "target": {"provider": "ini", "path": "etc/ssh/sshd_config.d/dm.conf", "section": "", "key": "PermitRootLogin"}},
            {"name": "max-sessions", "type": "integer", "rule": "at-most", "value": 4,
             "target": {"provider": "json", "path": "etc/app/config.json", "pointer": "/ssh/max_sessions"}}
        ]},
        {"name": "kernel", "version": 1, "settings": [
            {"name": "forward", "value": "0", "target": {"provider": "sysctl", "key": "net.ipv4.ip_forward"}},
            {"name": "ssh", "value": true, "target": {"provider": "systemd", "unit": "ssh.service"}}
        ]}
    ])
}

fn folders() -> Result<Vec<Folder>> {
    let now = at(NOW_UNIX);
    let aarch64 = Platform::parse("linux-aarch64")?;
    let mut install = program("install", &["setup.sh", "--quiet"]);
    install.environment.insert("SITE".into(), "WH1".into());
    install.platforms = vec![aarch64.clone()];
    let tools = Folder {
        name: "tools",
        files: vec![
            ("setup.sh", b"#!/bin/sh\necho hi\n".to_vec(), true),
            (
                "ClientSettings.ini",
                b"[Installation]\nClientInstallAction=Install\n".to_vec(),
                false,
            ),
            ("docs/readme.txt", b"hello".to_vec(), false),
        ],
        req: SignRequest {
            kind: PackageKind::SoftwareDistribution,
            name: "tools".into(),
            version: ClientVersion::new(1, 0, 0, 1),
            platforms: vec![aarch64.clone()],
            metadata: None,
            programs: vec![install, program("uninstall", &["/bin/sh", "-c", "rm -rf x"])],
            now,
        },
    };
    let mut client_files = vec![("DMCommonInstaller.ini", b"[Installation]\n".to_vec(), false)];
    for p in manifest::CLIENT_PROGRAMS {
        let name: &'static str = Box::leak(manifest::program_file(p, &aarch64).into_boxed_str());
        client_files.push((name, b"\x7fELF".to_vec(), true));
    }
    let client = Folder {
        name: "client",
        files: client_files,
        req: SignRequest {
            kind: PackageKind::ClientDeployment,
            name: "dm-client".into(),
            version: ClientVersion::new(2, 1, 0, 7),
            platforms: vec![aarch64],
            metadata: None,
            programs: vec![],
            now,
        },
    };
    let config = Folder {
        name: "config",
        files: vec![("config-items.json", config_items_json().to_string().into_bytes(), false)],
        req: SignRequest {
            kind: PackageKind::Configuration,
            name: "baseline".into(),
            version: ClientVersion::new(3, 0, 0, 0),
            platforms: vec![],
            metadata: Some(serde_json::json!({ "config_items": config_items_json() })),
            programs: vec![],
            now,
        },
    };
    let empty = Folder {
        name: "empty-file",
        files: vec![("empty.txt", Vec::new(), false), ("run.sh", b"#!/bin/sh\n".to_vec(), true)],
        req: SignRequest {
            kind: PackageKind::SoftwareDistribution,
            name: "empty".into(),
            version: ClientVersion::new(1, 0, 0, 0),
            platforms: vec![],
            metadata: None,
            programs: vec![program("run", &["run.sh"])],
            now,
        },
    };
    Ok(vec![tools, client, config, empty])
}

/// Signs the folders with the fixture publisher; returns each one's signature files and its
/// bundle.
fn signed(tmp: &Path) -> Result<Vec<(&'static str, [Vec<u8>; 3], Vec<u8>)>> {
    use std::os::unix::fs::PermissionsExt;
    let root_pem = read_text("codesign-root.pem")?;
    let pub_pem = read_text("publisher.pem")?;
    let pub_key = read_text("publisher.key")?;
    let chain = Cert::parse_pem(pub_pem.as_bytes(), Path::new("publisher.pem"))?;
    let trust = dm_shared::pki::Trust::roots(Cert::parse_pem(root_pem.as_bytes(), Path::new("r"))?);
    let mut out = Vec::new();
    for f in folders()? {
        let dir = tmp.join(f.name);
        for (path, data, exec) in &f.files {
            let p = dir.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, data)?;
            let mode = if *exec { 0o755 } else { 0o644 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
        }
        manifest::sign_folder(&dir, &f.req, pub_key.as_bytes(), Path::new("key"), &chain)?;
        let v = manifest::verify_folder(&dir, &trust, at(NOW_UNIX))?;
        let out_file = tmp.join(format!("{}.dmpkg", f.name));
        bundle::write(&v, &out_file)?;
        let read = |n: &str| std::fs::read(dir.join(n));
        let files = [
            read(manifest::MANIFEST_FILE)?,
            read(manifest::SIGNATURE_FILE)?,
            read(manifest::PUBLISHER_FILE)?,
        ];
        out.push((f.name, files, std::fs::read(&out_file)?));
    }
    Ok(out)
}

fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    Ok(base64_decode(&body).ok_or("bad base64")?)
}

fn base64_decode(s: &str) -> Option<Vec<u8>> {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        acc = (acc << 6) | T.iter().position(|t| *t == c)? as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

fn signature_and_bundle_seeds(tmp: &Path) -> Result<()> {
    let (m, s, b) =
        (Seeds::new("manifest")?, Seeds::new("signature_files")?, Seeds::new("bundle")?);
    let root_pem = read_text("codesign-root.pem")?;
    for (name, [manifest, sig, chain], bundle) in signed(tmp)? {
        m.put(name, &manifest)?;
        s.put(name, join_parts(&[&manifest, &sig, &chain]))?;
        b.put(name, &bundle)?;
        if name == "tools" {
            let with_root = [chain.clone(), root_pem.clone().into_bytes()].concat();
            s.put("tools-with-root", join_parts(&[&manifest, &sig, &with_root]))?;
            b.put("tools-truncated", &bundle[..bundle.len() - 1024])?;
        }
    }
    m.put("empty-object", "{}")?;
    Ok(())
}

fn pki_seeds() -> Result<()> {
    let c = Seeds::new("cert")?;
    let root = Issued {
        cert_pem: read_text("codesign-root.pem")?,
        key_pem: read_text("codesign-root.key")?,
    };
    let publisher = read_text("publisher.pem")?;
    c.put("root.pem", &root.cert_pem)?;
    c.put("chain.pem", format!("{publisher}{}", root.cert_pem))?;
    c.put("publisher.der", pem_to_der(&publisher)?)?;
    let server = devpki::issue(
        &root,
        &spec("mp.example.com", Purpose::Server(vec!["mp.example.com".into(), "127.0.0.1".into()])),
    )?;
    c.put("server.pem", &server.cert_pem)?;
    c.put(
        "client.der",
        pem_to_der(&devpki::issue(&root, &spec("dev-1", Purpose::Client))?.cert_pem)?,
    )?;
    c.put("scep.der", std::fs::read(fixture("scep-cert.der"))?)?;

    let r = Seeds::new("crl")?;
    let serial = Cert::parse_pem(publisher.as_bytes(), Path::new("p"))?[0].serial().to_vec();
    let revoking = devpki::crl(&root, &[&serial], 7, at(NOW_UNIX - 86_400), at(NOW_UNIX + 86_400))?;
    let empty = devpki::crl(&root, &[], 1, at(FROM_UNIX), at(FROM_UNIX + 86_400))?;
    r.put("revoking.pem", &revoking)?;
    r.put("empty-stale.pem", &empty)?;
    r.put("two.pem", format!("{revoking}{empty}"))?;
    r.put("revoking.der", pem_to_der(&revoking)?)?;
    Ok(())
}

fn settings_seeds() -> Result<()> {
    let s = Seeds::new("settings")?;
    let example = "; DMCommonInstaller.ini for the warehouse scanners\n[Installation]\nClientInstallAction=Install\nCertEnrollAction=None\n\n[Environment]\nManagementPoint=https://mp.example.com:8443\nTenant=DEFAULT\nSiteCode=WH1\nDeviceClass=Mobile\n\n[Communication]\nAuthentication=TargetToken\nTargetToken=bH7XXAprK1ChnLfKSdtlsp7NOlPnZAYY\nPollInterval=300\n\n[UserInterface]\nVerboseLogging=false\nLogRetention=10\n\n[Certificates]\n; ScepUrl=https://ca.example.com/scep\n";
    s.put("docs-example.ini", example)?;
    let mut every = String::new();
    let mut section = "";
    for k in KEYS {
        if k.section != section {
            section = k.section;
            every.push_str(&format!("[{section}]\n"));
        }
        every.push_str(&format!("{}={}\n", k.key, k.default));
    }
    s.put("every-default.ini", &every)?;
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(example.encode_utf16().flat_map(|u| u.to_le_bytes()))
        .collect();
    s.put("utf16le.ini", utf16)?;
    s.put("bom-quoted.ini", "\u{feff}[Environment]\nSiteCode=\"W H 1\"\nlost=1\n[Tether]\nDevices=root@10.0.0.2:22, pi@scanner-7\n")?;
    Ok(())
}

fn config_item_seeds() -> Result<()> {
    let s = Seeds::new("config_item")?;
    let items = config_items_json();
    s.put("list.json", items.to_string())?;
    if let Some(list) = items.as_array() {
        for (i, item) in list.iter().enumerate() {
            ConfigItem::from_json(&item.to_string())?;
            s.put(&format!("item-{i}.json"), item.to_string())?;
        }
    }
    let file = serde_json::json!({"name": "motd", "version": 1, "description": "Welcome*", "monitor_only": true,
    "settings": [
        {"name": "motd", "value": "Welcome to *", "rule": "matches", "target": {"provider": "file", "path": "etc/motd", "mode": "0644", "owner": 0, "group": 0}},
        {"name": "line", "value": true, "target": {"provider": "line", "path": "etc/hosts.allow", "line": "sshd: 10.0.0.0/8"}},
        {"name": "level", "type": "list", "rule": "one-of", "value": [["a"], ["b", "c"]], "target": {"provider": "json", "path": "etc/a.json", "pointer": ""}}
    ]});
    s.put("providers.json", file.to_string())?;
    Ok(())
}

fn ddi_seeds() -> Result<()> {
    let s = Seeds::new("ddi")?;
    let base = "https://mp.example.com:8443/DEFAULT/controller/v1/dev-1";
    s.put(
        "poll.json",
        serde_json::json!({"config": {"polling": {"sleep": "00:05:00"}}, "_links": {
        "deploymentBase": {"href": format!("{base}/deploymentBase/5?c=-2127183556")},
        "configData": {"href": format!("{base}/configData")},
        "dmCrls": {"href": format!("{base}/dm/crls?v=3")}}})
        .to_string(),
    )?;
    s.put(
        "poll-cancel.json",
        serde_json::json!({"config": {"polling": {"sleep": "12:00:00"}}, "_links": {
        "cancelAction": {"href": format!("{base}/cancelAction/6")},
        "confirmationBase": {"href": format!("{base}/confirmationBase/7")}}})
        .to_string(),
    )?;
    let chunk = serde_json::json!({"part": "software-distribution", "version": "1.0.0.1", "name": "tools",
        "artifacts": [{"filename": "tools-1.0.0.1.dmpkg", "hashes": {"sha1": "986a", "md5": "d044",
            "sha256": "b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0b3a0"}, "size": 13,
            "_links": {"download": {"href": "https://dp.example.com/tools.dmpkg"}, "md5sum": {"href": "https://dp.example.com/tools.md5"}}}],
        "metadata": [{"key": "dm.program", "value": "install"}, {"key": "dm.command", "value": "[\"setup.sh\",\"--quiet\"]"},
            {"key": "dm.max-run-time", "value": "300"}, {"key": "dm.platforms", "value": "linux-aarch64, linux-x86_64"},
            {"key": "dm.device-class", "value": "mobile"}]});
    s.put("deployment.json", serde_json::json!({"id": "5", "deployment": {"download": "forced", "update": "forced",
        "maintenanceWindow": "available", "chunks": [chunk]}, "actionHistory": {"status": "RUNNING", "messages": ["m"]}}).to_string())?;
    s.put("confirmation.json", serde_json::json!({"id": "7", "confirmation": {"download": "forced", "update": "attempt",
        "chunks": [{"part": "os", "version": "2", "name": "rootfs", "artifacts": [{"filename": "rootfs.dmpkg", "size": 1}]}]}}).to_string())?;
    s.put("spec-example.json", r#"{"id":"8","deployment":{"download":"forced","update":"attempt","maintenanceWindow":"available","chunks":[{"part":"jvm","version":"1.0.75","name":"oneapp runtime","artifacts":[{"filename":"binary.tgz","hashes":{"sha1":"986a","md5":"d044","sha256":"b3a0"},"size":13,"_links":{"download":{"href":"https://x/binary.tgz"}}}],"metadata":[{"key":"k","value":"v"}]}]},"actionHistory":{"status":"RUNNING","messages":["m"]}}"#)?;
    s.put("cancel.json", r#"{"id":"6","cancelAction":{"stopId":"5"}}"#)?;
    s.put("exception.json", r#"{"exceptionClass":"org.eclipse.hawkbit.repository.exception.EntityNotFoundException","errorCode":"hawkbit.server.error.repo.entitiyNotFound","message":"no such target"}"#)?;
    let crl = devpki::crl(
        &Issued {
            cert_pem: read_text("codesign-root.pem")?,
            key_pem: read_text("codesign-root.key")?,
        },
        &[&[1, 2, 3]],
        2,
        at(NOW_UNIX),
        at(NOW_UNIX + 86_400),
    )?;
    s.put("crls.json", serde_json::json!({"crls": [crl]}).to_string())?;
    Ok(())
}

/// A certs-only PKCS#7 of `certs`.
fn degenerate(certs: &[&Certificate]) -> Result<Vec<u8>> {
    let set: Vec<CertificateChoices> =
        certs.iter().map(|c| CertificateChoices::Certificate((*c).clone())).collect();
    let sd = SignedData {
        version: CmsVersion::V1,
        digest_algorithms: SetOfVec::new(),
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: scep::ID_DATA,
            econtent: None,
        },
        certificates: Some(CertificateSet(SetOfVec::try_from(set)?)),
        crls: None,
        signer_infos: SignerInfos(SetOfVec::new()),
    };
    Ok(ContentInfo { content_type: scep::ID_SIGNED_DATA, content: Any::encode_from(&sd)? }
        .to_der()?)
}

fn scep_seeds() -> Result<()> {
    let key = RsaPrivateKey::from_pkcs8_pem(&read_text("scep-key.pem")?)?;
    let cert = Certificate::from_der(&std::fs::read(fixture("scep-cert.der"))?)?;
    let other_key = RsaPrivateKey::new(&mut OsRng, 1024)?;
    let ra = scep::self_signed(&other_key, scep::cn_name("dm fuzz SCEP RA")?)?;
    let device = scep::self_signed(&other_key, scep::cn_name("dev-1")?)?;
    let root_pem = read_text("codesign-root.pem")?;
    let ecdsa = Certificate::from_pem(root_pem.as_bytes())?;

    let ca = Seeds::new("scep_ca_certs")?;
    ca.put("ca.der", cert.to_der()?)?;
    ca.put("ca-ra.p7", degenerate(&[&cert, &ra])?)?;
    ca.put("ca-ecdsa.p7", degenerate(&[&cert, &ecdsa])?)?;
    ca.put("none.p7", degenerate(&[])?)?;

    let issued = degenerate(&[&device])?;
    let env = Seeds::new("scep_envelope")?;
    for (name, c) in [
        ("aes128", scep::Cipher::Aes128),
        ("aes256", scep::Cipher::Aes256),
        ("des3", scep::Cipher::Des3),
    ] {
        env.put(name, scep::envelope(&issued, &cert, c)?)?;
    }
    let csr = scep::build_csr(&other_key, scep::cn_name("dev-1")?, Some("challenge"))?;
    env.put("csr-aes128", scep::envelope(&csr, &cert, scep::Cipher::Aes128)?)?;

    let rep = Seeds::new("scep_cert_rep")?;
    let txid = scep::transaction_id(&key.to_public_key())?;
    let sealed = scep::envelope(&issued, &cert, scep::Cipher::Aes128)?;
    rep.put("certrep", scep::signed_pki_message(&sealed, &cert, &key, "3", &txid, &[7; 16])?)?;
    let req = scep::envelope(&csr, &cert, scep::Cipher::Des3)?;
    rep.put("pkcsreq", scep::signed_pki_message(&req, &cert, &key, "19", &txid, &[1; 16])?)?;
    rep.put("other-signer", scep::signed_pki_message(b"x", &ra, &other_key, "3", "t", &[2; 16])?)?;
    Ok(())
}

fn mp_seeds() -> Result<()> {
    let s = Seeds::new("mp_device_requests")?;
    let feedback = |e: &str, r: &str, c: i32, d: &[&str]| {
        serde_json::json!({"status": {"execution": e, "result": {"finished": r, "progress": {"cnt": 2, "of": 5}}, "code": c, "details": d}, "timestamp": 1627997501890i64}).to_string()
    };
    s.put("feedback-proceeding.json", feedback("proceeding", "none", 10005, &[]))?;
    s.put(
        "feedback-closed.json",
        feedback(
            "closed",
            "success",
            10008,
            &[
                "tools-run completed",
                "dm.status=0x00000000",
                "dm.report=4f1c2a9e0b7d4c5e8a6f1b2c3d4e5f60",
            ],
        ),
    )?;
    s.put("feedback-rauc.json", r#"{"id": "7", "time": "20261128T093233", "status": {"result": {"progress": {}, "finished": "success"}, "execution": "closed", "details": []}}"#)?;
    s.put(
        "confirmation.json",
        r#"{"confirmation": "confirmed", "code": 10, "details": ["ok", "dm.report=r-1"]}"#,
    )?;
    s.put("config-data.json", r#"{"mode": "merge", "data": {"os.name": "Debian", "hw.model": "pi4", "dm.client.version": "2.1.0.7"}}"#)?;
    s.put("config-data-remove.json", r#"{"mode": "remove", "data": {"os.name": ""}}"#)?;
    let msg = StatusMessage::event(
        "DMInstaller",
        MessageId(10002),
        StatusCode(0x8007_0005),
        "2030-03-17T17:46:40Z".into(),
        "Access Denied".into(),
    );
    s.put("status-messages.json", serde_json::to_string(&vec![msg])?)?;
    s.put("auto-confirm.json", r#"{"initiator": "user", "remark": "always"}"#)?;
    s.put("range", "bytes=0-4")?;
    s.put("range-suffix", "bytes=-3")?;
    s.put("history", "actionHistory=5")?;

    let c = Seeds::new("console_forms")?;
    c.put("login", "name=admin&password=p%40ss+word")?;
    c.put("cookie", "dm_console=0123abcd; theme=dark")?;
    c.put("report", "format=csv&sort=device&dir=desc&filter=dev%2A&advertisement=tools&state=failed&limit=10&offset=3&after_tenant=DEFAULT&after=dev-1")?;
    c.put("search", "q=Pi4&after=dev-9")?;
    Ok(())
}

fn corpus() -> Result<()> {
    let tmp = std::env::temp_dir().join(format!("dm-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp)?;
    let done = signature_and_bundle_seeds(&tmp);
    std::fs::remove_dir_all(&tmp)?;
    done?;
    pki_seeds()?;
    settings_seeds()?;
    config_item_seeds()?;
    ddi_seeds()?;
    scep_seeds()?;
    mp_seeds()?;
    println!("seeds written under {}", fuzz_dir().join("corpus").display());
    Ok(())
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["fixtures"] => fixtures(false),
        ["fixtures", "--force"] => fixtures(true),
        ["corpus"] => corpus(),
        _ => Err("usage: dm-fuzz-seeds fixtures [--force] | corpus".into()),
    }
}
