//! `dmmp --server`: the command line as a client of the management API. The operation the
//! command line asks for is sent as its route says ([`Op::request`]) with the token of
//! `--token-file`; the answer is printed as `dmmp` prints it locally (the text the server
//! made, or the JSON with `--json`), and an error exits with the status code the server named.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

use super::ops::Op;
use crate::admin::Out;
use crate::error::{Error, Result};

/// The largest answer read.
const MAX_ANSWER: u64 = 64 << 20;
/// The largest token file read.
const MAX_TOKEN_FILE: u64 = 4096;

/// A management API to send operations to.
pub struct Client {
    agent: ureq::Agent,
    server: String,
    token: String,
}

impl Client {
    /// A client of `server` (`https://host:port`) with the token in `token_file`, trusting
    /// `ca`'s roots (PEM) or the system's.
    pub fn new(server: &str, token_file: &Path, ca: Option<&Path>) -> Result<Client> {
        let bytes = dm_shared::fs::read_capped(token_file, MAX_TOKEN_FILE)?;
        let token = String::from_utf8_lossy(&bytes).trim().to_string();
        if token.is_empty() {
            return Err(Error::Usage(format!("{}: holds no token", token_file.display())));
        }
        if !server.starts_with("https://") {
            return Err(Error::Usage(format!("--server {server}: an https:// URL")));
        }
        let agent = crate::debrepo::http_agent(ca, true)?;
        Ok(Client { agent, server: server.trim_end_matches('/').to_string(), token })
    }

    /// Sends `op`; its answer as `dmmp` prints it: the server's text for people, or with
    /// `json` its JSON.
    pub fn run(&self, op: &Op, json: bool) -> Result<Out> {
        let (method, path, body) = op.request()?;
        let url = format!("{}{path}", self.server);
        let auth = format!("Bearer {}", self.token);
        let accept = if json { "application/json" } else { "text/plain" };
        let sent = if method == "GET" {
            self.agent.get(&url).header("Authorization", &auth).header("Accept", accept).call()
        } else {
            self.agent
                .post(&url)
                .header("Authorization", &auth)
                .header("Accept", accept)
                .header("Content-Type", "application/json")
                .send(body.to_string().as_bytes())
        };
        self.answer(&url, sent)
    }

    /// Uploads the `.dmpkg` bundle at `bundle` (`POST /api/v1/packages`).
    pub fn upload(&self, bundle: &Path) -> Result<Out> {
        if !bundle.is_file() {
            return Err(Error::Usage(format!(
                "{}: through the API a package is sent as one .dmpkg bundle (dmpack bundle)",
                bundle.display()
            )));
        }
        let mut file = dm_shared::fs::open_regular(bundle)?;
        let url = format!("{}/api/v1/packages", self.server);
        let sent = self
            .agent
            .post(&url)
            .header("Authorization", &format!("Bearer {}", self.token))
            .header("Content-Type", "application/octet-stream")
            .send(ureq::SendBody::from_reader(&mut file));
        self.answer(&url, sent)
    }

    fn answer(
        &self,
        url: &str,
        sent: std::result::Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Out> {
        let resp = sent.map_err(|e| Error::Usage(format!("{url}: {e}")))?;
        let status = resp.status().as_u16();
        let mut text = String::new();
        resp.into_body()
            .into_reader()
            .take(MAX_ANSWER)
            .read_to_string(&mut text)
            .map_err(|e| Error::Usage(format!("{url}: the answer broke off: {e}")))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        if (200..300).contains(&status) {
            return Ok(Out::new(text, json));
        }
        let code = json["code"]
            .as_str()
            .and_then(dm_shared::StatusCode::from_name)
            .unwrap_or(dm_shared::StatusCode::E_FAIL);
        let message = json["message"].as_str().map_or(text.clone(), str::to_string);
        Err(Error::Api { server: self.server.clone(), status, code, message })
    }
}
