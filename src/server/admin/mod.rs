//! The admin HTTP API and web page of `tessera-server` (TCP 22631 by default): server
//! status, hosted containers, licenses with their seats in use, the seats and who holds
//! them, revoking a seat, reloading the configuration, the seat history and its export
//! (CSV or JSON), the latest refused seat requests, Prometheus metrics (`docs/SERVER.md`,
//! Administration).
//!
//! It sits on the daemon through a [`Control`] (what the server shows and what an operator
//! may do), and `server::run` serves it beside the daemon; the daemon never calls it.
//!
//! The incumbents' admin pages were the way in for license forgery and for attacks triggered
//! by visiting a web page; every request here passes `guard` first:
//!
//! - the `Host` header must name this server (`localhost`, an IP address, with the port, or
//!   a configured `admin_hosts` entry): no DNS rebinding (421);
//! - an `Origin` (or `Sec-Fetch-Site: cross-site`) from anywhere else is refused (403), and
//!   no `Access-Control-Allow-*` header is ever sent; `OPTIONS` is not answered (405);
//! - with an admin token configured, every API request needs `Authorization: Bearer` with it
//!   (401); without one the API is on a loopback address and answers loopback peers only;
//! - state changes are `POST` only and need a token as `Authorization: Bearer` (403): the
//!   admin token, or, on a server without one, the local admin token below; both are
//!   compared in constant time. The page grants nothing: anyone on this machine may load it
//!   and read, and it carries no token;
//! - without an admin token, a per-start local token in `<state_dir>/local-admin.token`
//!   (mode 0600: root and the server's user) is accepted as the token from loopback peers:
//!   `tessera admin` on the server's machine reads it for revoke and reload, and
//!   `tessera admin page` prints the page's address with it in the fragment (`#token=`),
//!   which the page keeps for its tab and sends like the admin token;
//! - bodies are limited to [`BODY_LIMIT`] (413); malformed JSON is a 400 with
//!   `{"error": …}`; every error is such a JSON body;
//! - responses carry a strict Content-Security-Policy (no inline script: the page's script
//!   is a same-origin file), `nosniff`, `X-Frame-Options: DENY`, `no-referrer`, `no-store`;
//! - no response holds key material, product secrets, tokens, delegations or seat tickets.

pub mod api;
mod idle;
pub mod metrics;
pub mod process;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use subtle::ConstantTimeEq;
use tracing::{debug, info, warn};

use crate::Result;
use crate::server::daemon::{Control, tcp_listener};

/// The largest request body accepted.
pub const BODY_LIMIT: usize = 16 * 1024;

/// The admin API's shared state.
#[derive(Clone)]
pub struct AdminState {
    /// The server, as the admin API sees it.
    pub server: Control,
    /// The local admin token of this server start: in `<state_dir>/local-admin.token`
    /// (mode 0600), accepted as a bearer token from loopback peers while no admin token is
    /// configured. `tessera admin` reads it to make changes on the server's own machine.
    local_token: Arc<String>,
    /// Where the admin API listens.
    pub local: SocketAddr,
}

impl AdminState {
    fn new(server: Control, local: SocketAddr) -> AdminState {
        let local_token = hex::encode(crate::util::random::<32>());
        let file = server.local_token_file();
        let text = crate::admin_client::local_token_text(local, &local_token);
        match crate::util::write_atomic(&file, text.as_bytes(), 0o600) {
            Ok(()) => info!(file = %file.display(), "local admin token written"),
            Err(e) => warn!(error = %e, "cannot write the local admin token: `tessera admin` \
                on this machine needs --token for changes"),
        }
        AdminState {
            server,
            local_token: Arc::new(local_token),
            local,
        }
    }

    /// Whether `host` (a `Host` header value) names this admin API.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let port = self.local.port();
        let mut ok = vec![
            format!("localhost:{port}"),
            format!("127.0.0.1:{port}"),
            format!("[::1]:{port}"),
        ];
        if !self.local.ip().is_unspecified() {
            ok.push(self.local.to_string());
        }
        // An address literal with this port cannot be a rebound DNS name.
        let literal = host.parse::<SocketAddr>().is_ok_and(|a| a.port() == port);
        literal
            || ok.contains(&host)
            || self
                .server
                .admin_auth()
                .hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&host))
    }
}

/// A JSON error answer: `{"error": message}`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response {
    let body = serde_json::json!({ "error": message.into() }).to_string();
    (
        status,
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        body,
    )
        .into_response()
}

fn eq_ct(a: &[u8], b: &[u8]) -> bool {
    // Lengths are not secret (the token's length is the operator's choice).
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at(v.len().min(7));
    if scheme.eq_ignore_ascii_case(b"bearer ") {
        Some(rest.trim_ascii())
    } else {
        Some(b"")
    }
}

/// The page and its files: no data in them, so they are served without the token (the page
/// asks for it and sends it with every API call).
fn is_page_file(path: &str) -> bool {
    matches!(path, "/" | "/admin.js" | "/admin.css" | "/favicon.svg")
}

/// The security checks every request passes (see the module documentation), and the
/// security headers every answer carries.
async fn guard(
    State(st): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = match check(&st, peer, &req) {
        Some(refusal) => refusal,
        None => next.run(req).await,
    };
    secure_headers(resp.headers_mut());
    resp
}

/// `Some(refusal)` when the request may not go on.
fn check(st: &AdminState, peer: SocketAddr, req: &Request) -> Option<Response> {
    let headers = req.headers();
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return Some(error(
            StatusCode::MISDIRECTED_REQUEST,
            "a Host header is needed",
        ));
    };
    if !st.host_allowed(host) {
        warn!(%peer, host, "admin request for another host refused (DNS rebinding?)");
        return Some(error(
            StatusCode::MISDIRECTED_REQUEST,
            format!("this admin API does not answer to the host {host:?}"),
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let same = format!("http://{}", host.to_ascii_lowercase());
        if origin.as_bytes().to_ascii_lowercase() != same.as_bytes() {
            warn!(%peer, origin = ?origin, "cross-origin admin request refused");
            return Some(error(
                StatusCode::FORBIDDEN,
                "cross-origin requests are refused",
            ));
        }
    }
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site")
    {
        return Some(error(
            StatusCode::FORBIDDEN,
            "cross-site requests are refused",
        ));
    }
    let method = req.method();
    if !matches!(*method, Method::GET | Method::HEAD | Method::POST) {
        return Some(method_not_allowed_for(method));
    }
    let auth = st.server.admin_auth();
    let presented = bearer(headers);
    let token_ok = match (&auth.token, presented) {
        (Some(t), Some(b)) => eq_ct(t.expose(), b),
        // No admin token: this start's local token, from this machine only.
        (None, Some(b)) => {
            peer.ip().to_canonical().is_loopback() && eq_ct(st.local_token.as_bytes(), b)
        }
        _ => false,
    };
    if presented.is_some() && !token_ok {
        return Some(unauthorized("the admin token is wrong"));
    }
    let path = req.uri().path();
    if auth.token.is_some() {
        let page_file = is_page_file(path) && *method != Method::POST;
        if !token_ok && !page_file {
            return Some(unauthorized(
                "this admin API needs its token: Authorization: Bearer <admin_token>",
            ));
        }
    } else if !peer.ip().to_canonical().is_loopback() {
        // Only reachable when the listener is on a loopback address and a peer is not.
        return Some(error(
            StatusCode::FORBIDDEN,
            "without an admin token the admin API answers this machine only",
        ));
    }
    if *method == Method::POST {
        // Reading is open to this machine; a change needs a token, whoever loaded the page.
        if !token_ok {
            return Some(error(
                StatusCode::FORBIDDEN,
                "a change needs this server's local admin token (Authorization: Bearer), \
                 which only root and the server's user can read: run `sudo tessera admin \
                 page` on this machine and open the link it prints, or use `sudo tessera \
                 admin`",
            ));
        }
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
            return Some(too_large());
        }
    }
    None
}

fn unauthorized(message: &str) -> Response {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    r.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tessera-admin\""),
    );
    r
}

fn too_large() -> Response {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than {BODY_LIMIT} bytes"),
    )
}

fn method_not_allowed_for(method: &Method) -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("{method} is not allowed here (GET reads, POST changes; no CORS)"),
    )
}

fn secure_headers(h: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        h.insert(k, HeaderValue::from_static(v));
    };
    set(
        h,
        "content-security-policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'",
    );
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    set(h, "referrer-policy", "no-referrer");
    set(h, "cache-control", "no-store");
    set(h, "cross-origin-resource-policy", "same-origin");
    set(h, "cross-origin-opener-policy", "same-origin");
    // Never any CORS header, whatever a handler did.
    let cors: Vec<_> = h
        .keys()
        .filter(|k| k.as_str().starts_with("access-control-"))
        .cloned()
        .collect();
    for k in cors {
        h.remove(k);
    }
}

/// Reads a request body of at most [`BODY_LIMIT`] bytes.
pub async fn read_body(body: Body) -> Result<axum::body::Bytes, Response> {
    axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|_| too_large())
}

/// The router, with every route behind `guard`.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/", get(api::page))
        .route("/admin.js", get(api::script))
        .route("/admin.css", get(api::style))
        .route("/favicon.svg", get(api::icon))
        .route("/api/v1/status", get(api::status))
        .route("/api/v1/containers", get(api::containers))
        .route("/api/v1/licenses", get(api::licenses))
        .route("/api/v1/seats", get(api::seats))
        .route("/api/v1/seats/{seat_id}/revoke", post(api::revoke))
        .route("/api/v1/reload", post(api::reload))
        .route("/api/v1/history", get(api::history))
        .route("/api/v1/usage", get(api::usage))
        .route("/api/v1/report", get(api::report))
        .route("/api/v1/denials", get(api::denials))
        .route("/metrics", get(api::metrics))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin resource") })
        .method_not_allowed_fallback(
            |method: Method| async move { method_not_allowed_for(&method) },
        )
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Binds the admin API's listener on `addr` (made as the daemon makes its own). Returns it
/// and the address it is bound to.
pub fn bind(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let l = tokio::net::TcpListener::from_std(tcp_listener(addr)?)
        .map_err(|e| crate::Error::io(addr.to_string(), e))?;
    let local = l
        .local_addr()
        .map_err(|e| crate::Error::io(addr.to_string(), e))?;
    info!(address = %local, "admin API listening");
    Ok((l, local))
}

/// The admin listener's own limits (`docs/SERVER.md`, Administration): they keep whatever
/// comes to the admin port from taking the descriptors the license port needs.
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Most admin connections at once; more are closed as they are accepted.
    pub max_connections: usize,
    /// Time to send a request's headers, from the connection or the previous answer.
    pub header_timeout: Duration,
    /// Longest time without a byte moving either way on a connection.
    pub idle_timeout: Duration,
}

impl AdminLimits {
    /// The limits a configuration sets.
    pub fn of(c: &crate::server::config::ServerConfig) -> AdminLimits {
        AdminLimits {
            max_connections: c.admin_max_connections,
            header_timeout: Duration::from_millis(c.admin_header_timeout_ms),
            idle_timeout: Duration::from_millis(c.admin_idle_timeout_ms),
        }
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves (open connections get a
/// few seconds to finish).
///
/// Its own accept loop on hyper's HTTP/1 connection (`axum::serve` sets no timer, so no
/// header timeout, and has no connection cap): at most `limits.max_connections` at once (a
/// semaphore; one more is accepted and closed at once), the headers of each request within
/// `limits.header_timeout` (which also closes an idle kept-alive connection), and no more than
/// `limits.idle_timeout` without a byte moving.
pub async fn serve(
    server: Control,
    listener: tokio::net::TcpListener,
    local: SocketAddr,
    limits: AdminLimits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = router(AdminState::new(server, local));
    let cap = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    let mut last_refusal_log: Option<std::time::Instant> = None;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => {
                let (stream, peer) = match r {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors, most likely: wait rather than spin.
                        warn!(error = %e, "admin accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&cap).try_acquire_owned() else {
                    // One line a second at most: a flood must not flood the log too.
                    if last_refusal_log.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        last_refusal_log = Some(std::time::Instant::now());
                        warn!(%peer, max = limits.max_connections,
                            "admin connection limit reached; refused");
                    }
                    drop(stream);
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let svc = hyper_util::service::TowerToHyperService::new(
                    app.clone().layer(axum::Extension(ConnectInfo(peer))),
                );
                let mut stop = rx.clone();
                conns.spawn(async move {
                    let _permit = permit;
                    let io = hyper_util::rt::TokioIo::new(idle::IdleTimeout::new(
                        stream,
                        limits.idle_timeout,
                    ));
                    let mut b = hyper::server::conn::http1::Builder::new();
                    b.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(limits.header_timeout)
                        .keep_alive(true);
                    let conn = b.serve_connection(io, svc);
                    tokio::pin!(conn);
                    tokio::select! {
                        r = conn.as_mut() => {
                            if let Err(e) = r {
                                debug!(%peer, error = %e, "admin connection closed");
                            }
                            return;
                        }
                        _ = stop.changed() => conn.as_mut().graceful_shutdown(),
                    }
                    let _ = conn.await;
                });
            }
        }
    }
    let _ = tx.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    let _ = tokio::time::timeout(Duration::from_secs(3), drained).await;
    conns.abort_all();
}
