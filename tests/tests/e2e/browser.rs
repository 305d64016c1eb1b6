//! The web console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/setup-peers.sh, never a downloaded one) driven over
//! WebDriver by a few plain HTTP calls. Logs in, opens every report, follows a number to its
//! devices, sorts and filters a table, and saves a screenshot of each report in
//! `target/test-output/console/`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::mp::{Mp, advertise_package, as_device};
use crate::util::workspace_root;

/// A chromedriver on a loopback port, and one browser session.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
}

/// Every report (docs/health.md).
const REPORTS: [&str; 10] = [
    "distribution-status",
    "tethered-desktops",
    "deployment-details",
    "deployment-failures",
    "deployment-successes",
    "health-summary",
    "healthy",
    "unhealthy-certificate",
    "unhealthy-communication",
    "unhealthy-local",
];

/// The W3C WebDriver element key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

impl Browser {
    fn start(profile: &std::path::Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup-peers.sh installs chromium-driver)");
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .new_agent();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        while agent.get(&format!("{base}/status")).call().is_err() {
            assert!(start.elapsed() < Duration::from_secs(20), "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            // The test server's certificate is from the test's own CA.
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900", format!("--user-data-dir={}", profile.display())]
            }
        }}});
        let mut b = Browser { driver, base, session: String::new(), agent };
        let v = b.call("POST", "/session", Some(caps));
        b.session =
            v["sessionId"].as_str().unwrap_or_else(|| panic!("no session: {v}")).to_string();
        b
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match (method, body) {
            ("GET", _) => self.agent.get(&url).call(),
            ("DELETE", _) => self.agent.delete(&url).call(),
            (_, b) => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(b.unwrap_or(json!({})).to_string()),
        };
        let mut resp = resp.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let text =
            resp.body_mut().with_config().limit(64 << 20).read_to_string().unwrap_or_default();
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        v["value"].clone()
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn go(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({"url": url})));
    }

    fn url(&self) -> String {
        self.call("GET", &self.s("/url"), None).as_str().unwrap_or("").to_string()
    }

    fn source(&self) -> String {
        self.call("GET", &self.s("/source"), None).as_str().unwrap_or("").to_string()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            &self.s("/element"),
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT]
            .as_str()
            .unwrap_or_else(|| panic!("no element {css}: {v}\n{}", self.source()))
            .to_string()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/value")), Some(json!({"text": text})));
    }

    /// Clicks a link or button and waits for the page it leads to: WebDriver may answer the
    /// click before a form's submission has navigated.
    fn click(&self, css: &str) {
        let before = self.url();
        let e = self.find(css);
        self.call("POST", &self.s(&format!("/element/{e}/click")), Some(json!({})));
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.url() == before {
            assert!(std::time::Instant::now() < deadline, "clicking {css} left {before}");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let state = format!("{}/execute/sync", self.s(""));
        while self.call(
            "POST",
            &state,
            Some(json!({"script": "return document.readyState", "args": []})),
        ) != "complete"
        {
            assert!(std::time::Instant::now() < deadline, "{css}: the page did not load");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }

    fn screenshot(&self, path: &std::path::Path) {
        use base64ct::Encoding;
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        let png = base64ct::Base64::decode_vec(b64.as_str().unwrap()).unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).unwrap();
    }

    fn rows(&self) -> usize {
        self.source().matches("<tr>").count().saturating_sub(1)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.agent.delete(&format!("{}/session/{}", self.base, self.session)).call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[test]
fn an_administrator_uses_the_console_in_chromium() {
    let mp = Mp::start(|t| *t = t.replace("rollout_tick_secs = 5", "rollout_tick_secs = 1"));
    let pw = mp.w.path("pw");
    std::fs::write(&pw, "browser test password\n").unwrap();
    mp.admin(&["admin", "add", "--name", "admin", "--password-file", pw.to_str().unwrap()]);
    for (cid, health, reason) in [
        ("ok-1", "healthy", ""),
        ("ok-2", "healthy", ""),
        ("local-1", "unhealthy-local", "<script>document.title='owned'</script>"),
    ] {
        let token = format!("tok-{cid}");
        mp.admin(&["device", "add", "--id", cid, "--token", &token]);
        assert_eq!(as_device(&mp, &token, &[&mp.base(cid)]).status, 200);
        let body =
            json!({"data": {"client_health": health, "client_health_reason": reason}}).to_string();
        let url = format!("{}/configData", mp.base(cid));
        as_device(
            &mp,
            &token,
            &["-X", "PUT", "-H", "Content-Type: application/json", "--data-binary", &body, &url],
        );
    }
    // A package, its program, a collection, a rollout of it running: the overview and the
    // rollout's page have something to show.
    advertise_package(&mp, "fw", &[("run.sh", b"#!/bin/sh\n")], &["--mandatory"]);
    mp.admin(&[
        "rollout",
        "create",
        "--name",
        "r1",
        "--program",
        "fw-run",
        "--collection",
        "everyone",
    ]);
    mp.admin(&["rollout", "start", "r1"]);
    let shots: PathBuf = workspace_root().join("target/test-output/console");
    std::fs::create_dir_all(&shots).unwrap();
    let b = Browser::start(&mp.w.path("chromium-profile"));

    // Log in through the form.
    b.go(&format!("{}/console/reports/healthy", mp.url()));
    assert!(b.url().ends_with("/console/login"), "{}", b.url());
    b.type_into("input[name=name]", "admin");
    b.type_into("input[name=password]", "browser test password");
    b.click("form[action='/console/login'] button");
    assert!(b.url().ends_with("/console/"), "{}\n{}", b.url(), b.source());

    // Every report opens, and is kept as a screenshot.
    for name in REPORTS {
        b.go(&format!("{}/console/reports/{name}", mp.url()));
        assert!(b.source().contains("</table>"), "{name}: {}", b.source());
        b.screenshot(&shots.join(format!("{name}.png")));
    }

    // A summary number leads to the devices behind it.
    b.go(&format!("{}/console/reports/health-summary", mp.url()));
    b.click("a[href='/console/reports/unhealthy-local']");
    assert!(b.url().ends_with("/console/reports/unhealthy-local"), "{}", b.url());
    let source = b.source();
    assert!(source.contains("local-1"), "{source}");
    // What the device sent stayed text: the browser ran nothing.
    let title = b.call("GET", &b.s("/title"), None);
    assert_ne!(title, "owned", "a device's markup ran in the console");

    // Sorting by a column, both ways, and filtering.
    b.go(&format!("{}/console/reports/healthy", mp.url()));
    b.click("th a[href*='sort=device']");
    assert!(b.url().contains("sort=device&dir=asc"), "{}", b.url());
    let asc = b.source();
    assert!(asc.find("ok-1").unwrap() < asc.find("ok-2").unwrap());
    b.click("th a[href*='sort=device']");
    let desc = b.source();
    assert!(desc.find("ok-2").unwrap() < desc.find("ok-1").unwrap(), "not descending");
    b.type_into("input[name=filter]", "ok-2");
    b.click("form[method=get]:not([action]) button");
    assert_eq!(b.rows(), 1, "{}", b.source());
    b.screenshot(&shots.join("healthy-filtered.png"));

    // The overview: the fleet at a glance, each chart leading to its devices.
    b.go(&format!("{}/console/", mp.url()));
    let overview = b.source();
    for part in ["Devices by health", "Devices by client version", "Software updates", "Rollouts"] {
        assert!(overview.contains(part), "{part}: {overview}");
    }
    assert!(overview.contains("href=\"/console/reports/unhealthy-local\""), "{overview}");
    b.screenshot(&shots.join("overview.png"));
    // An operator's form: advertise a program to a collection, with the page's CSRF token.
    b.type_into("form[action='/console/do/advertise'] input[name=name]", "from-console");
    b.click("form[action='/console/do/advertise'] button");
    assert!(b.url().ends_with("/console/reports/distribution-status"), "{}", b.url());
    let ads = mp.admin(&["advertisement", "list"]);
    assert!(ads.contains("from-console"), "{ads}");
    // The rollout's page, with its group plotted over time once the gates recorded it.
    let start = Instant::now();
    loop {
        b.go(&format!("{}/console/rollouts/r1", mp.url()));
        if b.source().contains("over time") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{}", b.source());
        std::thread::sleep(Duration::from_millis(500));
    }
    b.screenshot(&shots.join("rollout.png"));
    // The audit trail names who advertised, from the console.
    b.go(&format!("{}/console/audit", mp.url()));
    let audit = b.source();
    assert!(
        audit.contains("admin (console)") && audit.contains("advertisement from-console"),
        "{audit}"
    );
    b.screenshot(&shots.join("audit.png"));
}
