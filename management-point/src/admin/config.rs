//! Configuration items and compliance (docs/configuration-items.md): `dmmp config-item
//! add|list|show` (the catalog an administrator packages from), `dmmp config-package add` (a
//! signed configuration package whose manifest carries its items), and `dmmp compliance`,
//! what devices report about the items they hold.

use std::collections::BTreeMap;
use std::path::Path;

use dm_shared::config_item::ConfigItem;
use dm_shared::vocab::inventory as key;
use serde_json::{Value, json};

use super::{Out, find_advertisement, find_device, table};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Device, PackageKind};
use crate::storage::Storage;

/// `dmmp config-item add --file F`: adds an item (TOML or JSON) to the catalog.
pub fn item_add(store: &dyn Storage, file: &Path, now: i64) -> Result<Out> {
    let item = crate::pack::read_item(file)?;
    store.add_config_item(&item, now)?;
    Ok(Out::new(
        format!(
            "configuration item {} version {} added ({} settings)\n",
            item.name,
            item.version,
            item.settings.len()
        ),
        json!({"name": item.name, "version": item.version}),
    ))
}

/// Every item known: the catalog's and those signed into configuration packages.
fn all_items(store: &dyn Storage) -> Result<Vec<(ConfigItem, String)>> {
    let mut out: Vec<(ConfigItem, String)> =
        store.config_items()?.into_iter().map(|(i, _)| (i, "catalog".to_string())).collect();
    for p in store.packages()? {
        for i in p.config_items {
            out.push((i, format!("package {}@{}", p.name, p.version)));
        }
    }
    Ok(out)
}

/// `dmmp config-item list`.
pub fn item_list(store: &dyn Storage) -> Result<Out> {
    let items = all_items(store)?;
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|(i, place)| {
            vec![
                i.name.clone(),
                i.version.to_string(),
                if i.platforms.is_empty() {
                    "any".into()
                } else {
                    i.platforms.iter().map(|p| p.as_str()).collect::<Vec<_>>().join(",")
                },
                i.settings.len().to_string(),
                if i.monitor_only { "monitor" } else { "enforce" }.into(),
                place.clone(),
            ]
        })
        .collect();
    let text = table(&["ITEM", "VERSION", "PLATFORMS", "SETTINGS", "MODE", "WHERE"], &rows);
    let json: Vec<Value> =
        items.iter().map(|(i, place)| json!({"item": i, "where": place})).collect();
    Ok(Out::new(text, Value::Array(json)))
}

/// `dmmp config-item show NAME [--version N]`: the item, as JSON (for `dmpack --items`).
pub fn item_show(store: &dyn Storage, name: &str, version: Option<u32>) -> Result<Out> {
    let item = all_items(store)?
        .into_iter()
        .map(|(i, _)| i)
        .filter(|i| i.name == name && version.is_none_or(|v| i.version == v))
        .max_by_key(|i| i.version)
        .ok_or_else(|| Error::NotFound(format!("configuration item {name}")))?;
    let value = serde_json::to_value(&item).map_err(|e| Error::Usage(e.to_string()))?;
    let text = serde_json::to_string_pretty(&value).map_err(|e| Error::Usage(e.to_string()))?;
    Ok(Out::new(text + "\n", value))
}

/// `dmmp config-package add --source DIR --roots R`: a signed configuration package of items.
pub fn package_add(
    cfg: &Config,
    store: &dyn Storage,
    source: &Path,
    roots: &Path,
    distribution_point: Option<&str>,
    now: i64,
) -> Result<Out> {
    let m = crate::pack::verify(source, roots, std::time::SystemTime::now())?;
    let items = dm_shared::config_item::items_of(&m)
        .map_err(|why| Error::Usage(format!("{}: {why}", source.display())))?;
    if m.kind != PackageKind::Configuration || items.is_empty() {
        return Err(Error::Usage(format!(
            "{} is a {} package with {} configuration items; build one with `dmpack package --kind configuration --items FILE`",
            source.display(),
            m.kind,
            items.len()
        )));
    }
    let src = super::packages::PackageSource::Signed {
        dir: source.to_path_buf(),
        roots: roots.to_path_buf(),
    };
    let pkg = super::packages::add_package(cfg, store, &src, distribution_point, now)?;
    let names: Vec<String> =
        pkg.config_items.iter().map(|i| format!("{} v{}", i.name, i.version)).collect();
    Ok(Out::new(
        format!(
            "configuration package {} {} added (id {}): {}\n",
            pkg.name,
            pkg.version,
            pkg.id,
            names.join(", ")
        ),
        json!({"id": pkg.id, "name": pkg.name, "version": pkg.version, "items": names}),
    ))
}

/// One device's compliance as it reported it: the counts, and the items that are not compliant.
fn device_compliance(d: &Device, only: Option<&[String]>) -> Value {
    let mut items = Vec::new();
    for (k, v) in &d.attributes {
        // `compliance.<package>/<item>`, and `compliance.more` when the device left some out.
        let Some(rest) = k.strip_prefix(key::COMPLIANCE_ITEM_PREFIX) else { continue };
        let (package, name) = rest.split_once('/').unwrap_or(("", rest));
        if only.is_some_and(|names| !names.iter().any(|n| n == name)) {
            continue;
        }
        let detail: Value = serde_json::from_str(v).unwrap_or_else(|_| json!({"note": v}));
        items.push(json!({"item": name, "package": package, "detail": detail}));
    }
    json!({
        "device": d.controller_id,
        "tenant": d.tenant,
        "summary": d.attributes.get(key::COMPLIANCE).cloned().unwrap_or_default(),
        "items": items,
    })
}

/// `dmmp compliance [--device D] [--advertisement A]`: counts per state and, for every item
/// that is not compliant, its settings with the expected and actual values (a secret
/// setting's actual value is never sent by a device).
pub fn compliance(
    store: &dyn Storage,
    device: Option<&str>,
    advertisement: Option<&str>,
) -> Result<Out> {
    let mut devices = match device {
        Some(d) => vec![find_device(store, d)?],
        None => store.devices()?,
    };
    let mut only: Option<Vec<String>> = None;
    if let Some(a) = advertisement {
        let ad = find_advertisement(store, a)?;
        let program = store.programs()?.into_iter().find(|p| p.id == ad.program_id);
        let package =
            program.and_then(|p| store.packages().ok()?.into_iter().find(|k| k.id == p.package_id));
        only = package.map(|p| p.config_items.iter().map(|i| i.name.clone()).collect());
        let targeted: Vec<i64> = store
            .actions()?
            .into_iter()
            .filter(|x| x.advertisement_id == ad.id)
            .map(|x| x.device_id)
            .collect();
        devices.retain(|d| targeted.contains(&d.id));
    }
    let reports: Vec<Value> = devices
        .iter()
        .filter(|d| d.attributes.contains_key(key::COMPLIANCE) || advertisement.is_some())
        .map(|d| device_compliance(d, only.as_deref()))
        .collect();
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    for d in &devices {
        for part in d.attributes.get(key::COMPLIANCE).map_or("", |s| s.as_str()).split(", ") {
            if let Some((state, n)) = part.rsplit_once(' ') {
                *counts.entry(state.to_string()).or_default() += n.parse::<u64>().unwrap_or(0);
            }
        }
    }
    Ok(Out::new(render(&counts, &reports), json!({"counts": counts, "devices": reports})))
}

fn render(counts: &BTreeMap<String, u64>, reports: &[Value]) -> String {
    let totals: Vec<String> = counts.iter().map(|(s, n)| format!("{s} {n}")).collect();
    let mut text = format!(
        "items: {}\n",
        if totals.is_empty() { "no compliance reported yet".into() } else { totals.join(", ") }
    );
    let mut rows = Vec::new();
    for r in reports {
        let device = r["device"].as_str().unwrap_or("");
        rows.push(vec![
            device.to_string(),
            "-".into(),
            "-".into(),
            r["summary"].as_str().unwrap_or("").into(),
            String::new(),
            String::new(),
        ]);
        for i in r["items"].as_array().into_iter().flatten() {
            let item = i["item"].as_str().unwrap_or("");
            for s in i["detail"]["settings"].as_array().into_iter().flatten() {
                let cell = |k: &str| match &s[k] {
                    Value::Null => "(not reported)".to_string(),
                    Value::String(v) => v.clone(),
                    other => other.to_string(),
                };
                rows.push(vec![
                    device.to_string(),
                    item.to_string(),
                    cell("name"),
                    cell("state"),
                    cell("expected"),
                    cell("actual"),
                ]);
            }
        }
    }
    text.push_str(&table(&["DEVICE", "ITEM", "SETTING", "STATE", "EXPECTED", "ACTUAL"], &rows));
    text
}
