//! Devices: registering them (one, or many from a CSV file), listing them, and one device's
//! inventory, actions and status history.

use std::path::Path;

use serde_json::json;

use super::{Out, find_device, table, when};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::*;
use crate::printable::printable;
use crate::storage::Storage;

/// The largest CSV file `device import` reads.
const MAX_CSV_BYTES: u64 = 256 * 1024 * 1024;

fn tenant_or_default(cfg: &Config, tenant: Option<&str>) -> String {
    tenant
        .map(str::to_string)
        .or_else(|| cfg.devices.tenants.first().cloned())
        .unwrap_or_else(|| "DEFAULT".into())
}

/// `dmmp device add`: registers a device with a target token (generated unless given) and
/// prints the token.
pub fn device_add(
    cfg: &Config,
    store: &dyn Storage,
    id: &str,
    tenant: Option<&str>,
    token: Option<&str>,
    now: i64,
) -> Result<Out> {
    let tenant = tenant_or_default(cfg, tenant);
    if !Device::valid_controller_id(id) {
        return Err(Error::Usage(format!(
            "--id {id:?}: a controller id is 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    let token = match token {
        Some(t) => t.to_string(),
        None => super::new_token()?,
    };
    let sha = dm_shared::pki::sha256_hex(token.as_bytes());
    let d = store.add_device(&tenant, id, Some(&sha), "admin", now)?;
    Ok(Out::new(format!("{token}\n"), json!({"device": d, "target_token": token})))
}

/// The rows of a device CSV file: `controller_id,target_token` lines (a header line and `#`
/// comments are skipped), as (tenant, controller id, token SHA-256).
pub fn parse_device_csv(
    text: &str,
    file: &Path,
    tenant: &str,
) -> Result<Vec<(String, String, Option<String>)>> {
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || (i == 0 && line.starts_with("controller_id"))
        {
            continue;
        }
        let (cid, tok) =
            line.split_once(',').map_or((line, None), |(c, t)| (c.trim(), Some(t.trim())));
        if !Device::valid_controller_id(cid) {
            return Err(Error::Usage(format!(
                "{} line {}: bad controller id {cid:?}",
                file.display(),
                i + 1
            )));
        }
        let sha = tok.filter(|t| !t.is_empty()).map(|t| dm_shared::pki::sha256_hex(t.as_bytes()));
        rows.push((tenant.to_string(), cid.to_string(), sha));
    }
    Ok(rows)
}

/// `dmmp device import`: registers the devices of a CSV file; existing ones are left alone.
pub fn device_import(
    cfg: &Config,
    store: &dyn Storage,
    csv: &Path,
    tenant: Option<&str>,
    now: i64,
) -> Result<Out> {
    let text = String::from_utf8(dm_shared::fs::read_capped(csv, MAX_CSV_BYTES)?)
        .map_err(|_| Error::Usage(format!("{}: not UTF-8 text", csv.display())))?;
    device_import_text(cfg, store, &text, &csv.display().to_string(), tenant, now)
}

/// [`device_import`] of a CSV text (`what` names it in errors), as the management API gets it.
pub fn device_import_text(
    cfg: &Config,
    store: &dyn Storage,
    text: &str,
    what: &str,
    tenant: Option<&str>,
    now: i64,
) -> Result<Out> {
    let tenant = tenant_or_default(cfg, tenant);
    if text.len() as u64 > MAX_CSV_BYTES {
        return Err(Error::Usage(format!("{what}: more than {MAX_CSV_BYTES} bytes")));
    }
    let rows = parse_device_csv(text, Path::new(what), &tenant)?;
    let n = store.import_devices(&rows, now)?;
    Ok(Out::new(
        format!("{n} devices added ({} already known)\n", rows.len() - n),
        json!({"added": n, "read": rows.len()}),
    ))
}

/// Lists devices.
pub fn device_list(store: &dyn Storage, tenant: Option<&str>) -> Result<Out> {
    let mut ds = store.devices()?;
    ds.retain(|d| tenant.is_none_or(|t| d.tenant == t));
    let rows: Vec<Vec<String>> = ds
        .iter()
        .map(|d| {
            vec![
                d.tenant.clone(),
                d.controller_id.clone(),
                d.attr(attr::PLATFORM).unwrap_or("?").into(),
                d.attr(attr::CLIENT_VERSION).unwrap_or("?").into(),
                when(d.last_seen),
                d.registered_by.clone(),
            ]
        })
        .collect();
    let header = ["TENANT", "CONTROLLER ID", "PLATFORM", "CLIENT", "LAST POLL", "REGISTERED BY"];
    Ok(Out::new(table(&header, &rows), json!(ds)))
}

/// `dmmp device approve`: a device that registered itself may receive client deployments.
pub fn device_approve(cfg: &Config, store: &dyn Storage, device: &str) -> Result<Out> {
    let d = find_device(store, device)?;
    if d.is_verified(cfg.devices.trust_certificate_registrations) {
        return Ok(Out::new(
            format!(
                "device {}/{} is already trusted ({})\n",
                d.tenant, d.controller_id, d.registered_by
            ),
            json!({"device": d.id, "registered_by": d.registered_by}),
        ));
    }
    store.set_registered_by(d.id, "approved")?;
    Ok(Out::new(
        format!(
            "device {}/{} approved: it receives client deployments from its next poll\n",
            d.tenant, d.controller_id
        ),
        json!({"device": d.id, "registered_by": "approved"}),
    ))
}

/// `dmmp device revoke`: refuses the certificate the device last authenticated with, from the
/// server's next look at its database (within a second).
pub fn device_revoke(store: &dyn Storage, device: &str, now: i64) -> Result<Out> {
    let d = find_device(store, device)?;
    let Some(sha) = &d.cert_sha256 else {
        return Err(Error::Usage(format!(
            "device {}/{} never authenticated with a certificate here; nothing to revoke",
            d.tenant, d.controller_id
        )));
    };
    store.revoke_certificate(sha, d.id, "revoked by an administrator", now)?;
    Ok(Out::new(
        format!(
            "certificate {}… of device {}/{} revoked: it is refused from the next request\n",
            &sha[..16],
            d.tenant,
            d.controller_id
        ),
        json!({"device": d.id, "revoked": sha}),
    ))
}

/// `dmmp device use-certificate`: a device registered with a target token moves to client
/// certificates. Its token is removed; from its next request it authenticates with any
/// certificate its tenant's device CA issued for it (renewals included), as a device that
/// registered with a certificate does. (A device that presents its token and a certificate
/// together has that one certificate pinned, and keeps its token.)
pub fn device_use_certificate(cfg: &Config, store: &dyn Storage, device: &str) -> Result<Out> {
    let d = find_device(store, device)?;
    if !cfg.client_cas().iter().any(|(t, _)| *t == d.tenant) {
        return Err(Error::Usage(format!(
            "tenant {} has no device CA ([server] client_ca or [tenant_client_ca] {}): device {}/{} could not authenticate with a certificate",
            d.tenant, d.tenant, d.tenant, d.controller_id
        )));
    }
    if d.token_sha256.is_none() {
        return Ok(Out::new(
            format!(
                "device {}/{} has no target token: it authenticates with certificates already\n",
                d.tenant, d.controller_id
            ),
            json!({"device": d.id, "credential": credential(&d)}),
        ));
    }
    store.set_device_token(d.id, None)?;
    Ok(Out::new(
        format!(
            "device {}/{}: its target token is removed; from its next request it authenticates with a client certificate of tenant {}'s device CA for {}\n",
            d.tenant, d.controller_id, d.tenant, d.controller_id
        ),
        json!({"device": d.id, "credential": "certificate"}),
    ))
}

/// What a device authenticates with, for people.
fn credential(d: &Device) -> &'static str {
    match (&d.token_sha256, &d.cert_sha256) {
        (Some(_), Some(_)) => "target token, or its pinned certificate",
        (Some(_), None) => "target token",
        (None, _) if d.registered_by == "gateway-token" => "the gateway token, or a certificate",
        (None, _) => "certificate",
    }
}

/// One device: inventory, last poll, actions and status history.
pub fn device_show(store: &dyn Storage, device: &str) -> Result<Out> {
    let d = &find_device(store, device)?;
    let history = store.statuses_for_device(d.id)?;
    let actions: Vec<Action> =
        store.actions()?.into_iter().filter(|a| a.device_id == d.id).collect();
    let revoked = d
        .cert_sha256
        .as_ref()
        .is_some_and(|sha| store.revoked_certificates().is_ok_and(|r| r.contains(sha)));
    let certificate = match &d.cert_sha256 {
        Some(sha) if revoked => {
            format!("{}… revoked (dmmp device revoke)", &sha[..16.min(sha.len())])
        }
        Some(sha) => format!("{}…", &sha[..16.min(sha.len())]),
        None => "none".into(),
    };
    let mut text = format!(
        "device {}/{} (id {})\n  registered {} by {}\n  last poll  {}\n  authenticates with {}\n  certificate {certificate}\n\ninventory\n",
        d.tenant,
        d.controller_id,
        d.id,
        when(Some(d.created)),
        d.registered_by,
        when(d.last_seen),
        credential(d)
    );
    for (k, v) in &d.attributes {
        text.push_str(&format!("  {} = {}\n", printable(k), printable(v)));
    }
    text.push_str("\nactions\n");
    let arows: Vec<Vec<String>> = actions
        .iter()
        .map(|a| {
            vec![
                a.id.to_string(),
                a.advertisement_id.to_string(),
                a.status.as_str().into(),
                when(Some(a.updated)),
            ]
        })
        .collect();
    text.push_str(&table(&["ACTION", "ADVERTISEMENT", "STATUS", "UPDATED"], &arows));
    text.push_str("\nstatus history\n");
    let hrows: Vec<Vec<String>> = history
        .iter()
        .map(|r| {
            vec![
                when(Some(r.received)),
                r.action_id.map_or("-".into(), |a| a.to_string()),
                r.component.clone().unwrap_or_else(|| r.source.clone()),
                format!(
                    "{} {}",
                    r.execution.map_or("-", |e| e.as_str()),
                    r.finished.map_or("", |f| f.as_str())
                )
                .trim()
                .to_string(),
                r.message_id.map_or("-".into(), |c| c.to_string()),
                r.hresult.clone().unwrap_or_else(|| "-".into()),
                r.details.join("; ").chars().take(120).collect(),
            ]
        })
        .collect();
    text.push_str(&table(
        &["RECEIVED", "ACTION", "FROM", "EXECUTION", "MESSAGE", "CODE", "DETAILS"],
        &hrows,
    ));
    Ok(Out::new(
        text,
        json!({"device": d, "credential": credential(d), "certificate_revoked": revoked,
            "actions": actions, "history": history}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SqliteStore;

    /// The attack: a device puts an escape sequence and a newline in an inventory value and in
    /// a feedback detail, to clear the administrator's screen and forge lines of the output.
    #[test]
    fn device_text_reaches_the_terminal_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("dmmp.db")).unwrap();
        let d = store.add_device("DEFAULT", "dev-1", None, "admin", 1).unwrap();
        let evil = "1.0\x1b[2J\x1b]0;owned\x07\nREGISTERED BY admin";
        let attrs = [(attr::PLATFORM.to_string(), evil.to_string())].into_iter().collect();
        store.set_attributes(d.id, &attrs).unwrap();
        store
            .add_status(&StatusRecord {
                id: 0,
                device_id: d.id,
                action_id: None,
                received: 2,
                source: "status-message".into(),
                execution: None,
                finished: None,
                message_id: Some(10002),
                hresult: None,
                component: Some("DMSvc\x1b[31m".into()),
                details: vec![format!("done\n{evil}")],
                report_id: None,
            })
            .unwrap();
        for out in
            [device_show(&store, "dev-1").unwrap().text, device_list(&store, None).unwrap().text]
        {
            assert!(!out.contains('\x1b') && !out.contains('\x07'), "{out:?}");
            assert!(!out.contains("\nREGISTERED BY"), "a forged line: {out:?}");
            assert!(out.contains("1.0\\x1b[2J"), "{out:?}");
        }
        let show = device_show(&store, "dev-1").unwrap();
        assert!(show.text.contains("done\\n1.0\\x1b[2J"), "{:?}", show.text);
        assert!(show.text.contains("DMSvc\\x1b[31m"), "{:?}", show.text);
        // Scripts get the text as it was sent, escaped by JSON.
        assert_eq!(show.json["device"]["attributes"][attr::PLATFORM], evil);
    }

    #[test]
    fn added_devices_need_a_controller_id_devices_can_use() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config::new(dir.path(), "127.0.0.1:0".parse().unwrap(), "s".into(), "k".into());
        let store = SqliteStore::open(&dir.path().join("dmmp.db")).unwrap();
        let err = device_add(&cfg, &store, "a\x1b[2J", None, Some("t"), 1).unwrap_err();
        assert!(err.to_string().contains("controller id"), "{err}");
        assert!(store.devices().unwrap().is_empty());
        device_add(&cfg, &store, "dev-1.a_b", None, None, 1).unwrap();
    }

    #[test]
    fn csv_rows_skip_headers_and_comments_and_name_bad_lines() {
        let text = "controller_id,target_token\n# a comment\ndev-1,tok\n\ndev-2\ndev-3,\n";
        let rows = parse_device_csv(text, Path::new("d.csv"), "T").unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].2.as_deref(), Some(dm_shared::pki::sha256_hex(b"tok").as_str()));
        assert_eq!((rows[1].2.clone(), rows[2].2.clone()), (None, None));
        let err = parse_device_csv("ok\nbad/id,x\n", Path::new("d.csv"), "T").unwrap_err();
        assert!(err.to_string().contains("d.csv line 2: bad controller id"), "{err}");
    }
}
