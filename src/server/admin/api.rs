//! The admin API's handlers: JSON under `/api/v1/`, the Prometheus text at `/metrics`, and
//! the page. Everything here answers what the seat table and the hosted containers say;
//! nothing here returns key material, license bytes, delegations or tokens.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::metrics::Exposition;
use super::{AdminState, error, read_body};
use crate::container::protocol::{Request, Response as ContainerResponse};
use crate::host::MachineKind;
use crate::server::hosted::HostedKind;
use crate::server::store::HISTORY_MINUTES;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
const ICON: &str = include_str!("favicon.svg");

fn json_ok(v: Value) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

fn internal(e: impl std::fmt::Display) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

use crate::util::now_ms;

/// `GET /`: the page, with this server start's CSRF token (only when no admin token is
/// configured: with one, the page asks for the token and sends it instead).
pub async fn page(State(st): State<AdminState>) -> Response {
    let token_mode = st.server.admin_auth().token.is_some();
    let csrf = if token_mode { "" } else { st.csrf.as_str() };
    let html = PAGE
        .replace("{{CSRF}}", csrf)
        .replace("{{AUTH}}", if token_mode { "token" } else { "csrf" })
        .replace("{{NAME}}", &html_escape(st.server.name()));
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

fn html_escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// `GET /admin.js`.
pub async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

/// `GET /admin.css`.
pub async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

/// `GET /favicon.svg`.
pub async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], ICON).into_response()
}

/// `GET /api/v1/status`.
pub async fn status(State(st): State<AdminState>) -> Response {
    let s = &st.server;
    let bound = s.bound();
    let hosting = s.hosting();
    let usage = s.usage();
    let now = now_ms();
    let seats = s
        .with_table(|t| t.rows().filter(|r| r.expires_ms > now).count())
        .unwrap_or(0);
    use std::sync::atomic::Ordering::Relaxed;
    json_ok(json!({
        "name": s.name(),
        "version": crate::VERSION,
        "uptime_s": s.uptime().as_secs(),
        "started_at": s.started_unix(),
        "listen": bound.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "admin_listen": bound.admin.map(|a| a.to_string()),
        "auth": if s.admin_auth().token.is_some() { "token" } else { "loopback" },
        // Where `tessera admin` on this machine finds the local admin token (no admin token).
        "local_token_file": s.admin_auth().token.is_none()
            .then(|| s.local_token_file().display().to_string()),
        "connections": s.stats().connections.load(Relaxed),
        "connections_total": s.stats().accepted.load(Relaxed),
        "requests": s.stats().requests.load(Relaxed),
        "seats": seats,
        "seats_in_use": usage.values().map(|u| u64::from(u.0)).sum::<u64>(),
        "quantity": usage.values().map(|u| u64::from(u.1)).sum::<u64>(),
        "containers": hosting.hosted.containers.len(),
        "licenses": hosting.hosted.containers.iter().map(|c| c.licenses.len()).sum::<usize>(),
        "lease_ms": s.lease_ms(),
        "renew_ms": s.renew_ms(),
        "pool": pool_json(s),
    }))
}

/// Pool mode: the pool as this member last looked (members, which are up, the etcd
/// endpoints and their health); `null` for a single server.
fn pool_json(s: &crate::server::daemon::Control) -> Value {
    let Some(pool) = s.pool() else {
        return Value::Null;
    };
    let view = pool.monitor().map(|m| m.view()).unwrap_or_default();
    json!({
        "member": pool.member(),
        "prefix": pool.prefix(),
        "members": view.members,
        "members_up": view.members_up(),
        "registrations": view.registrations,
        "endpoints": view.endpoints,
        "endpoints_healthy": view.endpoints_healthy(),
        "checked_ms": view.checked_ms,
        "error": view.error,
        "seats_served": pool.served_count(),
    })
}

/// `GET /api/v1/containers`: kind, serial, mode, and whether each is used exclusively
/// (a container several hosts talk to is locked out as shared).
pub async fn containers(State(st): State<AdminState>) -> Response {
    let hosting = st.server.hosting();
    let result = tokio::task::spawn_blocking(move || {
        hosting
            .hosted
            .containers
            .iter()
            .map(|c| {
                let (kind, mode) = match c.kind {
                    HostedKind::Software => ("software", "file".to_string()),
                    HostedKind::Dongle(m) => ("dongle", m.to_string()),
                };
                let (access, detail) = match c.call(Request::Identify) {
                    Ok(ContainerResponse::Identity { shared, .. }) => {
                        (if shared { "shared" } else { "exclusive" }, Value::Null)
                    }
                    Ok(_) => ("unknown", json!("unexpected answer")),
                    Err(e) => ("unknown", json!(e.to_string())),
                };
                json!({
                    "kind": kind,
                    "serial": c.serial,
                    "mode": mode,
                    "vendor_id": c.vendor_id,
                    "access": access,
                    "access_error": detail,
                    "licenses": c.licenses.len(),
                    "delegation_expiry": c.delegation_expiry(),
                })
            })
            .collect::<Vec<_>>()
    })
    .await;
    match result {
        Ok(list) => json_ok(json!({ "containers": list })),
        Err(e) => internal(e),
    }
}

fn unit_label(u: crate::license::CountingUnit) -> String {
    u.to_string()
}

/// `GET /api/v1/licenses`: every hosted license with its seats in use.
pub async fn licenses(State(st): State<AdminState>) -> Response {
    let hosting = st.server.hosting();
    let now = now_ms();
    // Pool mode: the seats in use in the whole pool, read from etcd now.
    let mut pooled: HashMap<[u8; 16], u32> = HashMap::new();
    if let Some(pool) = st.server.pool() {
        for c in &hosting.hosted.containers {
            for l in &c.licenses {
                match pool.in_use(&l.license_id).await {
                    Ok(n) => pooled.insert(l.license_id, n),
                    Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
                };
            }
        }
    }
    let list = st.server.with_table(|t| {
        let mut out = Vec::new();
        for c in &hosting.hosted.containers {
            for l in &c.licenses {
                out.push(json!({
                    "license_id": l.id_hex(),
                    "container": c.serial,
                    "vendor_id": l.vendor_id,
                    "product_code": l.product_code,
                    "product_name": l.product_name,
                    "features": format!("{:#010x}", l.features),
                    "quantity": l.quantity,
                    "in_use": pooled
                        .get(&l.license_id)
                        .copied()
                        .unwrap_or_else(|| t.in_use(&l.license_id, now)),
                    "counting_unit": unit_label(l.counting_unit),
                    "exclusive_allowed": l.exclusive_allowed,
                    "issued_at": l.issued_at,
                    "expiry": l.expiry,
                    "expired": l.expiry.is_some_and(|e| e <= now / 1000),
                    "vm_policy": l.vm_policy.to_string(),
                }));
            }
        }
        out
    });
    match list {
        Ok(list) => json_ok(json!({ "licenses": list })),
        Err(e) => internal(e),
    }
}

fn machine_json(m: &MachineKind) -> (String, bool) {
    (m.to_string(), m.is_virtual())
}

/// `GET /api/v1/seats`: the live seats, who holds them, and until when.
pub async fn seats(State(st): State<AdminState>) -> Response {
    let hosting = st.server.hosting();
    let mut meta = st.server.seat_meta();
    let now = now_ms();
    // Pool mode: the pool's seats, whichever member serves them (the rows in etcd); who
    // holds a seat is known to the member serving it (`member`), and its lease is etcd's.
    let mut members: HashMap<[u8; 16], String> = HashMap::new();
    let rows = match st.server.pool() {
        Some(pool) => match pool.rows().await {
            Ok(rows) => Ok(rows
                .into_iter()
                .filter_map(|p| {
                    let r = p.seat_row().ok()?;
                    // Who holds a seat another member serves: as its row says.
                    if let Some(h) = crate::server::daemon::SeatHolder::decode(&p.holder) {
                        meta.entry(r.seat_id)
                            .or_insert(crate::server::daemon::SeatMeta {
                                holder: std::sync::Arc::new(h),
                                since_ms: p.since_ms,
                            });
                    }
                    members.insert(r.seat_id, p.member);
                    Some(r)
                })
                .collect::<Vec<_>>()),
            Err(e) => return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        None => st.server.with_table(|t| {
            t.rows()
                .filter(|r| r.expires_ms > now)
                .cloned()
                .collect::<Vec<_>>()
        }),
    };
    let mut rows = match rows {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    let pooled = st.server.pool().is_some();
    // A leased pool seat lives while etcd keeps its lease: its stored expiry is the one it
    // was granted with, not when it ends.
    let lease_end = |r: &crate::server::seats::SeatRow| {
        if pooled && r.borrow.is_none() {
            (None, None)
        } else {
            (Some(r.expires_ms / 1000), Some(r.expires_ms))
        }
    };
    rows.sort_by_key(|r| {
        let since = match &r.borrow {
            Some(b) => b.issued_at.saturating_mul(1000),
            None => meta.get(&r.seat_id).map_or(0, |m| m.since_ms),
        };
        (since, r.seat_id)
    });
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            let lic = hosting
                .hosted
                .by_license_id(&r.license_id)
                .map(|(ci, li)| &hosting.hosted.containers[ci].licenses[li]);
            let m = meta.get(&r.seat_id);
            let (machine, vm) = m.map_or((None, None), |m| {
                let (s, v) = machine_json(&m.holder.machine);
                (Some(s), Some(v))
            });
            let uid = |session: &str| {
                crate::host::SessionId {
                    kind: crate::host::SessionKind::Login,
                    id: session.to_string(),
                }
                .uid()
                .map(|u| format!("uid {u}"))
            };
            let member = members.get(&r.seat_id);
            let (lease_expires, lease_expires_ms) = lease_end(r);
            // A borrowed seat: who has it (from its borrow) and until when.
            if let Some(b) = &r.borrow {
                return json!({
                    "member": member,
                    "seat_id": hex::encode(r.seat_id),
                    "license_id": hex::encode(r.license_id),
                    "vendor_id": lic.map(|l| l.vendor_id),
                    "product_code": lic.map(|l| l.product_code),
                    "product_name": lic.map(|l| l.product_name.clone()),
                    "counting_unit": lic.map(|l| unit_label(l.counting_unit)),
                    "host": b.hostname,
                    "user": uid(&b.user),
                    "session": b.user,
                    "machine": None::<String>,
                    "vm": None::<String>,
                    "pid": None::<u32>,
                    "since": b.issued_at,
                    "lease_expires": lease_expires,
                    "lease_expires_ms": lease_expires_ms,
                    "exclusive": false,
                    "borrowed": true,
                    "borrowed_until": b.until,
                    "borrower": b.borrower_serial,
                });
            }
            let user = m.and_then(|m| uid(&m.holder.session));
            json!({
                "member": member,
                "seat_id": hex::encode(r.seat_id),
                "license_id": hex::encode(r.license_id),
                "vendor_id": lic.map(|l| l.vendor_id),
                "product_code": lic.map(|l| l.product_code),
                "product_name": lic.map(|l| l.product_name.clone()),
                "counting_unit": lic.map(|l| unit_label(l.counting_unit)),
                "host": m.map(|m| m.holder.hostname.clone()),
                "user": user,
                "session": m.map(|m| m.holder.session.clone()),
                "machine": machine,
                "vm": vm,
                "pid": m.map(|m| m.holder.pid),
                "since": m.map(|m| m.since_ms / 1000),
                "lease_expires": lease_expires,
                "lease_expires_ms": lease_expires_ms,
                "exclusive": r.exclusive,
                "borrowed": false,
            })
        })
        .collect();
    json_ok(json!({ "seats": list, "now": now / 1000 }))
}

fn parse_seat_id(s: &str) -> Option<[u8; 16]> {
    if s.len() != 32 {
        return None;
    }
    hex::decode(s).ok()?.try_into().ok()
}

/// Parses an optional JSON object body: empty is `{}`; anything else must be an object.
/// The error is the message of a 400.
fn json_body(bytes: &[u8]) -> Result<serde_json::Map<String, Value>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
    }
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("malformed JSON: {e}")),
    }
}

/// The seat and reason of a revoke request (path segment and body), or the message of a 400.
pub(crate) fn revoke_request(seat_id: &str, body: &[u8]) -> Result<([u8; 16], String), String> {
    let body = json_body(body)?;
    let reason = match body.get("reason") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) if s.chars().count() <= 200 => s.clone(),
        Some(_) => return Err("reason must be a string of at most 200 characters".into()),
    };
    if let Some(k) = body.keys().find(|k| *k != "reason") {
        return Err(format!("unknown field {k:?}"));
    }
    let Some(id) = parse_seat_id(seat_id) else {
        return Err("a seat id is 32 hex digits (as /api/v1/seats lists them)".into());
    };
    Ok((id, reason))
}

/// `POST /api/v1/seats/{seat_id}/revoke` (body: optional `{"reason": "…"}`): takes the seat
/// away; its client's next renewal or call gets `TESSERA_E_LEASE_LOST`.
pub async fn revoke(
    State(st): State<AdminState>,
    Path(seat_id): Path<String>,
    body: Body,
) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let (id, reason) = match revoke_request(&seat_id, &bytes) {
        Ok(r) => r,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    match st.server.revoke(&id).await {
        Ok(true) => {
            tracing::info!(seat = %seat_id, reason = %reason, "revoked");
            json_ok(json!({ "revoked": hex::encode(id) }))
        }
        Ok(false) => error(
            StatusCode::NOT_FOUND,
            format!("this server holds no live seat {}", hex::encode(id)),
        ),
        // A borrowed seat: refused, with why.
        Err(e @ crate::Error::InvalidArgument(_)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(e) => internal(e),
    }
}

/// `POST /api/v1/reload`: re-reads the configuration (see `Server::reload`).
pub async fn reload(State(st): State<AdminState>, body: Body) -> Response {
    let bytes = match read_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if let Err(m) = json_body(&bytes) {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let server = st.server.clone();
    match tokio::task::spawn_blocking(move || server.reload()).await {
        Ok(Ok(r)) => json_ok(json!({
            "applied": r.applied,
            "restart_needed": r.restart_needed,
            "containers": r.containers,
            "licenses": r.licenses,
            "problems": r.problems,
        })),
        Ok(Err(e)) => error(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the configuration was not reloaded: {e}"),
        ),
        Err(e) => internal(e),
    }
}

fn parse_product(s: &str) -> Option<(u32, u32)> {
    let (v, p) = s.split_once(':')?;
    Some((v.trim().parse().ok()?, p.trim().parse().ok()?))
}

/// What a history query asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HistoryQuery {
    /// Minutes back from now.
    pub(crate) minutes: u64,
    /// Minutes per point.
    pub(crate) step: u64,
    /// One product (vendor, product code), or all.
    pub(crate) product: Option<(u32, u32)>,
}

/// The parameters of a history query, or the message of a 400.
pub(crate) fn history_query(q: &HashMap<String, String>) -> Result<HistoryQuery, String> {
    if let Some(k) = q
        .keys()
        .find(|k| !matches!(k.as_str(), "product" | "minutes" | "step"))
    {
        return Err(format!("unknown parameter {k:?}"));
    }
    let minutes = match q.get("minutes").map(|m| m.parse::<u64>()) {
        None => 60,
        Some(Ok(m)) if (1..=HISTORY_MINUTES).contains(&m) => m,
        Some(_) => return Err(format!("minutes is a number from 1 to {HISTORY_MINUTES}")),
    };
    let step = match q.get("step").map(|m| m.parse::<u64>()) {
        None => minutes.div_ceil(720),
        Some(Ok(s)) if (1..=1440).contains(&s) => s,
        Some(_) => return Err("step is a number from 1 to 1440".into()),
    };
    let product = match q.get("product") {
        None => None,
        Some(p) => match parse_product(p) {
            Some(k) => Some(k),
            None => return Err("product is VENDOR:PRODUCT (decimal numbers)".into()),
        },
    };
    Ok(HistoryQuery {
        minutes,
        step,
        product,
    })
}

/// `GET /api/v1/history?product=VENDOR:PRODUCT&minutes=N&step=S`: seats in use per product
/// per minute (or per bucket of `step` minutes, each its peak) over the last `minutes`
/// (default 60, at most 31 days). Without `step`, buckets are sized to give at most 720
/// points.
pub async fn history(
    State(st): State<AdminState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let HistoryQuery {
        minutes,
        step,
        product,
    } = match history_query(&q) {
        Ok(h) => h,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let now_min = now_ms() / 60_000;
    let since = (now_min + 1).saturating_sub(minutes);
    let server = st.server.clone();
    let points =
        match tokio::task::spawn_blocking(move || server.history(since, product, step)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        };
    // Every hosted product (of the one asked for), with its points.
    let hosting = st.server.hosting();
    let mut products: Vec<(u32, u32, String)> = Vec::new();
    for c in &hosting.hosted.containers {
        for l in &c.licenses {
            if !products
                .iter()
                .any(|(v, p, _)| (*v, *p) == (l.vendor_id, l.product_code))
            {
                products.push((l.vendor_id, l.product_code, l.product_name.clone()));
            }
        }
    }
    for p in &points {
        if !products
            .iter()
            .any(|(v, c, _)| (*v, *c) == (p.vendor_id, p.product_code))
        {
            products.push((p.vendor_id, p.product_code, String::new()));
        }
    }
    products.retain(|(v, p, _)| product.is_none_or(|k| k == (*v, *p)));
    products.sort();
    let usage = st.server.usage();
    let series: Vec<Value> = products
        .into_iter()
        .map(|(v, p, name)| {
            let pts: Vec<Value> = points
                .iter()
                .filter(|x| (x.vendor_id, x.product_code) == (v, p))
                .map(|x| json!([x.minute * 60, x.in_use]))
                .collect();
            let (in_use, quantity) = usage.get(&(v, p)).copied().unwrap_or((0, 0));
            json!({
                "vendor_id": v,
                "product_code": p,
                "product_name": name,
                "in_use": in_use,
                "quantity": quantity,
                "points": pts,
            })
        })
        .collect();
    json_ok(json!({
        "minutes": minutes,
        "step": step,
        "from": since * 60,
        "to": now_min * 60,
        "products": series,
    }))
}

/// The vendor a usage query names (`None`: the server's one log), or the message of a 400.
pub(crate) fn usage_query(q: &HashMap<String, String>) -> Result<Option<u32>, String> {
    if let Some(k) = q.keys().find(|k| k.as_str() != "vendor") {
        return Err(format!("unknown parameter {k:?}"));
    }
    match q.get("vendor").map(|v| parse_u32(v)) {
        None => Ok(None),
        Some(Some(v)) => Ok(Some(v)),
        Some(None) => Err("vendor is a vendor id (decimal or 0x hex)".into()),
    }
}

/// `GET /api/v1/usage[?vendor=ID]`: a publisher's usage log as the publisher checks it
/// (`tessera-vendor verify-usage`), checkpointed up to now. The vendor may be left out when
/// the server keeps one log.
pub async fn usage(
    State(st): State<AdminState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let vendor = match usage_query(&q) {
        Ok(v) => v,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let server = st.server.clone();
    match tokio::task::spawn_blocking(move || server.export_usage(vendor)).await {
        Ok(Ok(export)) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!(
                        "attachment; filename=\"tessera-usage-{}.log\"",
                        export.vendor
                    ),
                ),
                (header::CONTENT_LENGTH, export.len.to_string()),
            ],
            Body::from_stream(stream_file(export)),
        )
            .into_response(),
        Ok(Err(e @ crate::Error::NoLicense(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e @ crate::Error::InvalidArgument(_))) => {
            error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Ok(Err(e @ crate::Error::Tampered(_))) => error(StatusCode::CONFLICT, e.to_string()),
        Ok(Err(e)) => internal(e),
        Err(e) => internal(crate::Error::Internal(format!("usage export task: {e}"))),
    }
}

/// The export's bytes in chunks of 64 KiB, read as they are sent: the server holds one chunk
/// per download, whatever the log's size.
fn stream_file(
    export: crate::server::usage::Export,
) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> + Send {
    const CHUNK: u64 = 64 * 1024;
    let file = tokio::fs::File::from_std(export.file);
    futures_util::stream::try_unfold((file, export.len), |(mut file, left)| async move {
        use tokio::io::AsyncReadExt;
        if left == 0 {
            return Ok(None);
        }
        let n = left.min(CHUNK);
        let mut chunk = vec![0u8; n as usize];
        file.read_exact(&mut chunk).await?;
        Ok(Some((chunk, (file, left - n))))
    })
}

fn parse_u32(s: &str) -> Option<u32> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(st): State<AdminState>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &st.server;
    let hosting = s.hosting();
    let usage = s.usage();
    let mut names: HashMap<(u32, u32), String> = HashMap::new();
    for c in &hosting.hosted.containers {
        for l in &c.licenses {
            names
                .entry((l.vendor_id, l.product_code))
                .or_insert_with(|| l.product_name.clone());
        }
    }
    let mut e = Exposition::new();
    e.single(
        "tessera_up",
        "gauge",
        "1 while the license server runs.",
        1.0,
    );
    e.single(
        "tessera_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        s.uptime().as_secs_f64(),
    );
    // (metric, help, whether it is the quantity rather than the seats in use)
    for (metric, help, quantity) in [
        (
            "tessera_seats_in_use",
            "Seats in use per product (counted by the license's unit).",
            false,
        ),
        (
            "tessera_seats_quantity",
            "Seats the hosted licenses offer per product.",
            true,
        ),
    ] {
        e.family(metric, "gauge", help);
        for ((v, p), &(in_use, offered)) in &usage {
            let name = names.get(&(*v, *p)).map_or("", String::as_str);
            e.sample(
                metric,
                &[
                    ("vendor", &v.to_string()),
                    ("product", &p.to_string()),
                    ("product_name", name),
                ],
                f64::from(if quantity { offered } else { in_use }),
            );
        }
    }
    let (stats, store) = (s.stats(), s.commit_stats());
    let counters = |e: &mut Exposition, list: &[(&str, &str, &std::sync::atomic::AtomicU64)]| {
        for (name, help, v) in list {
            e.single(name, "counter", help, v.load(Relaxed) as f64);
        }
    };
    counters(
        &mut e,
        &[(
            "tessera_grants_total",
            "Seats granted (re-attachments included).",
            &stats.grants,
        )],
    );
    e.family(
        "tessera_denials_total",
        "counter",
        "Requests answered with an error, by status.",
    );
    for (reason, n) in stats.denials.by_reason() {
        e.sample("tessera_denials_total", &[("reason", &reason)], n as f64);
    }
    counters(
        &mut e,
        &[
            (
                "tessera_renewals_total",
                "Lease renewal requests answered.",
                &stats.renewals,
            ),
            (
                "tessera_renewal_seats_lost_total",
                "Seats a renewal told their client were lost.",
                &stats.renewals_lost,
            ),
            (
                "tessera_releases_total",
                "Seats released by their clients.",
                &stats.releases,
            ),
            (
                "tessera_lease_expiries_total",
                "Seats whose lease ran out.",
                &stats.lease_expiries,
            ),
            (
                "tessera_revocations_total",
                "Seats revoked by an admin.",
                &stats.revocations,
            ),
            (
                "tessera_reloads_total",
                "Configuration reloads.",
                &stats.reloads,
            ),
            (
                "tessera_borrows_total",
                "Seats lent to other machines (retries included).",
                &stats.borrows,
            ),
            (
                "tessera_returns_total",
                "Borrowed seats given back before their end.",
                &stats.returns,
            ),
        ],
    );
    // Borrowed seats held now, per product (each holds a slot of its own until its end).
    let mut borrowed: std::collections::BTreeMap<(u32, u32), u32> =
        usage.keys().map(|k| (*k, 0)).collect();
    let now = now_ms();
    let _ = s.with_table(|t| {
        for r in t.rows().filter(|r| r.is_borrowed() && r.expires_ms > now) {
            if let Some((ci, li)) = hosting.hosted.by_license_id(&r.license_id) {
                let l = &hosting.hosted.containers[ci].licenses[li];
                *borrowed.entry((l.vendor_id, l.product_code)).or_default() += 1;
            }
        }
    });
    e.family(
        "tessera_seats_borrowed",
        "gauge",
        "Borrowed seats held now per product (counted among the seats in use).",
    );
    for ((v, p), n) in &borrowed {
        let name = names.get(&(*v, *p)).map_or("", String::as_str);
        e.sample(
            "tessera_seats_borrowed",
            &[
                ("vendor", &v.to_string()),
                ("product", &p.to_string()),
                ("product_name", name),
            ],
            f64::from(*n),
        );
    }
    e.single(
        "tessera_connections",
        "gauge",
        "License-protocol connections open now.",
        stats.connections.load(Relaxed) as f64,
    );
    counters(
        &mut e,
        &[
            (
                "tessera_connections_total",
                "License-protocol connections accepted.",
                &stats.accepted,
            ),
            (
                "tessera_connections_refused_total",
                "Connections refused (limit) or dropped (bad frames, time-outs).",
                &stats.refused,
            ),
            (
                "tessera_requests_total",
                "License-protocol requests answered.",
                &stats.requests,
            ),
            (
                "tessera_seat_store_commits_total",
                "Seat table transactions (each one fsync with fsync on).",
                &store.transactions,
            ),
            (
                "tessera_seat_store_changes_total",
                "Seat table rows written or deleted in those transactions.",
                &store.changes,
            ),
            (
                "tessera_seat_store_gathered_total",
                "Commits that waited for the commit window (the server was saturated).",
                &store.gathered,
            ),
        ],
    );
    e.latency(
        "tessera_request_duration_seconds",
        "License-protocol request latency by kind, from the frame read to the answer.",
        &stats.latency,
    );
    if let Some(pool) = s.pool() {
        pool_metrics(&mut e, pool);
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        e.finish(),
    )
        .into_response()
}

/// Pool mode: the pool's metrics, each labelled with this member's name.
fn pool_metrics(e: &mut Exposition, pool: &crate::server::pool::EtcdSeats) {
    use crate::server::pool_status::EtcdOp;
    use std::sync::atomic::Ordering::Relaxed;
    let member = pool.member();
    let me = [("member", member)];
    let view = pool.monitor().map(|m| m.view()).unwrap_or_default();
    e.family(
        "tessera_pool_member_info",
        "gauge",
        "1 on a pool member: its name and the pool's key prefix in etcd.",
    );
    e.sample(
        "tessera_pool_member_info",
        &[("member", member), ("prefix", pool.prefix())],
        1.0,
    );
    for (name, help, v) in [
        (
            "tessera_pool_members",
            "Members that announced themselves in the pool, up or not.",
            view.members.len() as f64,
        ),
        (
            "tessera_pool_members_up",
            "Members whose heartbeat is in etcd.",
            view.members_up() as f64,
        ),
        (
            "tessera_pool_etcd_endpoints",
            "etcd endpoints configured.",
            view.endpoints.len() as f64,
        ),
        (
            "tessera_pool_etcd_endpoints_healthy",
            "etcd endpoints that answered their status call.",
            view.endpoints_healthy() as f64,
        ),
        (
            "tessera_pool_seats_served",
            "Seats this member serves (keeps their etcd leases alive).",
            pool.served_count() as f64,
        ),
    ] {
        e.family(name, "gauge", help);
        e.sample(name, &me, v);
    }
    e.family(
        "tessera_pool_etcd_endpoint_up",
        "gauge",
        "1 while an etcd endpoint answers its status call.",
    );
    for ep in &view.endpoints {
        e.sample(
            "tessera_pool_etcd_endpoint_up",
            &[("member", member), ("endpoint", &ep.endpoint)],
            if ep.healthy { 1.0 } else { 0.0 },
        );
    }
    let st = pool.stats();
    for (name, help, v) in [
        (
            "tessera_pool_txn_retries_total",
            "Seat transactions decided again after another member granted in the same license.",
            &st.txn_retries,
        ),
        (
            "tessera_pool_txn_gave_up_total",
            "Acquires that gave up after the bounded retries.",
            &st.txn_gave_up,
        ),
        (
            "tessera_pool_etcd_errors_total",
            "etcd calls that failed (the endpoint or the cluster did not answer).",
            &st.etcd_errors,
        ),
    ] {
        e.family(name, "counter", help);
        e.sample(name, &me, v.load(Relaxed) as f64);
    }
    let name = "tessera_pool_etcd_request_duration_seconds";
    e.family(
        name,
        "histogram",
        "etcd round trips of this member by kind (txn, range, keep_alive, lease, status, put).",
    );
    for op in EtcdOp::ALL {
        let h = st.counts(op);
        if h.count > 0 {
            e.histogram(name, &[("member", member), ("op", op.label())], &h);
        }
    }
}
