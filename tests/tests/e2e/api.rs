//! The management API end to end (docs/management-api.md): a CI pipeline deploys a package to
//! a real agent through the API alone, with `dmmp --server --token-file` as its client (a
//! bundle uploaded, streamed and verified by the server; a program, a collection, an
//! advertisement; its status watched until the device finished), and the audit trail says who
//! did each change, from where, before and after. Every role is held to its routes: a
//! read-only token lists but cannot deploy, an operator cannot make tokens, a revoked or an
//! expired token is refused after the same delay as an unknown one. The OpenAPI document is
//! served and names every route.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::instances::devices;
use crate::mp::{Mp, curl};
use crate::util::*;

/// `dmmp --server URL --token-file F ARGS` from another folder than the management point's,
/// as a pipeline runs it: no configuration, no database.
fn remote(mp: &Mp, token: &Path, args: &[&str]) -> Output {
    Command::new(bin("dmmp"))
        .current_dir(mp.w.path("pipeline"))
        .env_remove("DMMP_CONFIG")
        .args(["--server", &mp.url(), "--token-file"])
        .arg(token)
        .arg("--server-ca")
        .arg(mp.w.pki.join("root-ca.pem"))
        .args(args)
        .output()
        .unwrap()
}

fn remote_ok(mp: &Mp, token: &Path, args: &[&str]) -> String {
    let out = remote(mp, token, args);
    assert!(out.status.success(), "dmmp {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn remote_json(mp: &Mp, token: &Path, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&remote_ok(mp, token, &all)).unwrap()
}

/// A token made on the management point, kept in a file of the pipeline's.
fn token(mp: &Mp, name: &str, role: &str, extra: &[&str]) -> PathBuf {
    let mut args = vec!["token", "create", "--name", name, "--role", role];
    args.extend_from_slice(extra);
    let secret = mp.admin(&args).trim().to_string();
    assert!(secret.starts_with("dmt_"), "{secret}");
    let file = mp.w.path(&format!("pipeline/{name}.token"));
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    file
}

#[test]
fn a_pipeline_deploys_through_the_api_alone_and_the_audit_trail_says_who_did_what() {
    let mp = Mp::start(|_| {});
    std::fs::create_dir_all(mp.w.path("pipeline")).unwrap();
    let roots = mp.w.pki.join("root-ca.pem");
    // The management point trusts uploads from the world's publisher.
    let cfg = mp.dir.join("dmmp.toml");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text =
        text.replace("[api]\n", &format!("[api]\npackage_roots = \"{}\"\n", roots.display()));
    std::fs::write(&cfg, text).unwrap();
    let mut mp = mp;
    mp.restart();
    let _fleet = devices(&mp, 1, &mp.url());
    let ci = token(&mp, "ci", "operator", &["--expires", "1d"]);
    let viewer = token(&mp, "viewer", "read-only", &[]);

    // The pipeline's build: a signed package as one bundle.
    let src = mp.w.path("tool-src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("run.sh"), "#!/bin/sh\necho deployed > \"$DM_DEVICE_ROOT/api-ran\"\n")
        .unwrap();
    let folder = mp.w.path("tool-pkg");
    sign_package_as(&mp.w, &src, &folder, ("tool", "2.0.0.0"), "run.sh", None);
    let bundle = mp.w.bundle(&folder, &mp.w.path("tool-bundle"));

    // The deployment, through the API alone.
    let pkg = remote_json(&mp, &ci, &["package", "add", "--source", bundle.to_str().unwrap()]);
    assert_eq!((pkg["name"].as_str(), pkg["version"].as_str()), (Some("tool"), Some("2.0.0.0")));
    remote_ok(
        &mp,
        &ci,
        &["program", "add", "--package", "tool@2.0.0.0", "--name", "tool-run", "--program", "run"],
    );
    remote_ok(&mp, &ci, &["collection", "add", "--name", "fleet", "--rule", "all"]);
    let text = remote_ok(
        &mp,
        &ci,
        &[
            "advertise",
            "--name",
            "ship",
            "--program",
            "tool-run",
            "--collection",
            "fleet",
            "--mandatory",
        ],
    );
    assert!(
        text.starts_with("advertisement 1 added: tool-run"),
        "the server's text for people: {text}"
    );
    let start = Instant::now();
    loop {
        let st = remote_json(&mp, &ci, &["advertisement", "status", "ship"]);
        if st["counts"]["finished"] == 1 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "the device never finished: {st}");
        std::thread::sleep(Duration::from_millis(500));
    }
    let root = mp.w.path("dev-0");
    assert_eq!(std::fs::read_to_string(root.join("api-ran")).unwrap(), "deployed\n");
    // Reports and a rollout through the API too.
    let report = remote_json(&mp, &ci, &["report", "healthy"]);
    assert!(report.to_string().contains("dev-0"), "{report}");
    let r = curl(
        &mp,
        &[
            "-H",
            &format!("Authorization: Bearer {}", std::fs::read_to_string(&ci).unwrap().trim()),
            &format!("{}/api/v1/reports/healthy?limit=1", mp.url()),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.json().get("next").is_some(), "paging as the console's JSON: {}", r.text());
    remote_ok(
        &mp,
        &ci,
        &["rollout", "create", "--name", "r2", "--program", "tool-run", "--collection", "fleet"],
    );
    let shown = remote_json(&mp, &ci, &["rollout", "show", "r2"]);
    assert_eq!(shown["rollout"]["state"], "ready", "{shown}");

    // The audit trail: each change, who, from where, after.
    let audit = mp.admin_json(&["audit"]);
    let entries = audit.as_array().unwrap();
    for (action, target) in [
        ("package-upload", "package tool 2.0.0.0"),
        ("program-add", "program tool-run"),
        ("collection-add", "collection fleet"),
        ("advertise", "advertisement ship"),
    ] {
        let e = entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {audit:#}"));
        assert_eq!(
            (e["actor"].as_str(), e["source"].as_str()),
            (Some("token ci"), Some("127.0.0.1"))
        );
        assert_eq!(e["target"], target, "{e}");
        assert!(e["after"].as_str().is_some_and(|a| a.contains('{')), "{e}");
    }
    // The tokens made on the machine are there too, their secrets not.
    let made = entries.iter().find(|e| e["action"] == "token-create").unwrap();
    assert_eq!(made["source"], "dmmp");
    assert!(made["after"].as_str().unwrap().contains("(redacted)"), "{made}");
    // A change dmmp makes on the machine outside the API's operations is in the trail too.
    mp.admin(&["collection", "window", "fleet", "22:00-04:00"]);
    let audit2 = mp.admin_json(&["audit"]);
    let w = audit2.as_array().unwrap().iter().find(|e| e["action"] == "collection-window");
    assert_eq!(w.map(|e| e["target"].clone()), Some("collection fleet".into()), "{audit2:#}");
    mp.admin(&["collection", "window", "fleet"]);
    // A GET's fields travel in its query: the trail from a time to come is empty.
    let none = remote_json(&mp, &ci, &["audit", "--since", "2099-01-01T00:00:00Z"]);
    assert_eq!(none, serde_json::json!([]));
    // A POST takes none: its path and body say what it does.
    let secret = std::fs::read_to_string(&ci).unwrap().trim().to_string();
    let r = curl(
        &mp,
        &[
            "-X",
            "POST",
            "-H",
            &format!("Authorization: Bearer {secret}"),
            "--data-binary",
            "{}",
            &format!("{}/api/v1/advertisements/ship/cancel?advertisement=other", mp.url()),
        ],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    // Reads are not changes.
    assert!(!entries.iter().any(|e| e["action"] == "advertisement-status"), "{audit:#}");

    // Roles: a read-only token lists but cannot deploy; an operator cannot make tokens.
    let devices = remote_json(&mp, &viewer, &["device", "list"]);
    assert!(devices.to_string().contains("dev-0"), "{devices}");
    let out = remote(
        &mp,
        &viewer,
        &["advertise", "--name", "x", "--program", "tool-run", "--collection", "fleet"],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "E_ACCESSDENIED: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs operator"));
    let out = remote(&mp, &ci, &["token", "create", "--name", "mine", "--role", "administrator"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    // A command the API does not serve says so, before anything is sent.
    let out = remote(&mp, &ci, &["update", "repositories"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("not served by the management API"));

    // Revoked, expired and unknown tokens are refused alike, after the same delay.
    let short = token(&mp, "short", "read-only", &["--expires", "1s"]);
    mp.admin(&["token", "revoke", "viewer"]);
    std::thread::sleep(Duration::from_millis(1500));
    let unknown = mp.w.path("pipeline/unknown.token");
    std::fs::write(&unknown, "dmt_0000").unwrap();
    for t in [&viewer, &short, &unknown] {
        let start = Instant::now();
        let out = remote(&mp, t, &["device", "list"]);
        assert_eq!(out.status.code(), Some(107), "{t:?}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(start.elapsed() >= Duration::from_millis(250), "{t:?} answered early");
    }
    let r = curl(
        &mp,
        &["-H", "Authorization: Bearer dmt_0000", &format!("{}/api/v1/devices", mp.url())],
    );
    assert_eq!(r.status, 401);
    let e = r.json();
    assert_eq!(
        (e["status"].as_u64(), e["code"].as_str()),
        (Some(401), Some("DM_E_API_UNAUTHORIZED"))
    );
    assert!(mp.log_text().contains("refused, an unknown token"), "the server's log");

    // The OpenAPI document is served, and names every route.
    let doc = curl(&mp, &[&format!("{}/api/v1/openapi.json", mp.url())]).json();
    assert_eq!(doc["openapi"], "3.0.3");
    for (path, method) in [
        ("/api/v1/packages", "post"),
        ("/api/v1/advertisements/{advertisement}/status", "get"),
        ("/api/v1/rollouts/{rollout}/{action}", "post"),
        ("/api/v1/audit", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{path} {method}");
    }
}

/// The OpenAPI document checked by a real OpenAPI tool against the live server: schemathesis
/// (from PyPI, installed by scripts/setup-peers.sh) reads it, calls every operation with data
/// it generates from the document, and fails on any 5xx, any status, header, content type or
/// body the document does not declare.
#[test]
fn schemathesis_finds_every_operation_as_documented_and_no_server_error() {
    let st = workspace_root().join("target/peers/schemathesis/bin/st");
    assert!(st.exists(), "{} is missing: run scripts/setup-peers.sh", st.display());
    let mut mp = Mp::start(|t| {
        *t = t.replace("requests_per_minute = 600", "requests_per_minute = 100000");
    });
    let cfg = mp.dir.join("dmmp.toml");
    let roots = mp.w.pki.join("root-ca.pem");
    let text = std::fs::read_to_string(&cfg).unwrap();
    let text =
        text.replace("[api]\n", &format!("[api]\npackage_roots = \"{}\"\n", roots.display()));
    std::fs::write(&cfg, text).unwrap();
    mp.restart();
    std::fs::create_dir_all(mp.w.path("pipeline")).unwrap();
    let admin = token(&mp, "fuzz", "administrator", &[]);
    let secret = std::fs::read_to_string(&admin).unwrap().trim().to_string();
    let work = mp.w.path("schemathesis");
    std::fs::create_dir_all(&work).unwrap();
    let out = Command::new(&st)
        .current_dir(&work)
        .env("SCHEMATHESIS_TELEMETRY", "false")
        .env("NO_COLOR", "1")
        .args(["run", &format!("{}/api/v1/openapi.json", mp.url())])
        .args(["--checks", "all", "--hypothesis-max-examples", "25", "--hypothesis-derandomize"])
        .arg("--request-tls-verify")
        .arg(&roots)
        .args(["-H", &format!("Authorization: Bearer {secret}")])
        .output()
        .unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found problems:\n{said}");
    // It did call the operations (not a run that found nothing to test).
    assert!(said.contains("/api/v1/rollouts/{rollout}/{action}"), "{said}");
}

/// A token scoped to one tenant sees nothing of another: not its devices, collections,
/// advertisements or rollouts (they do not exist for it), and what spans tenants is refused.
#[test]
fn a_token_of_one_tenant_sees_nothing_of_another() {
    let mp = Mp::start(|t| {
        *t = t.replace("tenants = [\"DEFAULT\"]", "tenants = [\"DEFAULT\", \"acme\"]")
    });
    std::fs::create_dir_all(mp.w.path("pipeline")).unwrap();
    mp.admin(&["device", "add", "--id", "ours-1", "--tenant", "DEFAULT"]);
    mp.admin(&["device", "add", "--id", "acme-1", "--tenant", "acme"]);
    mp.admin(&["collection", "add", "--name", "ours", "--rule", "all", "--tenant", "DEFAULT"]);
    mp.admin(&["collection", "add", "--name", "theirs", "--rule", "all", "--tenant", "acme"]);
    let acme = token(&mp, "acme-ops", "operator", &["--tenant", "acme"]);

    let devices = remote_json(&mp, &acme, &["device", "list"]);
    let ids: Vec<&str> =
        devices.as_array().unwrap().iter().map(|d| d["controller_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme-1"]);
    let cols = remote_json(&mp, &acme, &["collection", "list"]);
    assert_eq!(cols.as_array().unwrap().len(), 1, "{cols}");
    remote_ok(&mp, &acme, &["device", "show", "acme-1"]);
    // The other tenant's device and collection do not exist for it.
    let out = remote(&mp, &acme, &["device", "show", "DEFAULT/ours-1"]);
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stderr));
    let out = remote(
        &mp,
        &acme,
        &["collection", "add", "--name", "x", "--rule", "all", "--tenant", "DEFAULT"],
    );
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("adds only to tenant acme"));
    let out =
        remote(&mp, &acme, &["advertise", "--name", "x", "--program", "p", "--collection", "ours"]);
    assert_eq!(out.status.code(), Some(10), "{}", String::from_utf8_lossy(&out.stderr));
    // Its own tenant's are its to change.
    remote_ok(
        &mp,
        &acme,
        &["collection", "add", "--name", "acme-gw", "--rule", "all", "--tenant", "acme"],
    );
    // What spans tenants is refused.
    let out = remote(&mp, &acme, &["audit"]);
    assert_eq!(out.status.code(), Some(5), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("spans tenants"));
}

/// Every role on every route, as the served OpenAPI document lists them: a role below the
/// route's is refused (403) before anything runs; one at or above it is let through (whatever
/// the operation then says of the made-up names: 400, 404, never 401 or 403).
#[test]
fn every_role_is_tried_on_every_route() {
    let mp = Mp::start(|_| {});
    std::fs::create_dir_all(mp.w.path("pipeline")).unwrap();
    let roles = ["read-only", "operator", "administrator"];
    let secrets: Vec<String> = roles
        .iter()
        .map(|r| {
            let file = token(&mp, &format!("t-{r}"), r, &[]);
            std::fs::read_to_string(file).unwrap().trim().to_string()
        })
        .collect();
    let doc = curl(&mp, &[&format!("{}/api/v1/openapi.json", mp.url())]).json();
    let mut tried = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let Some(needs) = op["description"]
                .as_str()
                .and_then(|d| d.strip_prefix("Needs the role "))
                .map(|d| d.trim_end_matches('.'))
            else {
                continue; // the document itself
            };
            let needed = roles.iter().position(|r| *r == needs).unwrap();
            let url = format!("{}{}", mp.url(), path.replace('{', "x-").replace('}', ""));
            for (i, secret) in secrets.iter().enumerate() {
                let auth = format!("Authorization: Bearer {secret}");
                let mut args = vec!["-X", method.as_str(), "-H", auth.as_str()];
                if method == "post" {
                    args.extend(["-H", "Content-Type: application/json", "--data-binary", "{}"]);
                }
                let upper = method.to_uppercase();
                args[1] = &upper;
                args.push(&url);
                let r = curl(&mp, &args);
                if i < needed {
                    assert_eq!(r.status, 403, "{} {method} {path}: {}", roles[i], r.text());
                    assert_eq!(r.json()["code"], "E_ACCESSDENIED");
                } else {
                    assert!(
                        ![401, 403].contains(&r.status) && r.status < 500,
                        "{} {method} {path}: {} {}",
                        roles[i],
                        r.status,
                        r.text()
                    );
                }
                tried += 1;
            }
        }
    }
    assert!(tried >= 3 * 25, "{tried} requests: the document lists every route");
    // Nothing was changed by a refused request.
    let audit = mp.admin_json(&["audit"]);
    assert!(
        !audit.as_array().unwrap().iter().any(|e| e["actor"] == "token t-read-only"),
        "{audit:#}"
    );
}
