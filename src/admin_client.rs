//! The client of a license server's admin HTTP API (`docs/SERVER.md`, Administration): what
//! `tessera admin` calls. Plain HTTP with a blocking client; the API answers JSON, and every
//! error it gives is `{"error": "..."}`, which becomes the message here.

use std::io::Read;
use std::time::Duration;

use serde_json::Value;

/// What can go wrong talking to the admin API.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The address is not one this client can use.
    #[error("{0}")]
    Address(String),
    /// No answer: connection refused, timed out, cut.
    #[error("cannot reach the admin API at {url}: {detail}")]
    Unreachable {
        /// The base URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// An answer other than a success.
    #[error("the admin API answered {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The server's `error` message.
        message: String,
    },
    /// A success whose body is not JSON.
    #[error("the admin API's answer is not JSON: {0}")]
    BadAnswer(String),
    /// Writing a download failed.
    #[error("writing the download: {0}")]
    Output(std::io::Error),
}

/// The result of an admin API call.
pub type Result<T> = std::result::Result<T, AdminError>;

/// The admin API's default address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:22631";

/// An admin API at a base URL, with an optional token.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// An answer that was not a success: the HTTP status and the server's message.
fn refused(status: u16, body: &str) -> AdminError {
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect());
    AdminError::Refused { status, message }
}

impl AdminClient {
    /// A client of the admin API at `base` (`http://host:port`).
    pub fn new(base: &str, token: Option<String>) -> Result<AdminClient> {
        let base = base.trim().trim_end_matches('/').to_string();
        if base.starts_with("https://") {
            return Err(AdminError::Address(
                "this build talks plain HTTP to the admin API; reach a remote server through \
                 an SSH tunnel or a TLS proxy and give its http:// address"
                    .into(),
            ));
        }
        if !base.starts_with("http://") {
            return Err(AdminError::Address(format!(
                "the admin API address {base:?} is not an http:// URL"
            )));
        }
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .max_redirects(0)
            .build()
            .into();
        Ok(AdminClient {
            base,
            token: token.filter(|t| !t.is_empty()),
            agent,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn io(&self, e: impl std::fmt::Display) -> AdminError {
        AdminError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }

    fn finish(&self, mut resp: ureq::http::Response<ureq::Body>) -> Result<Value> {
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().map_err(|e| self.io(e))?;
        if !(200..300).contains(&status) {
            return Err(refused(status, &text));
        }
        serde_json::from_str(&text).map_err(|e| AdminError::BadAnswer(e.to_string()))
    }

    /// `GET path`, as JSON.
    pub fn get(&self, path: &str) -> Result<Value> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| self.io(e))?;
        self.finish(resp)
    }

    /// `POST path` with a JSON body, as JSON. Needs the token.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value> {
        let mut req = self
            .agent
            .post(self.url(path))
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let resp = req.send(body.to_string()).map_err(|e| self.io(e))?;
        self.finish(resp)
    }

    /// `GET path`, streamed into `out` (for a download of any size). Returns the bytes
    /// copied.
    pub fn download(&self, path: &str, out: &mut dyn std::io::Write) -> Result<u64> {
        let mut req = self.agent.get(self.url(path));
        if let Some(t) = &self.token {
            req = req.header("Authorization", format!("Bearer {t}"));
        }
        let mut resp = req.call().map_err(|e| self.io(e))?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            let text = resp.body_mut().read_to_string().map_err(|e| self.io(e))?;
            return Err(refused(status, &text));
        }
        let mut reader = resp.body_mut().as_reader();
        let mut buf = vec![0u8; 64 * 1024];
        let mut n = 0u64;
        loop {
            let k = reader.read(&mut buf).map_err(|e| self.io(e))?;
            if k == 0 {
                break;
            }
            out.write_all(&buf[..k]).map_err(AdminError::Output)?;
            n += k as u64;
        }
        Ok(n)
    }
}
