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
    assert!(summary.contains("href=\"/console/reports/unhealthy\""), "{summary}");
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
    // Its numbers link to the devices behind them.
    crate::mp::poll_until_link(&mp, "tok-dev-1", "dev-1", "deploymentBase");
    let q = format!("advertisement={ad}");
    let j =
        get(&mp, Some(&cookie), &format!("/console/reports/distribution-status?{q}&format=json"))
            .json();
    assert_eq!(
        (j["rows"][0]["targeted"].as_str(), j["rows"][0]["failed"].as_str()),
        (Some("1"), Some("0")),
        "{j}"
    );
    let html = get(&mp, Some(&cookie), &format!("/console/reports/distribution-status?{q}")).text();
    let behind = format!("/console/reports/advertisement-devices?{q}&amp;state=targeted");
    assert!(html.contains(&format!("href=\"{behind}\">1</a>")), "{html}");
    let j =
        get(&mp, Some(&cookie), &format!("{}&format=json", behind.replace("&amp;", "&"))).json();
    assert_eq!(j["rows"][0]["device"], "dev-1", "{j}");
    let none = get(
        &mp,
        Some(&cookie),
        &format!("/console/reports/advertisement-devices?{q}&state=failed&format=json"),
    )
    .json();
    assert_eq!(none["rows"].as_array().unwrap().len(), 0, "{none}");

    // Failed logins: refused, logged, and limited to five a minute from one address.
    for _ in 0..5 {
        assert_eq!(login(&mp, "admin", "wrong password!").status, 401);
    }
    let r = login(&mp, "admin", PASSWORD);
    // Until the first failure leaves the minute: 60 s, less what the five logins took (their
    // password hashing is slow on purpose, and slower on a loaded machine).
    let wait: u64 = r.header("retry-after").and_then(|v| v.parse().ok()).unwrap_or(0);
    assert_eq!(r.status, 429);
    assert!((50..=60).contains(&wait), "retry-after {wait}");
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

/// Logs `name` in and returns the session cookie.
fn session(mp: &Mp, name: &str) -> String {
    let pw = mp.w.path("password");
    std::fs::write(&pw, format!("{PASSWORD}\n")).unwrap();
    mp.admin(&["admin", "add", "--name", name, "--password-file", pw.to_str().unwrap()]);
    let r = login(mp, name, PASSWORD);
    assert_eq!(r.status, 303, "{}", r.text());
    r.header("set-cookie").unwrap().split(';').next().unwrap().to_string()
}

/// An RFC 3339 time `secs` from now.
fn from_now(secs: i64) -> String {
    let out = run(
        Command::new("date").args(["-u", "-d", &format!("{secs} seconds"), "+%Y-%m-%dT%H:%M:%SZ"]),
        Duration::from_secs(5),
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[test]
fn a_pinned_client_certificate_opens_the_console_without_a_password_while_it_is_valid() {
    let mp = Mp::start(|_| {});
    let (cert, key) = mp.w.cert("ops", "client", &[]);
    let (stranger, stranger_key) = mp.w.cert("stranger", "client", &[]);
    let until = from_now(3);
    let (brief, brief_key) = mp.w.cert("brief", "client", &["--valid-until", &until]);
    let (old, _) = mp.w.cert("old", "client", &["--valid-until", &from_now(-60)]);
    mp.admin(&["admin", "certificate", "--name", "ops", "--file", cert.to_str().unwrap()]);
    mp.admin(&["admin", "certificate", "--name", "brief", "--file", brief.to_str().unwrap()]);
    let out = run(
        Command::new(bin("dmmp")).arg("--config").arg(mp.dir.join("dmmp.toml")).args([
            "admin",
            "certificate",
            "--name",
            "old",
            "--file",
            old.to_str().unwrap(),
        ]),
        Duration::from_secs(20),
    );
    assert_ne!(out.status.code(), Some(0), "an expired certificate was pinned: {}", show(&out));
    assert!(show(&out).contains("expired"), "{}", show(&out));

    let with = |c: &std::path::Path, k: &std::path::Path, path: &str| {
        let url = format!("{}{path}", mp.url());
        curl(&mp, &["--cert", c.to_str().unwrap(), "--key", k.to_str().unwrap(), &url])
    };
    let r = with(&cert, &key, "/console/reports/health-summary?format=json");
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["report"], "health-summary");
    assert!(with(&cert, &key, "/console/").text().contains("Devices by health"));
    // A certificate nobody pinned, from the same CA, is no administrator; nor is no certificate.
    let r = with(&stranger, &stranger_key, "/console/reports/health-summary");
    assert_eq!((r.status, r.header("location")), (303, Some("/console/login")));
    assert_eq!(get(&mp, None, "/console/").status, 303);
    // A pinned certificate opens the console until it expires, and not a second longer.
    assert_eq!(with(&brief, &brief_key, "/console/").status, 200);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(with(&brief, &brief_key, "/console/").status, 303);
    let log = mp.log_text();
    assert!(
        log.contains("the certificate of administrator brief") && log.contains("is expired"),
        "{log}"
    );
}

#[test]
fn reports_page_through_a_hundred_thousand_devices() {
    const N: usize = 100_000;
    let mp = Mp::start(|_| {});
    let csv = mp.w.path("fleet.csv");
    let mut text = String::from("controller_id,target_token\n");
    for i in 0..N {
        text.push_str(&format!("dev-{i:06},\n"));
    }
    std::fs::write(&csv, text).unwrap();
    mp.admin(&["device", "import", "--csv", csv.to_str().unwrap()]);
    let cookie = session(&mp, "admin");
    let timed = |path: &str| {
        let t = std::time::Instant::now();
        let r = get(&mp, Some(&cookie), path);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        (r, t.elapsed())
    };

    // Every device once, in order, a thousand at a time, each page reading about its own rows.
    let mut seen = 0usize;
    let mut path = "/console/reports/unhealthy-communication?format=json&limit=1000".to_string();
    let mut slowest = Duration::ZERO;
    let started = std::time::Instant::now();
    loop {
        let (r, took) = timed(&path);
        slowest = slowest.max(took);
        let j = r.json();
        for row in j["rows"].as_array().unwrap() {
            assert_eq!(row["device"], format!("dev-{seen:06}"));
            assert_eq!(row["why"], "it never polled");
            seen += 1;
        }
        match j["next"]["after"].as_str() {
            Some(after) => {
                path = format!(
                    "/console/reports/unhealthy-communication?format=json&limit=1000&after_tenant=DEFAULT&after={after}"
                )
            }
            None => break,
        }
    }
    assert_eq!(seen, N);
    println!(
        "paging {N} devices: {} pages of 1000 in {:?}, slowest page {slowest:?}",
        N / 1000,
        started.elapsed()
    );

    // The HTML page holds a hundred rows and links to the next; the link works.
    let (r, first) = timed("/console/reports/unhealthy-communication");
    let html = r.text();
    assert_eq!(html.matches("<tr><td>").count(), 100, "{html}");
    let next = html
        .split("href=\"")
        .find(|s| s.contains("rel=\"next\"") || s.contains("after=dev-000099"));
    let next = next.unwrap().split('"').next().unwrap().replace("&amp;", "&");
    assert!(next.contains("after=dev-000099"), "{next}");
    let html =
        get(&mp, Some(&cookie), &format!("/console/reports/unhealthy-communication{next}")).text();
    assert!(html.contains(">dev-000100</a>") && !html.contains(">dev-000099</a>"), "{html}");

    // A sorted, filtered page holds its rows only, in order across the whole fleet.
    let (r, sorted) = timed(
        "/console/reports/unhealthy-communication?format=json&sort=device&dir=desc&limit=10&offset=10",
    );
    let j = r.json();
    assert_eq!(j["rows"][0]["device"], format!("dev-{:06}", N - 11));
    assert_eq!(j["next"]["offset"], 20);
    let (r, summary) = timed("/console/reports/health-summary?format=json");
    assert_eq!(r.json()["rows"][0]["devices"], N.to_string());
    let (r, search) = timed("/console/search?q=dev-09999");
    assert!(r.text().contains(">dev-099999</a>"));
    println!(
        "first HTML page {first:?}, sorted page {sorted:?}, health summary {summary:?}, search {search:?}"
    );
}
