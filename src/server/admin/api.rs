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
use super::{AdminState, error, read_body, users};
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

/// A Unix time (seconds) as ISO 8601 with its offset (UTC: `2026-12-07T01:05:14Z`).
pub(crate) fn iso(secs: u64) -> Option<String> {
    let ts = jiff::Timestamp::from_second(i64::try_from(secs).ok()?).ok()?;
    Some(ts.to_string())
}

/// A Unix time in milliseconds as ISO 8601 with its offset, to the millisecond.
pub(crate) fn iso_ms(ms: u64) -> Option<String> {
    let ts = jiff::Timestamp::from_millisecond(i64::try_from(ms).ok()?).ok()?;
    Some(format!("{ts:.3}"))
}

/// Handles per license id.
type HandlesPerLicense = HashMap<[u8; 16], u32>;
/// Handles per seat: (license id, unit key).
type HandlesPerSeat<'a> = HashMap<([u8; 16], &'a str), u32>;

/// Live handles (seat rows: one per acquire) per license, and per seat (license and unit
/// key): rows sharing a unit key are one seat of the license's counting unit.
fn handle_counts<'a>(
    rows: impl Iterator<Item = &'a crate::server::seats::SeatRow>,
) -> (HandlesPerLicense, HandlesPerSeat<'a>) {
    let (mut per_license, mut per_seat) = (HashMap::new(), HashMap::new());
    for r in rows {
        *per_license.entry(r.license_id).or_default() += 1;
        *per_seat
            .entry((r.license_id, r.unit_key.as_str()))
            .or_default() += 1;
    }
    (per_license, per_seat)
}

/// A short name for the seat (license and unit key) a handle counts in: handles with the
/// same one are one seat.
fn seat_group(license_id: &[u8; 16], unit_key: &str) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(license_id);
    h.update(unit_key.as_bytes());
    hex::encode(&h.finalize()[..4])
}

/// `GET /`: the page. It carries no token: with an admin token configured (`token`) it asks
/// for it before anything; without one (`local`) it reads, and asks for the local admin
/// token (or takes it from its address's `#token=`) before a change.
pub async fn page(State(st): State<AdminState>) -> Response {
    let token_mode = st.server.admin_auth().token.is_some();
    let html = PAGE
        .replace("{{AUTH}}", if token_mode { "token" } else { "local" })
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
    // Pool mode: the pool's handles are in etcd, not in this member's table.
    let handles = match s.pool() {
        Some(_) => None,
        None => Some(
            s.with_table(|t| t.rows().filter(|r| r.expires_ms > now).count())
                .unwrap_or(0),
        ),
    };
    let (_, denials_total) = s.stats().recent_denials.latest();
    use std::sync::atomic::Ordering::Relaxed;
    json_ok(json!({
        "name": s.name(),
        "version": crate::VERSION,
        "uptime_s": s.uptime().as_secs(),
        "started_at": s.started_unix(),
        "started_at_iso": iso(s.started_unix()),
        "now_iso": iso(now / 1000),
        "listen": bound.listen.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        "admin_listen": bound.admin.map(|a| a.to_string()),
        "auth": if s.admin_auth().token.is_some() { "token" } else { "loopback" },
        // Where `tessera admin` on this machine finds the local admin token (no admin token).
        "local_token_file": s.admin_auth().token.is_none()
            .then(|| s.local_token_file().display().to_string()),
        "connections": s.stats().connections.load(Relaxed),
        "connections_total": s.stats().accepted.load(Relaxed),
        "requests": s.stats().requests.load(Relaxed),
        // Seats: what counts against the licenses' quantities (one per station, session,
        // process or handle, as each license's counting unit says). Handles: the acquires
        // holding them (two handles of one process are one seat of a per-process license).
        "seats_in_use": usage.values().map(|u| u64::from(u.0)).sum::<u64>(),
        "quantity": usage.values().map(|u| u64::from(u.1)).sum::<u64>(),
        "handles": handles,
        // The handles under their former name (kept for older `tessera admin status`).
        "seats": handles,
        "denials": denials_total,
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
        let (handles, _) = handle_counts(t.rows().filter(|r| r.expires_ms > now));
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
                    // Pool mode: the pool's handles are not in this member's table.
                    "handles": (!pooled.contains_key(&l.license_id))
                        .then(|| handles.get(&l.license_id).copied().unwrap_or(0)),
                    "counting_unit": unit_label(l.counting_unit),
                    "exclusive_allowed": l.exclusive_allowed,
                    "issued_at": l.issued_at,
                    "issued_at_iso": iso(l.issued_at),
                    "expiry": l.expiry,
                    "expiry_iso": l.expiry.and_then(iso),
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
    let this_host = crate::host::hostname();
    let (_, per_seat) = handle_counts(rows.iter());
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
            let user = |session: &str, host: &str| users::user_label(session, host, &this_host);
            let uid = |session: &str| users::session_uid(session);
            let group = seat_group(&r.license_id, &r.unit_key);
            let in_seat = per_seat
                .get(&(r.license_id, r.unit_key.as_str()))
                .copied()
                .unwrap_or(1);
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
                    "user": user(&b.user, &b.hostname),
                    "uid": uid(&b.user),
                    "session": b.user,
                    "seat": group,
                    "handles_in_seat": in_seat,
                    "machine": None::<String>,
                    "vm": None::<String>,
                    "pid": None::<u32>,
                    "since": b.issued_at,
                    "since_iso": iso(b.issued_at),
                    "lease_expires": lease_expires,
                    "lease_expires_ms": lease_expires_ms,
                    "lease_expires_iso": lease_expires.and_then(iso),
                    "exclusive": false,
                    "borrowed": true,
                    "borrowed_until": b.until,
                    "borrowed_until_iso": iso(b.until),
                    "borrower": b.borrower_serial,
                });
            }
            let uid = m.and_then(|m| uid(&m.holder.session));
            let user = m.and_then(|m| user(&m.holder.session, &m.holder.hostname));
            let since = m.map(|m| m.since_ms / 1000);
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
                "uid": uid,
                "session": m.map(|m| m.holder.session.clone()),
                "seat": group,
                "handles_in_seat": in_seat,
                "machine": machine,
                "vm": vm,
                "pid": m.map(|m| m.holder.pid),
                "since": since,
                "since_iso": since.and_then(iso),
                "lease_expires": lease_expires,
                "lease_expires_ms": lease_expires_ms,
                "lease_expires_iso": lease_expires.and_then(iso),
                "exclusive": r.exclusive,
                "borrowed": false,
            })
        })
        .collect();
    json_ok(json!({ "seats": list, "now": now / 1000, "now_iso": iso(now / 1000) }))
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
    match st.server.revoke_because(&id, &reason).await {
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

/// A product's seats in use over time, as history and report answer it.
struct Series {
    vendor_id: u32,
    product_code: u32,
    product_name: String,
    in_use: u32,
    quantity: u32,
    /// (Unix seconds at the bucket's start, peak seats in use).
    points: Vec<(u64, u32)>,
}

/// The seat history a query asks for: (from, to, series per hosted product). Errors are
/// answers.
async fn history_series(
    st: &AdminState,
    q: HistoryQuery,
) -> Result<(u64, u64, Vec<Series>), Response> {
    let HistoryQuery {
        minutes,
        step,
        product,
    } = q;
    let now_min = now_ms() / 60_000;
    let since = (now_min + 1).saturating_sub(minutes);
    let server = st.server.clone();
    let points =
        match tokio::task::spawn_blocking(move || server.history(since, product, step)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => return Err(internal(e)),
            Err(e) => return Err(internal(e)),
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
    let series = products
        .into_iter()
        .map(|(v, p, name)| {
            let (in_use, quantity) = usage.get(&(v, p)).copied().unwrap_or((0, 0));
            Series {
                vendor_id: v,
                product_code: p,
                product_name: name,
                in_use,
                quantity,
                points: points
                    .iter()
                    .filter(|x| (x.vendor_id, x.product_code) == (v, p))
                    .map(|x| (x.minute * 60, x.in_use))
                    .collect(),
            }
        })
        .collect();
    Ok((since * 60, now_min * 60, series))
}

/// The query's parameters, or `None` for a malformed query string.
fn query_map(
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Option<HashMap<String, String>> {
    q.ok().map(|Query(q)| q)
}

/// `GET /api/v1/history?product=VENDOR:PRODUCT&minutes=N&step=S`: seats in use per product
/// per minute (or per bucket of `step` minutes, each its peak) over the last `minutes`
/// (default 60, at most 31 days). Without `step`, buckets are sized to give at most 720
/// points.
pub async fn history(
    State(st): State<AdminState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(q) = query_map(q) else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let hq = match history_query(&q) {
        Ok(h) => h,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let (from, to, series) = match history_series(&st, hq).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let series: Vec<Value> = series
        .into_iter()
        .map(|s| {
            json!({
                "vendor_id": s.vendor_id,
                "product_code": s.product_code,
                "product_name": s.product_name,
                "in_use": s.in_use,
                "quantity": s.quantity,
                "points": s.points.iter().map(|(t, n)| json!([t, n])).collect::<Vec<_>>(),
            })
        })
        .collect();
    json_ok(json!({
        "minutes": hq.minutes,
        "step": hq.step,
        "from": from,
        "to": to,
        "products": series,
    }))
}

/// The format a report query asks for (`csv`, the default, or `json`), and the history
/// query without it; or the message of a 400.
pub(crate) fn report_query(q: &HashMap<String, String>) -> Result<(bool, HistoryQuery), String> {
    let json = match q.get("format").map(String::as_str) {
        None | Some("csv") => false,
        Some("json") => true,
        Some(_) => return Err("format is csv or json".into()),
    };
    let mut rest = q.clone();
    rest.remove("format");
    Ok((json, history_query(&rest)?))
}

/// One CSV field (RFC 4180): quoted when it holds a comma, a quote or a line break. A
/// field a spreadsheet would run as a formula (`=`, `+`, `-`, `@` first) gets a `'` first.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// `GET /api/v1/report?format=csv|json&minutes=N&step=S&product=V:P`: the seat history as
/// a download (`Content-Disposition: attachment`): per product and bucket, its start (Unix
/// seconds and ISO 8601 UTC), the peak seats in use and the quantity. Seats are counted as
/// each license's counting unit counts them.
pub async fn report(
    State(st): State<AdminState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Some(q) = query_map(q) else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    let (as_json, hq) = match report_query(&q) {
        Ok(x) => x,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let (from, to, series) = match history_series(&st, hq).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let stamp = iso(to).unwrap_or_default().replace(':', "");
    let (kind, ext, body) = if as_json {
        let products: Vec<Value> = series
            .iter()
            .map(|s| {
                json!({
                    "vendor_id": s.vendor_id,
                    "product_code": s.product_code,
                    "product_name": s.product_name,
                    "quantity": s.quantity,
                    "seats_in_use_now": s.in_use,
                    "points": s.points.iter().map(|(t, n)| json!({
                        "time": t,
                        "time_iso": iso(*t),
                        "seats_in_use": n,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let doc = json!({
            "server": st.server.name(),
            "from": from,
            "from_iso": iso(from),
            "to": to,
            "to_iso": iso(to),
            "step_minutes": hq.step,
            "counts": "seats_in_use: the peak of seats in use in each step, counted as each \
                       license's counting unit counts them",
            "products": products,
        });
        ("application/json; charset=utf-8", "json", doc.to_string())
    } else {
        let mut out = String::from(
            "time,time_iso,vendor_id,product_code,product_name,seats_in_use,quantity\r\n",
        );
        for s in &series {
            for (t, n) in &s.points {
                out.push_str(&format!(
                    "{t},{},{},{},{},{n},{}\r\n",
                    iso(*t).unwrap_or_default(),
                    s.vendor_id,
                    s.product_code,
                    csv_field(&s.product_name),
                    s.quantity
                ));
            }
        }
        ("text/csv; charset=utf-8", "csv", out)
    };
    (
        [
            (header::CONTENT_TYPE, kind.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"tessera-report-{stamp}.{ext}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// One refusal as the denials view lists it.
struct Refusal<'a> {
    at_ms: u64,
    vendor_id: u32,
    product_code: u32,
    features: Option<u32>,
    host: Option<&'a str>,
    session: Option<&'a str>,
    pid: Option<u32>,
    status: u32,
    message: Option<&'a str>,
    count: u64,
}

fn refusal_json(r: &Refusal, names: &HashMap<(u32, u32), String>, this_host: &str) -> Value {
    let status = crate::status::Status::from_code(i64::from(r.status));
    let user = match (r.session, r.host) {
        (Some(s), Some(h)) => users::user_label(s, h, this_host),
        _ => None,
    };
    json!({
        "at_ms": r.at_ms,
        "at_iso": iso_ms(r.at_ms),
        "vendor_id": r.vendor_id,
        "product_code": r.product_code,
        "product_name": names.get(&(r.vendor_id, r.product_code)),
        "features": r.features.map(|f| format!("{f:#010x}")),
        "host": r.host,
        "user": user,
        "uid": r.session.and_then(users::session_uid),
        "session": r.session,
        "pid": r.pid,
        "status": status.map_or_else(|| r.status.to_string(), |s| s.name().to_string()),
        "reason": status.map_or_else(|| "other".to_string(), crate::server::stats::reason),
        "message": r.message.map_or_else(
            || status.map_or("", |s| s.text()).to_string(),
            str::to_string,
        ),
        "count": r.count,
    })
}

/// `GET /api/v1/denials?limit=N&source=memory|log`: refused seat requests (who was refused
/// which product, when, why), newest first, at most `limit` (default and most: the
/// [`RecentDenials::CAPACITY`](crate::server::stats::RecentDenials::CAPACITY) the server
/// keeps in memory). `memory` (the default): the server's own, since it started, with the
/// answer's message and `total`, how many there were. `log`: the usage logs' refusal
/// records (also from before this start; folded ones with their `count`; no process id).
pub async fn denials(
    State(st): State<AdminState>,
    q: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Response {
    use crate::server::stats::RecentDenials;
    let Some(q) = query_map(q) else {
        return error(StatusCode::BAD_REQUEST, "malformed query string");
    };
    if let Some(k) = q.keys().find(|k| !matches!(k.as_str(), "limit" | "source")) {
        return error(StatusCode::BAD_REQUEST, format!("unknown parameter {k:?}"));
    }
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => RecentDenials::CAPACITY,
        Some(Ok(n)) if (1..=RecentDenials::CAPACITY).contains(&n) => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("limit is a number from 1 to {}", RecentDenials::CAPACITY),
            );
        }
    };
    let from_log = match q.get("source").map(String::as_str) {
        None | Some("memory") => false,
        Some("log") => true,
        Some(_) => return error(StatusCode::BAD_REQUEST, "source is memory or log"),
    };
    let hosting = st.server.hosting();
    let mut names: HashMap<(u32, u32), String> = HashMap::new();
    for l in hosting.hosted.containers.iter().flat_map(|c| &c.licenses) {
        names
            .entry((l.vendor_id, l.product_code))
            .or_insert_with(|| l.product_name.clone());
    }
    let this_host = crate::host::hostname();
    if from_log {
        let server = st.server.clone();
        let logged = match tokio::task::spawn_blocking(move || server.logged_denials(limit)).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => return internal(e),
            Err(e) => return internal(e),
        };
        let list: Vec<Value> = logged
            .iter()
            .rev()
            .map(|d| {
                let client = d.seat.client.as_deref();
                let r = Refusal {
                    at_ms: d.time_ms,
                    vendor_id: d.seat.vendor_id,
                    product_code: d.seat.product_code,
                    features: None,
                    host: client.map(|c| c.hostname.as_str()),
                    session: client.map(|c| c.session.as_str()),
                    pid: None,
                    status: d.status,
                    message: None,
                    count: d.count,
                };
                refusal_json(&r, &names, &this_host)
            })
            .collect();
        return json_ok(json!({ "source": "log", "denials": list }));
    }
    let (list, total) = st.server.stats().recent_denials.latest();
    let list: Vec<Value> = list
        .iter()
        .take(limit)
        .map(|d| {
            let r = Refusal {
                at_ms: d.at_ms,
                vendor_id: d.vendor_id,
                product_code: d.product_code,
                features: Some(d.features),
                host: Some(&d.host),
                session: Some(&d.session),
                pid: Some(d.pid),
                status: d.status,
                message: Some(&d.message),
                count: 1,
            };
            refusal_json(&r, &names, &this_host)
        })
        .collect();
    json_ok(json!({
        "source": "memory",
        "denials": list,
        "total": total,
        "kept": RecentDenials::CAPACITY,
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
    e.family(
        "tessera_build_info",
        "gauge",
        "1, labelled with the server's version and the git commit it was built from.",
    );
    e.sample(
        "tessera_build_info",
        &[("version", crate::VERSION), ("git", env!("TESSERA_GIT"))],
        1.0,
    );
    process_metrics(&mut e, &super::process::this_process());
    let product_labels = |v: u32, p: u32| {
        (
            v.to_string(),
            p.to_string(),
            names.get(&(v, p)).cloned().unwrap_or_default(),
        )
    };
    // (metric, help, whether it is the quantity rather than the seats in use)
    for (metric, help, quantity) in [
        (
            "tessera_seats_in_use",
            "Seats in use per product, counted by the license's counting unit (what counts \
             against the quantity; see tessera_handles for the acquires holding them).",
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
        "Requests answered with an error, by status (every licensing verdict has its series \
         from the start).",
    );
    let seen = stats.denials.by_reason();
    let mut reasons: std::collections::BTreeMap<String, u64> = crate::status::Status::ALL
        .iter()
        .filter(|s| (100..200).contains(&s.code()))
        .map(|s| (crate::server::stats::reason(*s), 0))
        .collect();
    reasons.extend(seen);
    for (reason, n) in &reasons {
        e.sample("tessera_denials_total", &[("reason", reason)], *n as f64);
    }
    e.family(
        "tessera_seat_denials_total",
        "counter",
        "Seat requests (acquires, borrows) refused, per product asked for.",
    );
    let mut refused: std::collections::BTreeMap<(u32, u32), u64> =
        names.keys().map(|k| (*k, 0)).collect();
    refused.extend(stats.recent_denials.per_product());
    for ((v, p), n) in &refused {
        let (v, p, name) = product_labels(*v, *p);
        e.sample(
            "tessera_seat_denials_total",
            &[("vendor", &v), ("product", &p), ("product_name", &name)],
            *n as f64,
        );
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
    // Handles (acquires holding seats) per product: several may count as one seat.
    let mut handles: std::collections::BTreeMap<(u32, u32), u32> =
        names.keys().map(|k| (*k, 0)).collect();
    if s.pool().is_none() {
        let _ = s.with_table(|t| {
            for r in t.rows().filter(|r| r.expires_ms > now) {
                if let Some((ci, li)) = hosting.hosted.by_license_id(&r.license_id) {
                    let l = &hosting.hosted.containers[ci].licenses[li];
                    *handles.entry((l.vendor_id, l.product_code)).or_default() += 1;
                }
            }
        });
        e.family(
            "tessera_handles",
            "gauge",
            "Handles (acquires) holding seats per product: handles that share a counting \
             unit (one station, session or process) count as one seat in tessera_seats_in_use.",
        );
        for ((v, p), n) in &handles {
            let (v, p, name) = product_labels(*v, *p);
            e.sample(
                "tessera_handles",
                &[("vendor", &v), ("product", &p), ("product_name", &name)],
                f64::from(*n),
            );
        }
    }
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

/// The standard process metrics of the Prometheus client libraries; a value `/proc` did
/// not give is left out.
fn process_metrics(e: &mut Exposition, p: &super::process::ProcessStats) {
    let list: [(&str, &str, &str, Option<f64>); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            p.cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            p.resident_bytes.map(|v| v as f64),
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            p.virtual_bytes.map(|v| v as f64),
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            p.open_fds.map(|v| v as f64),
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            p.max_fds.map(|v| v as f64),
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            p.start_time_seconds,
        ),
    ];
    for (name, kind, help, v) in list {
        if let Some(v) = v {
            e.single(name, kind, help, v);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("Orbit CAD"), "Orbit CAD");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=1+1"), "'=1+1");
        assert_eq!(csv_field("-x,y"), "\"'-x,y\"");
    }

    #[test]
    fn a_report_query_names_its_format_and_a_history_query() {
        let q = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let (json, h) = report_query(&q(&[("format", "json"), ("minutes", "120")])).unwrap();
        assert!(json);
        assert_eq!(h.minutes, 120);
        let (json, h) = report_query(&q(&[])).unwrap();
        assert!(!json, "CSV by default");
        assert_eq!(h.minutes, 60);
        assert!(report_query(&q(&[("format", "xml")])).is_err());
        assert!(report_query(&q(&[("nope", "1")])).is_err());
    }

    #[test]
    fn times_are_iso_8601_with_their_offset() {
        assert_eq!(iso(0).as_deref(), Some("1970-01-01T00:00:00Z"));
        assert_eq!(
            iso_ms(1_700_000_000_123).as_deref(),
            Some("2023-11-14T22:13:20.123Z")
        );
    }
}
