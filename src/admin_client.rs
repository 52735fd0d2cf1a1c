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
    /// The local admin token could not be had (see [`AdminClient::local_token`]).
    #[error("{0}")]
    LocalToken(String),
    /// Writing a download failed.
    #[error("writing the download: {0}")]
    Output(std::io::Error),
}

/// The result of an admin API call.
pub type Result<T> = std::result::Result<T, AdminError>;

/// The admin API's default address.
pub const DEFAULT_URL: &str = "http://127.0.0.1:22631";

/// The file in its state directory where a server with no admin token keeps the local admin
/// token of this start (mode 0600: root and the server's user read it).
pub const LOCAL_TOKEN_FILE: &str = "local-admin.token";

/// The local admin token file's text: the admin API's address, then the token. The address
/// ties the token to the server that wrote it: `tessera admin` sends it only to that address.
pub fn local_token_text(admin: std::net::SocketAddr, token: &str) -> String {
    format!("tessera-local-admin {admin} {token}\n")
}

/// Reads [`local_token_text`]: the address and the token (64 hex digits); `None` for
/// anything else.
pub fn parse_local_token(text: &str) -> Option<(std::net::SocketAddr, String)> {
    match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        ["tessera-local-admin", addr, token]
            if token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            Some((addr.parse().ok()?, token.to_string()))
        }
        _ => None,
    }
}

/// The admin page's address, as [`AdminClient::page_link`] makes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageLink {
    /// The address to open: with `#token=<local admin token>` when the server has no admin
    /// token.
    pub url: String,
    /// The server has an admin token: the page asks for it.
    pub needs_admin_token: bool,
}

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

    /// The local admin token of the server at this address, for a state change on the
    /// server's own machine when no token was given: the server names the file in its
    /// status (`local_token_file`), and it is read only if it is a `local-admin.token`
    /// written for this very address, so a stranger listening on the admin port can
    /// neither make this read another file nor learn another server's token.
    pub fn local_token(&self) -> Result<String> {
        self.local_token_if_any()?.ok_or_else(|| {
            AdminError::LocalToken(
                "this server has an admin token: give it with --token or TESSERA_ADMIN_TOKEN"
                    .into(),
            )
        })
    }

    /// The admin page's address for a browser on this machine (`tessera admin page`). On a
    /// server without an admin token it carries the local admin token (read as
    /// [`local_token`](Self::local_token) reads it) in its fragment, `#token=...`, which
    /// the browser does not send and the page takes out of its address bar; on a server with
    /// one it is the plain address, and the page asks for the admin token.
    pub fn page_link(&self) -> Result<PageLink> {
        let url = format!("{}/", self.base);
        Ok(match self.local_token_if_any()? {
            Some(token) => PageLink {
                url: format!("{url}#token={token}"),
                needs_admin_token: false,
            },
            None => PageLink {
                url,
                needs_admin_token: true,
            },
        })
    }

    /// [`local_token`](Self::local_token), or `None` when the server has an admin token.
    fn local_token_if_any(&self) -> Result<Option<String>> {
        let status = match self.get("/api/v1/status") {
            Err(AdminError::Refused { status: 401, .. }) => return Ok(None),
            r => r?,
        };
        if status.get("auth").and_then(Value::as_str) == Some("token") {
            return Ok(None);
        }
        let Some(path) = status.get("local_token_file").and_then(Value::as_str) else {
            return Err(AdminError::LocalToken(
                "the server does not name a local admin token file (an older server?): give \
                 its admin token with --token"
                    .into(),
            ));
        };
        let path = std::path::Path::new(path);
        if path.file_name() != Some(std::ffi::OsStr::new(LOCAL_TOKEN_FILE)) || !path.is_absolute() {
            return Err(AdminError::LocalToken(format!(
                "the server names {} as its local admin token file, which is not one",
                path.display()
            )));
        }
        let text = std::fs::read_to_string(path).map_err(|e| {
            AdminError::LocalToken(if e.kind() == std::io::ErrorKind::PermissionDenied {
                format!(
                    "a change on this server needs its local admin token, in {}, which only \
                     root and the server's user may read: run this command as one of them \
                     (sudo), or give the admin token with --token",
                    path.display()
                )
            } else {
                format!("reading the local admin token {}: {e}", path.display())
            })
        })?;
        let (addr, token) = parse_local_token(&text).ok_or_else(|| {
            AdminError::LocalToken(format!(
                "{} is not a local admin token file",
                path.display()
            ))
        })?;
        if !self.is_address(addr) {
            return Err(AdminError::LocalToken(format!(
                "{} holds the token of the admin API at {addr}, not of {}: another program \
                 answers there",
                path.display(),
                self.base
            )));
        }
        Ok(Some(token))
    }

    /// Whether the base URL names `addr` (`localhost` names the loopback addresses).
    fn is_address(&self, addr: std::net::SocketAddr) -> bool {
        let hostport = self.base.trim_start_matches("http://");
        if let Ok(a) = hostport.parse::<std::net::SocketAddr>() {
            return a == addr;
        }
        match hostport.rsplit_once(':') {
            Some((host, port)) if host.eq_ignore_ascii_case("localhost") => {
                addr.ip().is_loopback() && port.parse() == Ok(addr.port())
            }
            _ => false,
        }
    }

    /// Uses `token` from now on.
    pub fn set_token(&mut self, token: String) {
        self.token = Some(token).filter(|t| !t.is_empty());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_token_is_read_only_for_the_address_it_names() {
        let addr: std::net::SocketAddr = "127.0.0.1:22631".parse().unwrap();
        let token = "ab".repeat(32);
        let text = local_token_text(addr, &token);
        assert_eq!(parse_local_token(&text), Some((addr, token.clone())));
        // Anything else is not a token file: another word, a short or non-hex token.
        for bad in [
            "".to_string(),
            format!("tessera-local-admin {addr}"),
            format!("other {addr} {token}"),
            format!("tessera-local-admin {addr} {}", &token[..63]),
            format!("tessera-local-admin {addr} {}zz", &token[..62]),
            format!("tessera-local-admin nowhere {token}"),
        ] {
            assert_eq!(parse_local_token(&bad), None, "{bad}");
        }
        let at = |base: &str| AdminClient::new(base, None).unwrap().is_address(addr);
        assert!(at("http://127.0.0.1:22631"));
        assert!(at("http://127.0.0.1:22631/"));
        assert!(at("http://localhost:22631"));
        assert!(!at("http://127.0.0.1:22632"));
        assert!(!at("http://127.0.0.2:22631"));
        assert!(!at("http://localhost:1"));
        assert!(!at("http://example.com:22631"));
    }
}
