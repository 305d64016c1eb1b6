//! The client installation reports (docs/health.md) end to end: a fleet of simulated devices
//! in each condition, speaking DDI to the real `dmmp` on loopback, and every report's numbers
//! in text, CSV and JSON from `dmmp report`.

use std::time::Duration;

use serde_json::Value;

use crate::mp::{Mp, as_device};

/// A device that polls, sends `inventory`, and (when given) one status message from setup.
fn device(mp: &Mp, cid: &str, inventory: &str, setup: Option<(u32, &str, &str)>) {
    let token = format!("tok-{cid}");
    mp.admin(&["device", "add", "--id", cid, "--token", &token]);
    let r = as_device(mp, &token, &[&mp.base(cid)]);
    assert_eq!(r.status, 200, "{}", r.text());
    let body = format!(r#"{{"data":{inventory}}}"#);
    let url = format!("{}/configData", mp.base(cid));
    let r = as_device(
        mp,
        &token,
        &["-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", &body, &url],
    );
    assert_eq!(r.status, 200, "{}", r.text());
    if let Some((id, code, text)) = setup {
        let body = format!(
            r#"[{{"message_id":{id},"code":"{code}","component":"DMClientSetup","time":"2026-11-28T12:00:00Z","text":"{text}","final_result":true,"details":["step 6/9: enroll-certificate failed"],"report_id":"{cid}-{id}"}}]"#
        );
        let url = format!("{}/dm/statusMessages", mp.base(cid));
        let r = as_device(
            mp,
            &token,
            &["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &body, &url],
        );
        assert!(r.status < 300, "{}", r.text());
    }
}

fn report(mp: &Mp, name: &str) -> Value {
    mp.admin_json(&["report", name])
}

fn cells(v: &Value, column: &str) -> Vec<String> {
    v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[column].as_str().unwrap_or("").to_string())
        .collect()
}

#[test]
fn every_report_counts_a_fleet_in_each_condition() {
    // Devices poll every 2 s here; a device silent for 100 polls is the communication rule.
    let mp = Mp::start(|t| *t = t.replace("silent_polls = 3", "silent_polls = 100"));
    let healthy =
        r#"{"client_health":"healthy","certificate_health":"valid","client_version":"1.2.0.0"}"#;
    device(&mp, "ok-1", healthy, Some((11010, "0x00000000", "the client 1.2.0.0 was installed")));
    device(&mp, "ok-2", healthy, None);
    device(
        &mp,
        "cert-1",
        r#"{"client_health":"healthy","certificate_health":"expired","certificate_expires":"2026-11-01T00:00:00Z ab12"}"#,
        None,
    );
    device(
        &mp,
        "local-1",
        r#"{"client_health":"unhealthy-local","client_health_reason":"=cmd|' /C calc'!A0"}"#,
        Some((11015, "0x80070643", "setup failed; the device was returned to its previous state")),
    );
    device(
        &mp,
        "local-2",
        r#"{"client_health":"unhealthy-local","client_health_reason":"last setup failed"}"#,
        Some((11015, "0x80070643", "setup failed")),
    );
    device(
        &mp,
        "desk-1",
        r#"{"client_health":"healthy","tethered":"yes","tethered_devices":"dev-7 1.2.0.0","tethered_last":"dev-7: installed (0x00000000) t"}"#,
        None,
    );
    mp.admin(&["device", "add", "--id", "never-1", "--token", "tok-never-1"]);
    // The last-seen times reach the database within a second.
    std::thread::sleep(Duration::from_millis(1500));

    let s = report(&mp, "health-summary");
    let count = |state: &str| {
        s["rows"].as_array().unwrap().iter().find(|r| r["state"] == state).unwrap()["devices"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(count("devices"), "7", "{s}");
    assert_eq!(count("healthy"), "3", "{s}");
    assert_eq!(count("unhealthy"), "4", "{s}");
    assert_eq!(count("unhealthy: certificate"), "1", "{s}");
    assert_eq!(count("unhealthy: communication"), "1", "{s}");
    assert_eq!(count("unhealthy: local"), "2", "{s}");

    assert_eq!(cells(&report(&mp, "healthy"), "device"), ["desk-1", "ok-1", "ok-2"]);
    assert_eq!(
        cells(&report(&mp, "unhealthy"), "device"),
        ["cert-1", "local-1", "local-2", "never-1"]
    );
    let cert = report(&mp, "unhealthy-certificate");
    assert_eq!(cells(&cert, "device"), ["cert-1"]);
    assert!(
        cells(&cert, "why")[0].contains("client certificate expired (2026-11-01T00:00:00Z ab12)")
    );
    let comm = report(&mp, "unhealthy-communication");
    assert_eq!(
        (cells(&comm, "device"), cells(&comm, "why")),
        (vec!["never-1".to_string()], vec!["it never polled".to_string()])
    );
    assert_eq!(cells(&report(&mp, "unhealthy-local"), "device"), ["local-1", "local-2"]);

    let failures = report(&mp, "deployment-failures");
    assert_eq!(cells(&failures, "code"), ["0x80070643"]);
    assert_eq!(cells(&failures, "devices"), ["2"]);
    assert_eq!(cells(&failures, "which"), ["local-1 local-2"]);
    assert_eq!(cells(&report(&mp, "deployment-successes"), "device"), ["ok-1"]);
    let details = mp.admin_json(&["report", "deployment-details", "--device", "local-1"]);
    assert_eq!(cells(&details, "message"), ["11015"]);
    assert_eq!(cells(&details, "log excerpt"), ["step 6/9: enroll-certificate failed"]);
    let desks = report(&mp, "tethered-desktops");
    assert_eq!(
        (cells(&desks, "desktop"), cells(&desks, "tethered devices")),
        (vec!["desk-1".to_string()], vec!["dev-7 1.2.0.0".to_string()])
    );
    assert!(cells(&report(&mp, "distribution-status"), "advertisement").is_empty());

    // The same rows as text and CSV; a cell a spreadsheet would run is neutralised.
    let text = mp.admin(&["report", "unhealthy-local"]);
    assert!(text.starts_with("Devices unhealthy due to local client issues\n"), "{text}");
    assert!(text.contains("local-2") && text.contains("last setup failed"), "{text}");
    let csv = mp.admin(&["report", "unhealthy-local", "--csv"]);
    assert!(csv.starts_with("device,tenant,client version,last poll,health,why\r\n"), "{csv}");
    assert!(csv.contains(",'=cmd|' /C calc'!A0\r\n"), "{csv}");
    let out = std::process::Command::new(crate::util::bin("dmmp"))
        .arg("--config")
        .arg(mp.dir.join("dmmp.toml"))
        .args(["report", "no-such-report"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("the reports are distribution-status"));
}
