//! Certificate revocation lists: the administrator gives dmmp each code-signing CA's list, and
//! devices fetch them at their next poll (`GET …/dm/crls`, offered as the `dmCrls` link).
//! A list is signed by its CA, so dmmp only checks that it parses: the device verifies it.

use std::path::Path;

use dm_shared::pki::Crl;
use serde_json::json;

use super::{Out, table, when};
use crate::error::Result;
use crate::storage::Storage;

/// `dmmp crl add FILE`.
pub fn crl_add(store: &dyn Storage, file: &Path, now: i64) -> Result<Out> {
    let mut lines = String::new();
    let mut added = Vec::new();
    for crl in Crl::load(file)? {
        let stored = store.put_crl(crl.issuer(), &crl.to_pem(), crl.this_update(), now)?;
        if stored {
            lines.push_str(&format!(
                "revocation list of {} added; devices fetch it at their next poll\n",
                crl.issuer()
            ));
        } else {
            lines.push_str(&format!(
                "a newer revocation list of {} is already here; kept it\n",
                crl.issuer()
            ));
        }
        added.push(json!({"issuer": crl.issuer(), "stored": stored}));
    }
    Ok(Out::new(lines, json!(added)))
}

/// `dmmp crl list`.
pub fn crl_list(store: &dyn Storage) -> Result<Out> {
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for (issuer, pem) in store.crls()? {
        let crl = Crl::parse(pem.as_bytes(), Path::new("stored"))?.into_iter().next();
        let issued = crl.as_ref().map(|c| c.this_update());
        rows.push(vec![issuer.clone(), when(issued)]);
        items.push(json!({"issuer": issuer, "this_update": issued}));
    }
    Ok(Out::new(table(&["ISSUER", "ISSUED"], &rows), json!(items)))
}
