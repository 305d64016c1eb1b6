//! The console's rollouts (docs/rollouts.md): a list, each rollout's page (its groups as SVG
//! bars of confirmed, soaking, installing and failed devices, the devices behind its failures,
//! its log), and the console's first write actions: approve, start, pause, resume and stop,
//! as POST forms carrying a CSRF token.
//!
//! The CSRF tokens are `forms.rs`'s. Each action is logged with the administrator's name and
//! written to the rollout's log and the audit trail.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::forms::{credential, csrf_token};
use super::{Admin, esc, page, url};
use crate::admin::rollouts as admin;
use crate::api::ops::Op;
use crate::rollout::{self, Command, RolloutState};
use crate::server::state::AppState;

/// The commands the console offers, by the path segment that names them.
const COMMANDS: [(&str, Command); 5] = [
    ("approve", Command::Approve),
    ("start", Command::Start),
    ("pause", Command::Pause),
    ("resume", Command::Resume),
    ("stop", Command::Stop),
];

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let mut r = page(title, &format!("<p>{}</p>", esc(text)));
    *r.status_mut() = status;
    r
}

/// `GET /console/rollouts`.
pub async fn list(_: Admin, State(st): State<Arc<AppState>>) -> Response {
    let mut all: Vec<rollout::Rollout> =
        st.read().rollouts.values().map(|g| g.rollout.clone()).collect();
    all.sort_by_key(|r| r.id);
    let mut body =
        String::from("<table><tr><th>rollout</th><th>state</th><th>group</th><th>reason</th></tr>");
    for r in &all {
        body.push_str(&format!(
            "<tr><td><a href=\"/console/rollouts/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            url(&r.name),
            esc(&r.name),
            r.state.as_str(),
            r.current_group + 1,
            esc(r.reason.as_deref().unwrap_or(""))
        ));
    }
    body.push_str("</table>");
    page("Rollouts", &body)
}

/// Each released group's confirmed and failed devices over time, from the samples the gates
/// recorded whenever its counts changed (the distribution status report's plot).
fn progress(r: &rollout::Rollout, samples: &serde_json::Value, now: i64) -> String {
    let samples: Vec<rollout::Sample> = serde_json::from_value(samples.clone()).unwrap_or_default();
    let mut out = String::new();
    for g in 0..=r.current_group {
        let mine: Vec<&rollout::Sample> = samples.iter().filter(|s| s.group == g).collect();
        let (Some(first), Some(last)) = (mine.first(), mine.last()) else { continue };
        // A group still being evaluated runs until now; one behind runs until its last sample.
        let end =
            if g == r.current_group && r.state == RolloutState::Running { now } else { last.time };
        let points: Vec<(i64, usize, usize)> = mine
            .iter()
            .map(|s| (s.time, s.counts.succeeded as usize, s.counts.failed as usize))
            .collect();
        out.push_str(&format!(
            "<h3>group {} over time</h3>{}",
            g + 1,
            super::charts::plot(
                first.time,
                end.max(first.time + 1),
                last.counts.size as usize,
                &points
            )
        ));
    }
    if out.is_empty() {
        return out;
    }
    format!("<h2>Progress</h2>{out}")
}

/// `GET /console/rollouts/{name}`.
pub async fn show(
    _: Admin,
    State(st): State<Arc<AppState>>,
    Path(name): Path<String>,
    req: axum::extract::Request,
) -> Response {
    let token = credential(req.extensions()).and_then(|c| csrf_token(&st, &c));
    let st2 = st.clone();
    let name2 = name.clone();
    let shown = tokio::task::spawn_blocking(move || {
        admin::show(st2.store.as_ref(), &name2, st2.now()).map(|o| o.json)
    })
    .await;
    let json = match shown {
        Ok(Ok(j)) => j,
        Ok(Err(e)) => return message(StatusCode::NOT_FOUND, "Rollout", &e.to_string()),
        Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "Rollout", "the page failed"),
    };
    let Ok(r) = serde_json::from_value::<rollout::Rollout>(json["rollout"].clone()) else {
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Rollout", "the rollout is unreadable");
    };
    let mut body = format!(
        "<p>state <b>{}</b>{}</p>",
        r.state.as_str(),
        r.reason.as_deref().map(|w| format!(": {}", esc(w))).unwrap_or_default()
    );
    for (segment, cmd) in COMMANDS {
        if rollout::command(r.state, cmd).is_err() {
            continue;
        }
        if let Some(t) = &token {
            body.push_str(&format!(
                "<form method=\"post\" action=\"/console/rollouts/{}/{segment}\" class=\"inline\">\
                 <input type=\"hidden\" name=\"csrf\" value=\"{t}\"><button>{segment}</button></form> ",
                url(&r.name)
            ));
        }
    }
    body.push_str("<table><tr><th>group</th><th>state</th><th>devices</th><th>confirmed · soaking · installing · failed</th></tr>");
    for g in json["groups"].as_array().into_iter().flatten() {
        let c: rollout::Counts = serde_json::from_value(g["counts"].clone()).unwrap_or_default();
        body.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {} · {} · {} · {}</td></tr>",
            g["group"],
            esc(g["state"].as_str().unwrap_or("")),
            c.size,
            super::charts::bar(&c),
            c.succeeded,
            c.soaking,
            c.installing,
            c.failed
        ));
        for f in g["failed"].as_array().into_iter().flatten() {
            let d = f["device"].as_str().unwrap_or("");
            body.push_str(&format!(
                "<tr><td></td><td colspan=\"3\">failed: {} — {}</td></tr>",
                esc(d),
                esc(f["reason"].as_str().unwrap_or(""))
            ));
        }
    }
    body.push_str("</table>");
    body.push_str(&progress(&r, &json["progress"], st.now()));
    body.push_str("<h2>Log</h2><ul>");
    for e in json["log"].as_array().into_iter().flatten() {
        let when = crate::admin::when(e["time"].as_i64());
        body.push_str(&format!(
            "<li>{} {}</li>",
            esc(&when),
            esc(e["text"].as_str().unwrap_or(""))
        ));
    }
    body.push_str("</ul>");
    page(&format!("Rollout {}", r.name), &body)
}

/// `POST /console/rollouts/{name}/{action}`: an administrator's command, with the page's CSRF
/// token; refused (403) without it.
pub async fn act(
    Admin(who): Admin,
    State(st): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
    req: axum::extract::Request,
) -> Response {
    if !COMMANDS.iter().any(|(s, _)| *s == action) {
        return message(StatusCode::NOT_FOUND, "Rollout", &format!("no action {action:?}"));
    }
    let what = format!("{action} of rollout {name}");
    let source = match super::forms::checked(&st, &who, &what, req).await {
        Ok((_, source)) => source,
        Err(refused) => return refused,
    };
    // The API's operation: the rollout's log and the audit trail name the administrator.
    let op = Op::RolloutAct { rollout: name.clone(), action, program: None };
    let back = format!("/console/rollouts/{}", url(&name));
    super::forms::perform(&st, &who, source, op, &back).await
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderValue, header};

    use super::super::passwords::hash_password;
    use super::*;
    use crate::model::AdvertisementKind;
    use crate::server::fixture::Fixture;

    #[test]
    fn each_released_group_is_plotted_over_time_from_its_samples() {
        use rollout::{Counts, Sample};
        let c = |succeeded, failed| Counts { size: 5, succeeded, failed, ..Counts::default() };
        let samples = vec![
            Sample { time: 100, group: 0, counts: c(0, 0) },
            Sample { time: 110, group: 0, counts: c(3, 0) },
            Sample { time: 120, group: 0, counts: c(5, 0) },
            Sample { time: 125, group: 1, counts: c(1, 2) },
        ];
        let r: rollout::Rollout = serde_json::from_value(serde_json::json!({
            "id": 1, "name": "r1", "target": {"advertisement": 1},
            "spec": {"split": {"percent": [50, 100]},
                     "gates": {"success_threshold": 90, "error_threshold": 40},
                     "soak": 0, "silent_after": 60, "start_at": null, "joins_per_minute": 5},
            "state": "paused", "current_group": 1, "reason": null, "created": 1, "updated": 2
        }))
        .unwrap();
        let html = progress(&r, &serde_json::to_value(&samples).unwrap(), 200);
        assert_eq!(html.matches("<svg").count(), 2, "{html}");
        assert!(html.contains("group 1 over time") && html.contains("group 2 over time"));
        assert!(html.contains("targeted 5"), "{html}");
        // Nothing recorded yet: no section at all.
        assert_eq!(progress(&r, &serde_json::json!([]), 200), "");
    }

    async fn body_of(r: Response) -> String {
        let b = axum::body::to_bytes(r.into_body(), 1 << 20).await.unwrap();
        String::from_utf8(b.to_vec()).unwrap()
    }

    fn request(
        method: &str,
        uri: &str,
        cookie: &HeaderValue,
        body: &str,
    ) -> axum::extract::Request {
        let mut req = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::COOKIE, cookie)
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        req.extensions_mut().insert(Fixture::conn());
        // What the Admin extractor leaves for a request it let in by this session.
        let session = cookie.to_str().unwrap().trim_start_matches("dm_console=");
        req.extensions_mut().insert(super::super::Proved(format!("session:{session}")));
        req
    }

    /// The attack: a page of another site posts a form to the console while the administrator
    /// is logged in (the browser sends the session cookie). Without the page's token it is
    /// refused; with the page's token the rollout pauses, in the name of who pressed it.
    #[tokio::test]
    async fn a_rollout_pauses_from_its_page_only_with_the_pages_csrf_token() {
        let f = Fixture::new(|_| {});
        f.state
            .store
            .set_administrator("alice", &hash_password("alice's password").unwrap(), 1)
            .unwrap();
        f.advertise("tool", AdvertisementKind::Mandatory);
        let spec = admin::CreateSpec {
            name: "r1".into(),
            program: Some("tool-run".into()),
            update_deployment: None,
            collection: Some("tool-all".into()),
            groups: "50%,100%".into(),
            gates: rollout::Gates { success_threshold: 100, error_threshold: 10 },
            soak: 0,
            silent_after: 600,
            start: None,
            approval: false,
            joins_per_minute: 10,
            allow_downgrade: false,
            rollback_program: None,
            maintenance_window: None,
        };
        admin::create(f.state.store.as_ref(), &spec, 1).unwrap();
        admin::act(f.state.store.as_ref(), "r1", Command::Start, "test", 2).unwrap();
        f.reload();
        let login = super::super::login(State(f.state.clone()), {
            let mut req = axum::http::Request::builder()
                .method("POST")
                .uri("/console/login")
                .body(axum::body::Body::from("name=alice&password=alice%27s%20password"))
                .unwrap();
            req.extensions_mut().insert(Fixture::conn());
            req
        })
        .await;
        let set = login.headers().get(header::SET_COOKIE).unwrap().to_str().unwrap().to_string();
        let cookie = HeaderValue::from_str(set.split(';').next().unwrap()).unwrap();
        let admin = Admin("alice".into());

        let page = show(
            admin.clone(),
            State(f.state.clone()),
            Path("r1".into()),
            request("GET", "/console/rollouts/r1", &cookie, ""),
        )
        .await;
        assert_eq!(page.status(), StatusCode::OK);
        let html = body_of(page).await;
        assert!(html.contains("action=\"/console/rollouts/r1/pause\""), "{html}");
        assert!(
            !html.contains("/console/rollouts/r1/resume"),
            "only what the state allows: {html}"
        );
        let token = html
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string();
        assert_eq!(token.len(), 64);

        let post = |body: String| {
            let req = request("POST", "/console/rollouts/r1/pause", &cookie, &body);
            act(admin.clone(), State(f.state.clone()), Path(("r1".into(), "pause".into())), req)
        };
        assert_eq!(post(String::new()).await.status(), StatusCode::FORBIDDEN);
        assert_eq!(post(format!("csrf={}", "0".repeat(64))).await.status(), StatusCode::FORBIDDEN);
        let other = HeaderValue::from_static("dm_console=another-session");
        let stolen =
            request("POST", "/console/rollouts/r1/pause", &other, &format!("csrf={token}"));
        let r =
            act(admin.clone(), State(f.state.clone()), Path(("r1".into(), "pause".into())), stolen)
                .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "a token is its session's alone");
        assert_eq!(f.state.store.rollouts().unwrap()[0].state, RolloutState::Running);

        let r = post(format!("csrf={token}")).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        let stored = &f.state.store.rollouts().unwrap()[0];
        assert_eq!(stored.state, RolloutState::Paused);
        assert_eq!(stored.reason.as_deref(), Some("paused by alice (console)"));
        // The audit trail has it, with who and from where.
        let audit = f.state.store.audit(0, 10).unwrap();
        let e = audit.iter().find(|e| e.action == "rollout-act").unwrap();
        assert_eq!((e.actor.as_str(), e.target.as_str()), ("alice (console)", "rollout r1"));
        assert!(e.before.as_deref().is_some_and(|b| b.contains("running")), "{e:?}");
        assert_eq!(
            f.state.read().rollouts.values().next().unwrap().rollout.state,
            RolloutState::Paused
        );
        // Pausing again is refused with the reason, not a server error.
        assert_eq!(post(format!("csrf={token}")).await.status(), StatusCode::CONFLICT);
        // A read-only administrator sees the page but cannot act, token or not.
        f.state.store.set_administrator_role("alice", crate::api::Role::ReadOnly).unwrap();
        f.reload();
        let req = request("POST", "/console/rollouts/r1/resume", &cookie, &format!("csrf={token}"));
        let r =
            act(admin.clone(), State(f.state.clone()), Path(("r1".into(), "resume".into())), req)
                .await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(body_of(r).await.contains("read-only"));
        assert_eq!(f.state.store.rollouts().unwrap()[0].state, RolloutState::Paused);
    }
}
