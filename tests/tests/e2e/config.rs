//! Configuration items end to end (docs/configuration-items.md): items written as TOML, kept
//! in the real `dmmp`'s catalog, signed into a configuration package by the real `dmpack`,
//! advertised, applied by the real agent on a device root, kept in place against drift, and
//! reported in `dmmp compliance`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::agent::Fleet;
use crate::util::*;

/// The device's files before any item: what the items change and what a restore puts back.
fn seed(device: &Path) {
    let w = |rel: &str, text: &str| {
        let p = device.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    w("etc/app/app.ini", "; the vendor's comment\n[log]\nlevel = debug\nfile=/var/log/app.log\n");
    w("etc/app/app.json", "{\"name\": \"app\", \"limits\": {\"connections\": 10}}\n");
    w("etc/hosts", "127.0.0.1 localhost\n");
    w(
        "lib/systemd/system/demo.service",
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n",
    );
    w("proc/sys/net/ipv4/ip_forward", "1\n");
}

fn host_item(version: u32) -> String {
    format!(
        r#"name = "host-baseline"
version = {version}
platforms = ["{}"]
restore_on_removal = true

[[settings]]
name = "log-level"
value = "warn"
target = {{ provider = "ini", path = "etc/app/app.ini", section = "log", key = "level" }}

[[settings]]
name = "connections"
type = "integer"
rule = "at-least"
value = 50
target = {{ provider = "json", path = "etc/app/app.json", pointer = "/limits/connections" }}

[[settings]]
name = "motd"
value = "This device is managed.\n"
target = {{ provider = "file", path = "etc/motd", mode = "0644" }}

[[settings]]
name = "mp-host"
value = true
target = {{ provider = "line", path = "etc/hosts", line = "10.9.8.7 mp.example" }}

[[settings]]
name = "demo-unit"
value = true
target = {{ provider = "systemd", unit = "demo.service" }}

[[settings]]
name = "forwarding"
value = "0"
target = {{ provider = "sysctl", key = "net.ipv4.ip_forward" }}

[[settings]]
name = "api-key"
value = "s3cret-value"
secret = true
target = {{ provider = "ini", path = "etc/app/secret.ini", section = "", key = "ApiKey" }}
"#,
        host_platform()
    )
}

const OTHER_PLATFORM_ITEM: &str = r#"name = "riscv-only"
version = 1
platforms = ["linux-riscv64"]

[[settings]]
name = "motd"
value = "never here"
target = { provider = "file", path = "etc/riscv" }
"#;

const MONITOR_ITEM: &str = r#"name = "watch-hosts"
version = 1
monitor_only = true

[[settings]]
name = "localhost"
value = true
severity = "critical"
target = { provider = "line", path = "etc/hosts", line = "127.0.0.1 localhost" }
"#;

const KEEP_ITEM: &str = r#"name = "keep-banner"
version = 1

[[settings]]
name = "banner"
value = "kept"
target = { provider = "file", path = "etc/banner" }
"#;

/// Writes item files, adds them to the catalog, signs them into package `name` `version`,
/// imports it, and advertises it to every device.
fn advertise_items(f: &Fleet, version: &str, items: &[(&str, &str)]) -> String {
    let mp = &f.mp;
    let mut args: Vec<String> = vec![
        "package".into(),
        "--kind".into(),
        "configuration".into(),
        "--name".into(),
        "baseline".into(),
        "--package-version".into(),
        version.into(),
    ];
    for (name, toml) in items {
        let path = mp.w.path(&format!("{name}-{version}.toml"));
        std::fs::write(&path, toml).unwrap();
        // The catalog keeps each version once (a second add is a conflict, exit 24); show
        // prints it back as JSON for dmpack.
        let added = run(
            Command::new(bin("dmmp")).arg("--config").arg(mp.dir.join("dmmp.toml")).args([
                "config-item",
                "add",
                "--file",
                path.to_str().unwrap(),
            ]),
            Duration::from_secs(20),
        );
        assert!(matches!(added.status.code(), Some(0 | 24)), "{}", show(&added));
        let shown = mp.admin(&["config-item", "show", name]);
        let json = mp.w.path(&format!("{name}-{version}.json"));
        std::fs::write(&json, shown).unwrap();
        args.push("--items".into());
        args.push(json.display().to_string());
    }
    let out = mp.w.path(&format!("baseline-{version}"));
    args.extend(["--out".into(), out.display().to_string()]);
    args.extend(["--key".into(), mp.w.pki.join("publisher.key").display().to_string()]);
    args.extend(["--cert".into(), mp.w.pki.join("publisher.pem").display().to_string()]);
    run_ok(Command::new(bin("dmpack")).args(&args));
    let roots = mp.w.pki.join("root-ca.pem");
    mp.admin(&[
        "config-package",
        "add",
        "--source",
        out.to_str().unwrap(),
        "--roots",
        roots.to_str().unwrap(),
    ]);
    let pkg = format!("baseline@{version}");
    let prog = format!("baseline-{version}");
    mp.admin(&["program", "add", "--package", &pkg, "--name", &prog]);
    if !mp.admin(&["collection", "list"]).contains("everyone") {
        mp.admin(&["collection", "add", "--name", "everyone", "--rule", "all"]);
    }
    let ad = format!("baseline-{version}-ad");
    mp.admin(&[
        "advertise",
        "--name",
        &ad,
        "--program",
        &prog,
        "--collection",
        "everyone",
        "--mandatory",
    ]);
    ad
}

fn compliance(f: &Fleet) -> Value {
    f.mp.admin_json(&["compliance", "--device", "dev-1"])
}

fn read(device: &Path, rel: &str) -> String {
    std::fs::read_to_string(device.join(rel)).unwrap_or_default()
}

#[test]
fn configuration_items_are_applied_kept_in_place_reported_and_removed() {
    let f = Fleet::new_with("", |mp| seed(&mp.w.device));
    let device: PathBuf = f.device().to_path_buf();

    // 1. A package of items for two platforms: this device's are applied, the other's not.
    let ad = advertise_items(
        &f,
        "1.0.0.0",
        &[
            ("host-baseline", &host_item(1)),
            ("riscv-only", OTHER_PLATFORM_ITEM),
            ("watch-hosts", MONITOR_ITEM),
            ("keep-banner", KEEP_ITEM),
        ],
    );
    let st = f.wait_status(&ad, "the configuration", |s| s["counts"]["finished"] == 1);
    assert_eq!(st["devices"][0]["last_code"], 10080, "{st}");
    assert_eq!(
        read(&device, "etc/app/app.ini"),
        "; the vendor's comment\n[log]\nlevel = warn\nfile=/var/log/app.log\n"
    );
    let json: Value = serde_json::from_str(&read(&device, "etc/app/app.json")).unwrap();
    assert_eq!(json["limits"]["connections"], 50);
    assert_eq!(json["name"], "app");
    assert_eq!(read(&device, "etc/motd"), "This device is managed.\n");
    assert!(read(&device, "etc/hosts").contains("10.9.8.7 mp.example"));
    assert!(
        device
            .join("etc/systemd/system/multi-user.target.wants/demo.service")
            .symlink_metadata()
            .is_ok()
    );
    assert_eq!(read(&device, "proc/sys/net/ipv4/ip_forward"), "0\n");
    assert!(read(&device, "etc/sysctl.d/60-dm-net.ipv4.ip_forward.conf").contains("= 0"));
    assert!(!device.join("etc/riscv").exists(), "another platform's item was applied");
    assert_eq!(read(&device, "etc/banner"), "kept");

    // The catalog lists the items; compliance arrives with the inventory.
    let list = f.mp.admin(&["config-item", "list"]);
    assert!(list.contains("host-baseline") && list.contains("package baseline@1.0.0.0"), "{list}");
    f.wait_until("the compliance report", || {
        compliance(&f)["devices"][0]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("compliant 3,") && s.ends_with("not-applicable 1"))
    });

    // 2. Drift: a user changes a value; the agent puts it back within seconds and says so.
    std::fs::write(
        device.join("etc/app/app.ini"),
        "; the vendor's comment\n[log]\nlevel = trace\nfile=/var/log/app.log\n",
    )
    .unwrap();
    f.wait_until("the remediation", || read(&device, "etc/app/app.ini").contains("level = warn"));
    let log = f.agent_log();
    assert!(log.contains("item host-baseline setting log-level: remediated"), "{log}");
    assert!(log.contains("(was trace)"), "{log}");
    assert!(!log.contains("s3cret-value"), "a secret value reached the log");

    // 3. Monitor-only drift is reported and left.
    std::fs::write(device.join("etc/hosts"), "10.9.8.7 mp.example\n").unwrap();
    f.wait_until("the monitor-only report", || {
        let c = compliance(&f);
        c["devices"][0]["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|i| i["item"] == "watch-hosts" && i["detail"]["state"] == "non-compliant")
        })
    });
    assert!(
        !read(&device, "etc/hosts").contains("127.0.0.1 localhost"),
        "a monitor-only item changed the file"
    );
    let c = compliance(&f);
    let item = c["devices"][0]["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["item"] == "watch-hosts")
        .unwrap()
        .clone();
    assert_eq!(item["detail"]["settings"][0]["expected"], "true", "{c}");
    assert_eq!(item["detail"]["settings"][0]["actual"], "false", "{c}");
    let by_ad = f.mp.admin_json(&["compliance", "--advertisement", &ad]);
    assert_eq!(by_ad["devices"][0]["device"], "dev-1", "{by_ad}");
    assert_eq!(by_ad["devices"][0]["items"][0]["item"], "watch-hosts", "{by_ad}");
    let text = f.mp.admin(&["compliance"]);
    assert!(text.contains("watch-hosts") && text.contains("non-compliant"), "{text}");
    assert!(!serde_json::to_string(&c).unwrap().contains("s3cret-value"));

    // Put right by hand: the item is compliant again, and its detail leaves the server.
    std::fs::write(device.join("etc/hosts"), "127.0.0.1 localhost\n10.9.8.7 mp.example\n").unwrap();
    f.wait_until("the detail to go", || {
        let c = compliance(&f);
        c["devices"][0]["items"].as_array().is_some_and(Vec::is_empty)
            && c["devices"][0]["summary"].as_str().is_some_and(|s| s.starts_with("compliant 3,"))
    });

    // 4. Version 2 drops two items: the one that says so is put back, the other left.
    let ad2 = advertise_items(&f, "2.0.0.0", &[("watch-hosts", MONITOR_ITEM)]);
    f.wait_status(&ad2, "the second configuration", |s| {
        s["counts"]["finished"] == 1 || s["counts"]["error"] == 1
    });
    assert_eq!(
        read(&device, "etc/app/app.ini"),
        "; the vendor's comment\n[log]\nlevel = debug\nfile=/var/log/app.log\n",
        "restored to what the item first replaced (not the drift it put back since)"
    );
    let json: Value = serde_json::from_str(&read(&device, "etc/app/app.json")).unwrap();
    assert_eq!(json["limits"]["connections"], 10);
    assert!(!device.join("etc/motd").exists());
    assert!(
        device
            .join("etc/systemd/system/multi-user.target.wants/demo.service")
            .symlink_metadata()
            .is_err()
    );
    assert_eq!(read(&device, "proc/sys/net/ipv4/ip_forward"), "1\n");
    assert!(!device.join("etc/sysctl.d/60-dm-net.ipv4.ip_forward.conf").exists());
    assert_eq!(
        read(&device, "etc/banner"),
        "kept",
        "an item that does not restore leaves its values"
    );
}

/// A device with the host baseline applied, and its agent stopped (killed) so a test can
/// drift files and run the agent its own way.
fn baseline_applied_then_agent_killed() -> (Fleet, PathBuf) {
    let f = Fleet::new_with("", |mp| seed(&mp.w.device));
    let device = f.device().to_path_buf();
    let ad = advertise_items(&f, "1.0.0.0", &[("host-baseline", &host_item(1))]);
    f.wait_status(&ad, "the configuration", |s| s["counts"]["finished"] == 1);
    kill_agent(&device);
    (f, device)
}

#[test]
fn an_agent_killed_while_it_applies_leaves_every_file_old_or_new() {
    let (f, device) = baseline_applied_then_agent_killed();
    // Drift in three files, then an agent that dies (SIGKILL) in the middle of putting them
    // back: at its second write.
    std::fs::write(device.join("etc/app/app.ini"), "[log]\nlevel = trace\n").unwrap();
    std::fs::write(device.join("etc/app/app.json"), "{\"limits\": {\"connections\": 1}}").unwrap();
    std::fs::write(device.join("etc/motd"), "changed by hand\n").unwrap();
    let agent = device.join("opt/dm/current/dmsvc");
    let out = run(
        Command::new(&agent)
            .arg("--device-root")
            .arg(&device)
            .env("DM_FAILPOINTS", "config-write=kill@2"),
        Duration::from_secs(60),
    );
    assert_eq!(out.status.code(), None, "killed: {}", show(&out));
    let ini = read(&device, "etc/app/app.ini");
    let json = read(&device, "etc/app/app.json");
    let motd = read(&device, "etc/motd");
    assert!(ini == "[log]\nlevel = trace\n" || ini == "[log]\nlevel = warn\n", "{ini}");
    assert!(
        json == "{\"limits\": {\"connections\": 1}}" || json.contains("\"connections\": 50"),
        "{json}"
    );
    assert!(motd == "changed by hand\n" || motd == "This device is managed.\n", "{motd}");
    let tmp: Vec<String> = std::fs::read_dir(device.join("etc/app"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp") || n.starts_with('.'))
        .collect();
    assert!(tmp.is_empty(), "temporary files left: {tmp:?}");
    // The next start finishes the job.
    start_agent(&device);
    f.wait_until("the items applied after the restart", || {
        read(&device, "etc/app/app.ini").contains("level = warn")
            && read(&device, "etc/motd") == "This device is managed.\n"
            && read(&device, "etc/app/app.json").contains("\"connections\": 50")
    });
}

#[test]
fn a_read_only_file_system_is_an_error_for_its_settings_and_the_others_still_apply() {
    let (f, device) = baseline_applied_then_agent_killed();
    // Drift in a file on a read-only mount and in one that is not; the agent runs in a mount
    // namespace where etc/app is read-only, for a few seconds.
    std::fs::write(device.join("etc/app/app.ini"), "[log]\nlevel = trace\n").unwrap();
    std::fs::write(device.join("etc/motd"), "changed by hand\n").unwrap();
    let app = device.join("etc/app");
    let agent = device.join("opt/dm/current/dmsvc");
    let script = format!(
        "mount --bind {a} {a} && mount -o remount,ro,bind {a} && exec timeout -s TERM 6 {agent} --device-root {d}",
        a = app.display(),
        agent = agent.display(),
        d = device.display()
    );
    let out = run(
        Command::new("unshare").args(["-m", "--propagation", "private", "sh", "-c", &script]),
        Duration::from_secs(60),
    );
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("unshare failed"),
        "cannot make a mount namespace (the tests need root): {}",
        show(&out)
    );
    let log = f.agent_log();
    assert!(
        log.contains("item host-baseline setting log-level: error")
            && log.contains("Read-only file system"),
        "{log}"
    );
    assert!(log.contains("item host-baseline setting motd: remediated"), "{log}");
    assert_eq!(
        read(&device, "etc/app/app.ini"),
        "[log]\nlevel = trace\n",
        "the read-only file is as it was"
    );
    assert_eq!(read(&device, "etc/motd"), "This device is managed.\n");
}
