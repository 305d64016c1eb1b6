//! The web console (docs/console.md) over HTTPS from this process: an administrator's session
//! and nothing else opens it, what devices sent is escaped, CSV cells cannot run, failed
//! logins are limited and logged.

use std::process::Command;
use std::time::Duration;

use crate::mp::{Mp, as_device, curl};
use crate::util::{bin, run, show};

const PASSWORD: &str = "a long console password";

fn login(mp: &Mp, name: &str, password: &str) -> crate::mp::Resp {
    let body = format!("name={name}&password={}", password.replace(' ', "+"));
    curl(
        mp,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/x-www-form-urlencoded",
            "--data-binary",
            &body,
            &format!("{}/console/login", mp.url()),
        ],
    )
}

fn get(mp: &Mp, cookie: Option<&str>, path: &str) -> crate::mp::Resp {
    let url = format!("{}{path}", mp.url());
    match cookie {
        Some(c) => curl(mp, &["-H", &format!("Cookie: {c}"), &url]),
        None => curl(mp, &[&url]),
    }
}

#[test]
fn the_console_shows_reports_to_administrators_only_and_escapes_what_devices_sent() {
    let mp = Mp::start(|_| {});
    let pw = mp.w.path("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    mp.admin(&["admin", "add", "--name", "admin", "--password-file", pw.to_str().unwrap()]);
    let short = mp.w.path("short");
    std::fs::write(&short, "short\n").unwrap();
    let out = run(
        Command::new(bin("dmmp")).arg("--config").arg(mp.dir.join("dmmp.toml")).args([
            "admin",
            "add",
            "--name",
            "weak",
            "--password-file",
            short.to_str().unwrap(),
        ]),
        Duration::from_secs(20),
    );
    assert_ne!(out.status.code(), Some(0), "a short password was accepted: {}", show(&out));

    // A device that sends markup and a spreadsheet formula.
    mp.admin(&["device", "add", "--id", "dev-1", "--token", "tok-dev-1"]);
    assert_eq!(as_device(&mp, "tok-dev-1", &[&mp.base("dev-1")]).status, 200);
    let body = r#"{"data":{"client_health":"unhealthy-local","client_health_reason":"<script>alert(1)</script>","model":"=HYPERLINK(\"http://x\")"}}"#;
    let url = format!("{}/configData", mp.base("dev-1"));
    let r = as_device(
        &mp,
        "tok-dev-1",
        &["-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", body, &url],
    );
    assert_eq!(r.status, 200, "{}", r.text());

    // Nothing without a session, and a device's credentials are no session.
    let r = get(&mp, None, "/console/reports/unhealthy-local");
    assert_eq!((r.status, r.header("location")), (303, Some("/console/login")));
    let r =
        as_device(&mp, "tok-dev-1", &[&format!("{}/console/reports/unhealthy-local", mp.url())]);
    assert_eq!(r.status, 303, "a device token opened the console");
    assert_eq!(get(&mp, Some("dm_console=forged"), "/console/").status, 303);

    // An administrator logs in: the cookie is Secure, HttpOnly, SameSite=Strict.
    let r = login(&mp, "admin", PASSWORD);
    assert_eq!((r.status, r.header("location")), (303, Some("/console/")), "{}", r.text());
    let set = r.header("set-cookie").unwrap().to_string();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(flag), "{set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();

    // The report as HTML, with the device's text escaped, and the summary linked.
    let r = get(&mp, Some(&cookie), "/console/reports/unhealthy-local");
    assert_eq!(r.status, 200);
    let html = r.text();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
    assert!(!html.contains("<script>"), "markup from a device was rendered: {html}");
    assert!(html.contains("href=\"/console/devices/DEFAULT/dev-1\""), "{html}");
    assert!(r.header("content-security-policy").unwrap().contains("default-src 'none'"));
    let summary = get(&mp, Some(&cookie), "/console/reports/health-summary").text();
    assert!(summary.contains("href=\"/console/reports/unhealthy-local\""), "{summary}");
    // CSV and JSON at the same URL; the formula is neutralised.
    let csv = get(&mp, Some(&cookie), "/console/reports/unhealthy-local?format=csv");
    assert_eq!(csv.header("content-type"), Some("text/csv; charset=utf-8"));
    assert!(csv.text().starts_with("device,tenant,"), "{}", csv.text());
    let json = get(&mp, Some(&cookie), "/console/reports/unhealthy-local?format=json").json();
    assert_eq!(json["rows"][0]["device"], "dev-1");
    assert_eq!(json["rows"][0]["why"], "<script>alert(1)</script>");
    let page = get(&mp, Some(&cookie), "/console/devices/DEFAULT/dev-1").text();
    assert!(page.contains("&lt;script&gt;") && !page.contains("<script>"), "{page}");
    assert!(page.contains("=HYPERLINK(&quot;http://x&quot;)"), "{page}");
    let found = get(&mp, Some(&cookie), "/console/search?q=hyperlink").text();
    assert!(found.contains(">dev-1</a>"), "{found}");
    // Sorting and filtering.
    let filtered =
        get(&mp, Some(&cookie), "/console/reports/health-summary?filter=local&format=json").json();
    assert_eq!(filtered["rows"].as_array().unwrap().len(), 1, "{filtered}");

    // Distribution status with its progress plot, drawn on the server.
    let ad =
        crate::mp::advertise_package(&mp, "tools", &[("run.sh", b"#!/bin/sh\n")], &["--mandatory"]);
    let r = get(
        &mp,
        Some(&cookie),
        &format!("/console/reports/distribution-status?advertisement={ad}"),
    );
    let html = r.text();
    assert!(html.contains(&format!(">{ad}</td>")) && html.contains("<svg"), "{html}");

    // Failed logins: refused, logged, and limited to five a minute from one address.
    for _ in 0..5 {
        assert_eq!(login(&mp, "admin", "wrong password!").status, 401);
    }
    let r = login(&mp, "admin", PASSWORD);
    assert_eq!((r.status, r.header("retry-after")), (429, Some("60")));
    assert!(mp.log_text().contains("console login failed for \"admin\" from 127.0.0.1"));
    assert!(mp.log_text().contains("console login from 127.0.0.1 refused: 5 failures"));
    // Logging out ends the session.
    let r = curl(
        &mp,
        &[
            "-X",
            "POST",
            "-H",
            &format!("Cookie: {cookie}"),
            &format!("{}/console/logout", mp.url()),
        ],
    );
    assert_eq!(r.status, 303);
    assert_eq!(get(&mp, Some(&cookie), "/console/").status, 303);
}
