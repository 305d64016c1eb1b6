//! Software updates end to end on the host (docs/software-updates.md): Debian repositories
//! made with Debian's own tools (`tests/peers/apt-repo.sh`: dpkg-deb, apt-ftparchive, gpg),
//! imported by the real `dmmp` with their release files verified by gpgv, approved, scanned by
//! the real agent against a device's dpkg status database, reported as changes only, and
//! counted in the compliance reports; and every refusal of a repository that is not what its
//! signature says. The installs through apt run in the virtual machine (tests/vm).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::agent::Fleet;
use crate::util::*;

fn apt_repo(args: &[&str]) {
    run_ok(Command::new(workspace_root().join("tests/peers/apt-repo.sh")).args(args));
}

/// A repository of the fleet's own packages, signed with a key of its own.
struct Repo {
    dir: PathBuf,
    key: PathBuf,
}

impl Repo {
    fn new(root: &Path) -> Repo {
        let r = Repo { dir: root.join("repo"), key: root.join("key") };
        apt_repo(&["key", r.key.to_str().unwrap()]);
        r
    }

    fn deb(&self, name: &str, version: &str, arch: &str) {
        apt_repo(&["deb", self.dir.to_str().unwrap(), name, version, arch]);
    }

    fn index(&self) {
        apt_repo(&[
            "index",
            self.dir.to_str().unwrap(),
            "stable",
            "amd64 arm64",
            self.key.to_str().unwrap(),
        ]);
    }

    fn keyring(&self) -> String {
        self.key.join("keyring.gpg").display().to_string()
    }
}

fn native() -> &'static str {
    dm_shared::debian::native_architecture()
}

/// A dpkg status database: (name, version, arch, state).
fn dpkg_status(device: &Path, packages: &[(&str, &str, &str, &str)]) {
    let mut text = String::new();
    for (n, v, a, s) in packages {
        text.push_str(&format!(
            "Package: {n}\nStatus: install ok {s}\nPriority: optional\nSection: admin\nMaintainer: x\nArchitecture: {a}\nVersion: {v}\nDescription: test\n long text\n\n"
        ));
    }
    let p = device.join("var/lib/dpkg/status");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn import(f: &Fleet, repo: &Repo) -> Value {
    f.mp.admin_json(&[
        "update",
        "import",
        "--name",
        "fleet",
        "--source",
        repo.dir.to_str().unwrap(),
        "--suite",
        "stable",
        "--keyring",
        &repo.keyring(),
    ])
}

fn import_fails(f: &Fleet, repo: &Repo, keyring: &str) -> (i32, String) {
    let out = run(
        Command::new(bin("dmmp"))
            .arg("--config")
            .arg(f.mp.dir.join("dmmp.toml"))
            .args(["update", "import", "--name", "fleet", "--suite", "stable", "--source"])
            .arg(&repo.dir)
            .args(["--keyring", keyring]),
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "the import should fail: {}", show(&out));
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn device_updates(f: &Fleet) -> Value {
    f.mp.admin_json(&["update", "compliance", "--device", "dev-1"])
}

/// The device's updates by package and version: (state, installed, reason).
fn states(v: &Value, f: &Fleet) -> Vec<(String, String)> {
    let all = f.mp.admin_json(&["update", "list", "--all-versions"]);
    let label = |id: &Value| {
        let u = all.as_array().unwrap().iter().find(|u| &u["id"] == id).unwrap();
        format!(
            "{} {} {}",
            u["package"].as_str().unwrap(),
            u["version"].as_str().unwrap(),
            u["arch"].as_str().unwrap()
        )
    };
    let mut out: Vec<(String, String)> = v["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (label(&s["update_id"]), s["state"].as_str().unwrap().to_string()))
        .collect();
    out.sort();
    out
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
}

#[test]
fn updates_are_imported_scanned_reported_as_changes_and_counted() {
    let n = native();
    let f = Fleet::new_with("", |mp| {
        dpkg_status(
            &mp.w.device,
            &[
                ("dmtest-tool", "1.0", n, "installed"),
                ("dmtest-doc", "2.0", "all", "installed"),
                ("dmtest-newer", "1:0.5", n, "installed"),
                ("dmtest-broken", "1.0", n, "half-configured"),
                ("libunrelated", "3.2-1", n, "installed"),
            ],
        );
    });
    let repo = Repo::new(&f.mp.w.path("apt"));
    repo.deb("dmtest-tool", "1.1", n);
    repo.deb("dmtest-tool", "1.1", if n == "arm64" { "amd64" } else { "arm64" });
    repo.deb("dmtest-doc", "2.0", "all");
    repo.deb("dmtest-newer", "3.0", n);
    repo.deb("dmtest-broken", "1.1", n);
    repo.deb("dmtest-absent", "1.0", n);
    repo.index();

    let out = import(&f, &repo);
    assert_eq!(out["added"], 6, "{out}");
    assert_eq!(out["skipped"], 0);
    assert!(out["signed_by"].as_str().unwrap().len() >= 40, "{out}");

    // The device scans at its next poll: each state, and nothing for what it does not hold.
    f.wait_until("a first scan", || device_updates(&f)["status"] != "unknown");
    let d = device_updates(&f);
    assert_eq!(
        states(&d, &f),
        pairs(&[
            (&format!("dmtest-broken 1.1 {n}"), "unknown"),
            ("dmtest-doc 2.0 all", "installed"),
            (&format!("dmtest-tool 1.1 {n}"), "required"),
        ]),
        "{d}"
    );
    assert_eq!(d["status"], "new updates available");
    let broken = d["updates"].as_array().unwrap().iter().find(|u| u["state"] == "unknown").unwrap();
    assert!(broken["reason"].as_str().unwrap().contains("half-configured"), "{broken}");
    assert_eq!(f.mp.log_text().matches("(full report)").count(), 1);

    // Per update and per collection.
    f.mp.admin(&["collection", "add", "--name", "all", "--rule", "all"]);
    let c = f.mp.admin_json(&["update", "compliance", "--collection", "all"]);
    assert_eq!(c["devices"], 1);
    assert_eq!(c["summary"]["new updates available"], 1, "{c}");
    assert!(c["updates"].as_array().unwrap().is_empty(), "a collection's report is its summary");
    let c = f.mp.admin_json(&["update", "compliance"]);
    let tool = c["updates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["package"] == "dmtest-tool" && u["arch"] == n)
        .unwrap();
    assert_eq!(
        (tool["required"].as_i64(), tool["installed"].as_i64()),
        (Some(1), Some(0)),
        "{tool}"
    );

    // The device installs 1.1 by other means; a new import (1.2) moves the catalog and the
    // device reports only what changed.
    dpkg_status(
        f.device(),
        &[
            ("dmtest-tool", "1.1", n, "installed"),
            ("dmtest-doc", "2.0", "all", "installed"),
            ("dmtest-newer", "1:0.5", n, "installed"),
            ("dmtest-broken", "1.1", n, "installed"),
        ],
    );
    std::thread::sleep(Duration::from_millis(1100)); // a release file dated a second later
    repo.deb("dmtest-tool", "1.2~rc1", n);
    repo.index();
    let out = import(&f, &repo);
    assert_eq!(out["added"], 1, "{out}");
    f.wait_until("a scan of the new catalog", || {
        states(&device_updates(&f), &f)
            .contains(&(format!("dmtest-tool 1.2~rc1 {n}"), "required".into()))
    });
    assert_eq!(
        states(&device_updates(&f), &f),
        pairs(&[
            (&format!("dmtest-broken 1.1 {n}"), "installed"),
            ("dmtest-doc 2.0 all", "installed"),
            (&format!("dmtest-tool 1.1 {n}"), "installed"),
            (&format!("dmtest-tool 1.2~rc1 {n}"), "required"),
        ])
    );
    assert_eq!(
        f.mp.log_text().matches("(full report)").count(),
        1,
        "the second report was changes only"
    );
    assert!(f.mp.log_text().contains("3 changed, 0 no longer apply"), "{}", f.mp.log_text());
    let listed = f.mp.admin_json(&["update", "list", "--package", "dmtest-tool"]);
    let old = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["version"] == "1.1" && u["arch"] == n)
        .unwrap();
    assert!(old["superseded_by"].is_i64(), "1.2~rc1 supersedes 1.1: {old}");

    // Approval copies the .deb, checked; a deployment takes approved updates only.
    let err = run(
        Command::new(bin("dmmp")).arg("--config").arg(f.mp.dir.join("dmmp.toml")).args([
            "update",
            "deploy",
            "--name",
            "d1",
            "--collection",
            "all",
            "--update",
            "dmtest-tool",
        ]),
        Duration::from_secs(30),
    );
    assert!(!err.status.success() && show(&err).contains("not approved"), "{}", show(&err));
    f.mp.admin(&["update", "approve", "dmtest-tool"]);
    let kept = f
        .mp
        .dir
        .join(format!("content/updates/fleet/pool/main/d/dmtest-tool/dmtest-tool_1.2~rc1_{n}.deb"));
    assert!(kept.is_file(), "{}", kept.display());
    // Outside its maintenance window a deployment waits (the window is an hour, two hours
    // from now).
    let hour =
        (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
            / 3600
            + 2)
            % 24;
    let window = format!("{hour:02}:00-{:02}:00", (hour + 1) % 24);
    f.mp.admin(&[
        "update",
        "deploy",
        "--name",
        "later",
        "--collection",
        "all",
        "--update",
        "dmtest-tool",
        "--maintenance-window",
        &window,
    ]);
    f.wait_until("the wait for the window", || {
        f.agent_log().contains("update deployment later waits for its maintenance window")
    });
    let busy = |u: &&Value| u["state"] == "failed" || u["state"] == "in_progress";
    assert!(!device_updates(&f)["updates"].as_array().unwrap().iter().any(|u| busy(&u)));

    // The collection's window counts for a deployment without its own.
    f.mp.admin(&["collection", "window", "all", &window]);
    f.mp.admin(&[
        "update",
        "deploy",
        "--name",
        "nightly",
        "--collection",
        "all",
        "--update",
        "dmtest-tool",
    ]);
    f.wait_until("the wait for the collection's window", || {
        f.agent_log().contains("update deployment nightly waits for its maintenance window")
    });
    assert!(!device_updates(&f)["updates"].as_array().unwrap().iter().any(|u| busy(&u)));
    let listed = f.mp.admin(&["collection", "list"]);
    assert!(listed.contains(&window), "{listed}");
    f.mp.admin(&["collection", "window", "all"]);

    // Without a window or a spread the deployment is due at once.
    let d = f.mp.admin_json(&[
        "update",
        "deploy",
        "--name",
        "d1",
        "--collection",
        "all",
        "--all-approved",
    ]);
    assert_eq!(d["updates"].as_array().unwrap().len(), 2, "{d}");

    // The device takes the deployment at its next poll; this agent manages a device root, not
    // the system, so apt is not run: the update is failed with the reason, not left in
    // progress.
    f.wait_until("the deployment's outcome", || {
        device_updates(&f)["updates"].as_array().unwrap().iter().any(|u| u["state"] == "failed")
    });
    let mine = device_updates(&f);
    let failed =
        mine["updates"].as_array().unwrap().iter().find(|u| u["state"] == "failed").unwrap();
    assert_eq!(failed["package"], "dmtest-tool");
    assert_eq!(failed["version"], "1.2~rc1");
    assert!(failed["reason"].as_str().unwrap().contains("system's apt and dpkg"), "{failed}");
    assert!(f.agent_log().contains("software updates not installed"), "{}", f.agent_log());

    // The same figures as reports, for the console, CSV and JSON.
    let csv = f.mp.admin(&["report", "update-compliance", "--csv"]);
    assert!(
        csv.starts_with("id,package,version,arch,required,installed,not required,unknown,failed"),
        "{csv}"
    );
    assert!(csv.contains(&format!(",dmtest-tool,1.2~rc1,{n},0,0,0,0,1,0,0")), "{csv}");
    let summary = f.mp.admin_json(&["report", "update-summary"]);
    assert_eq!(summary["rows"][0]["state"], "new updates available", "{summary}");
    let report = f.mp.admin(&["report", "device-updates", "--device", "dev-1"]);
    assert!(report.contains("system's apt and dpkg"), "{report}");
}

#[test]
fn repositories_that_are_not_what_their_signature_says_are_refused_and_change_nothing() {
    let f = Fleet::new("");
    let repo = Repo::new(&f.mp.w.path("apt"));
    repo.deb("dmtest-tool", "1.0", native());
    repo.index();
    import(&f, &repo);
    let before = f.mp.admin(&["update", "list", "--all-versions"]);

    // Signed by a key the keyring does not hold.
    let other = Repo::new(&f.mp.w.path("other"));
    let (code, err) = import_fails(&f, &repo, &other.keyring());
    assert_eq!(code, 93, "{err}");
    assert!(err.contains("does not verify") && err.contains("InRelease"), "{err}");

    // An index changed after signing.
    let index = repo.dir.join(format!("dists/stable/main/binary-{}/Packages.gz", native()));
    let good = std::fs::read(&index).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&index, &bad).unwrap();
    let (code, err) = import_fails(&f, &repo, &repo.keyring());
    assert_eq!(code, 94, "{err}");
    assert!(err.contains("Packages.gz") && err.contains("signed release file says"), "{err}");
    std::fs::write(&index, &good).unwrap();

    // A text added to InRelease outside its signature is not read.
    let inrelease = repo.dir.join("dists/stable/InRelease");
    let signed = std::fs::read_to_string(&inrelease).unwrap();
    std::fs::write(
        &inrelease,
        format!("Suite: evil\nSHA256:\n 00 1 main/binary-amd64/Packages\n\n{signed}"),
    )
    .unwrap();
    let out = run(
        Command::new(bin("dmmp"))
            .arg("--config")
            .arg(f.mp.dir.join("dmmp.toml"))
            .args([
                "--json", "update", "import", "--name", "fleet", "--suite", "stable", "--source",
            ])
            .arg(&repo.dir)
            .args(["--keyring", &repo.keyring()]),
        Duration::from_secs(60),
    );
    if out.status.success() {
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["added"], 0, "nothing new from unsigned text: {v}");
    } else {
        assert_eq!(out.status.code(), Some(93), "{}", show(&out));
    }
    std::fs::write(&inrelease, signed.as_bytes()).unwrap();

    // A release file older than the one imported (a rollback): kept from before, replayed.
    let old = f.mp.w.path("old-dists");
    copy_dir(&repo.dir.join("dists"), &old);
    std::thread::sleep(Duration::from_millis(1100));
    repo.deb("dmtest-tool", "1.1", native());
    repo.index();
    assert_eq!(import(&f, &repo)["added"], 1);
    let after = f.mp.admin(&["update", "list", "--all-versions"]);
    std::fs::remove_dir_all(repo.dir.join("dists")).unwrap();
    copy_dir(&old, &repo.dir.join("dists"));
    let (code, err) = import_fails(&f, &repo, &repo.keyring());
    assert_eq!(code, 98, "{err}");
    assert!(err.contains("never goes back"), "{err}");
    assert_eq!(f.mp.admin(&["update", "list", "--all-versions"]), after);
    assert_ne!(before, after);

    // A .deb that differs from its index is not approved.
    let deb = repo.dir.join(format!("pool/main/d/dmtest-tool/dmtest-tool_1.1_{}.deb", native()));
    let mut bytes = std::fs::read(&deb).unwrap();
    bytes.push(0);
    std::fs::write(&deb, bytes).unwrap();
    let out = run(
        Command::new(bin("dmmp")).arg("--config").arg(f.mp.dir.join("dmmp.toml")).args([
            "update",
            "approve",
            "dmtest-tool=1.1",
        ]),
        Duration::from_secs(30),
    );
    assert_eq!(out.status.code(), Some(94), "{}", show(&out));
    assert!(f.mp.admin_json(&["update", "list", "--approved"]).as_array().unwrap().is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    run_ok(Command::new("cp").arg("-a").arg(from).arg(to));
}

#[test]
fn an_https_mirror_is_imported_and_approved_from_as_a_folder_is() {
    let f = Fleet::new("");
    let repo = Repo::new(&f.mp.w.path("apt"));
    repo.deb("dmtest-tool", "1.0", native());
    repo.index();
    run_ok(Command::new("chmod").args(["-R", "a+rX"]).arg(f.mp.w.tmp.path()));
    let nginx = crate::agent::Nginx::start(&f.mp.w, &repo.dir);
    let url = format!("https://127.0.0.1:{}/", nginx.port);
    let ca = f.mp.w.pki.join("root-ca.pem");
    let dmmp = |extra: &[&str]| {
        run(
            Command::new(bin("dmmp"))
                .arg("--config")
                .arg(f.mp.dir.join("dmmp.toml"))
                .args([
                    "--json", "update", "import", "--name", "mirror", "--suite", "stable",
                    "--source", &url,
                ])
                .args(["--keyring", &repo.keyring()])
                .args(extra),
            Duration::from_secs(60),
        )
    };
    // Without the server's CA (the system's roots do not hold the test CA): refused.
    let out = dmmp(&[]);
    assert!(!out.status.success(), "{}", show(&out));
    assert!(show(&out).contains("cannot fetch"), "{}", show(&out));
    let out = dmmp(&["--source-ca", ca.to_str().unwrap()]);
    assert!(out.status.success(), "{}", show(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["added"], 1, "{v}");
    f.mp.admin(&["update", "approve", "dmtest-tool"]);
    assert!(
        nginx.access_log().contains(&format!(
            "GET /pool/main/d/dmtest-tool/dmtest-tool_1.0_{}.deb HTTP/1.1 200",
            native()
        )),
        "{}",
        nginx.access_log()
    );
    assert_eq!(f.mp.admin_json(&["update", "list", "--approved"]).as_array().unwrap().len(), 1);
    assert_eq!(
        f.mp.admin_json(&["update", "repositories"])[0]["source"],
        url.trim_end_matches('/')
    );
}

#[test]
fn security_updates_are_told_apart_approved_by_rules_and_deployed_on_their_own() {
    let n = native();
    let f = Fleet::new_with("", |mp| {
        dpkg_status(
            &mp.w.device,
            &[("dmtest-tool", "1.0", n, "installed"), ("dmtest-lib", "1.0", n, "installed")],
        );
    });
    let main = Repo::new(&f.mp.w.path("main"));
    main.deb("dmtest-tool", "1.1", n);
    main.index();
    import(&f, &main);
    // A security suite signed with Release.gpg beside Release only (no InRelease).
    let sec = Repo::new(&f.mp.w.path("sec"));
    sec.deb("dmtest-lib", "1.1", n);
    apt_repo(&[
        "index",
        sec.dir.to_str().unwrap(),
        "stable-security",
        "amd64 arm64",
        sec.key.to_str().unwrap(),
    ]);
    std::fs::remove_file(sec.dir.join("dists/stable-security/InRelease")).unwrap();
    let out = f.mp.admin(&["update", "rule", "add", "--name", "security", "--security-only"]);
    assert!(out.contains("approval rule security added"), "{out}");
    let v = f.mp.admin_json(&[
        "update",
        "import",
        "--name",
        "security",
        "--source",
        sec.dir.to_str().unwrap(),
        "--suite",
        "stable-security",
        "--keyring",
        &sec.keyring(),
    ]);
    assert_eq!(
        (v["added"].as_i64(), v["security"].as_bool(), v["approved_by_rules"].as_i64()),
        (Some(1), Some(true), Some(1)),
        "{v}"
    );
    let repos = f.mp.admin_json(&["update", "repositories"]);
    let files: Vec<String> =
        repos.as_array().unwrap().iter().find(|r| r["name"] == "security").unwrap()["metadata"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["path"].as_str().unwrap().to_string())
            .collect();
    assert!(files.contains(&"dists/stable-security/Release.gpg".to_string()), "{files:?}");

    let approved = f.mp.admin_json(&["update", "list", "--approved"]);
    let approved: Vec<(&str, &str)> = approved
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["package"].as_str().unwrap(), u["approved_by"].as_str().unwrap()))
        .collect();
    assert_eq!(approved, vec![("dmtest-lib", "rule security")]);
    f.mp.admin(&["collection", "add", "--name", "all", "--rule", "all"]);
    f.mp.admin(&["update", "approve", "dmtest-tool"]);
    let d = f.mp.admin_json(&[
        "update",
        "deploy",
        "--name",
        "sec",
        "--collection",
        "all",
        "--security",
    ]);
    let lib = f.mp.admin_json(&["update", "list", "--package", "dmtest-lib"]);
    let lib_ids: Vec<&Value> = lib.as_array().unwrap().iter().map(|u| &u["id"]).collect();
    assert_eq!(
        d["updates"].as_array().unwrap().iter().collect::<Vec<_>>(),
        lib_ids,
        "security only: {d}"
    );
    f.wait_until("a scan", || device_updates(&f)["status"] != "unknown");
}
