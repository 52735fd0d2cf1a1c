// The admin page of tessera-server: plain JavaScript, no library, nothing fetched from
// outside this server. Every value from the server goes into the page as text
// (textContent), never as HTML. The page itself carries no token. On a server with an admin
// token (AUTH "token") every call sends the token the admin typed; on one without (AUTH
// "local") the page reads freely and a change (a POST) sends this server's local admin token:
// typed in, or taken from the address's fragment (`#token=...`, which `sudo tessera admin
// page` prints) and removed from the address bar. Either token is kept for this tab only.
"use strict";

const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
const AUTH = meta("tessera-auth");
const REFRESH_MS = 3000;
const TOKEN_KEY = "tessera-admin-token";
const $ = (id) => document.getElementById(id);

let token = sessionStorage.getItem(TOKEN_KEY) || "";
let timer = null;

function keepToken(t) {
  token = (t || "").trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  showLock();
}

// `#token=...` in the address: kept for this tab, then taken out of the address bar (and
// of the history entry) so it does not stay on the screen.
function takeFragmentToken() {
  const m = /^#token=([^&]*)$/.exec(location.hash);
  if (!m) return false;
  let t = "";
  try { t = decodeURIComponent(m[1]); } catch (_) { t = ""; }
  history.replaceState(null, "", location.pathname + location.search);
  keepToken(t);
  return true;
}

// Whether a change may be tried: with an admin token the page shows nothing without it;
// without one, only with the local admin token.
const canChange = () => AUTH === "token" || token !== "";
const LOCKED_TITLE = "needs this server's local admin token: see the notice at the top";

// On a server without an admin token: the notice and its field while no local token is
// held, the buttons that change something enabled only with one.
function showLock() {
  if (AUTH !== "local" || !$("login")) return;
  $("login").hidden = token !== "";
  $("unlocked").hidden = token === "";
  for (const b of document.querySelectorAll("button.revoke, #reload")) {
    b.disabled = !canChange();
    b.title = canChange() ? "" : LOCKED_TITLE;
  }
}

// A change refused for its token (401, 403): the token is wrong (the server made a new one
// at a restart, or it was mistyped); it is forgotten, and the message says so.
function refusedToken(e) {
  if (!(e.status === 401 || e.status === 403) || !token) return "";
  keepToken("");
  return AUTH === "local"
    ? " The local admin token was refused and is forgotten: run sudo tessera admin page again and open the new link, or paste the current token."
    : " The admin token was refused and is forgotten.";
}

function headers(extra) {
  const h = Object.assign({ Accept: "application/json" }, extra || {});
  if (token) h.Authorization = "Bearer " + token;
  return h;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path, options) {
  const r = await fetch(path, Object.assign({ credentials: "same-origin", cache: "no-store" }, options || {}, { headers: headers((options || {}).headers) }));
  let body = null;
  try { body = await r.json(); } catch (_) { body = null; }
  if (!r.ok) throw new ApiError(r.status, (body && body.error) || `HTTP ${r.status}`);
  return body;
}

function post(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
}

function say(text, kind) {
  const m = $("message");
  m.textContent = text;
  m.className = kind || "";
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const pad = (n) => String(n).padStart(2, "0");
// The browser's time zone: its name and its offset from UTC now ("+01:00").
const TZ = Intl.DateTimeFormat().resolvedOptions().timeZone || "local time";
function offset(d) {
  const m = -d.getTimezoneOffset();
  const a = Math.abs(m);
  return `${m < 0 ? "-" : "+"}${pad(Math.floor(a / 60))}:${pad(a % 60)}`;
}
// A time in the browser's zone, with its UTC offset (ISO 8601): only the clock for today,
// the date as well otherwise. The full date and zone name are in its tooltip.
function when(unix) {
  if (unix === null || unix === undefined) return "–";
  const d = new Date(unix * 1000);
  const time = `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}${offset(d)}`;
  if (d.toDateString() === new Date().toDateString()) return time;
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}T${time}`;
}
function whenCell(unix, ...rest) {
  const full = unix === null || unix === undefined ? "" : `${new Date(unix * 1000).toString()} (${TZ})`;
  return el("td", { class: "time", title: full }, when(unix), ...rest);
}
function duration(s) {
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  return `${m}m ${s % 60}s`;
}
const product = (o) => `${o.vendor_id}:${o.product_code}`;

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function renderStatus(s) {
  $("sum-seats").textContent = `${s.seats_in_use} / ${s.quantity}`;
  $("sum-handles").textContent = s.handles === null ? "–" : s.handles;
  $("sum-denials").textContent = s.denials;
  $("sum-connections").textContent = s.connections;
  $("sum-licenses").textContent = s.licenses;
  $("sum-uptime").textContent = duration(s.uptime_s);
  $("sum-version").textContent = s.version;
  $("server-name").textContent = s.name;
}

// Pool mode: the members (which are up) and the etcd endpoints (their health).
function renderPool(p) {
  $("pool").hidden = !p;
  if (!p) return;
  $("pool-summary").textContent =
    `member ${p.member} · ${p.members_up} of ${p.members.length} members up · ${p.endpoints_healthy} of ${p.endpoints.length} etcd endpoints healthy`;
  const badge = (ok, yes, no) => el("span", { class: ok ? "badge good" : "badge bad" }, ok ? yes : no);
  fill($("pool-members").tBodies[0], p.members.map((m) => el("tr", { "data-member": m.name, "data-up": m.up ? "yes" : "no" },
    el("td", {}, m.name, m.this ? el("span", { class: "sub" }, "this member") : null),
    el("td", {}, badge(m.up, "up", "down")),
    el("td", { class: "mono" }, m.listen.join(", ")),
    el("td", {}, m.version),
    whenCell(m.started_at),
  )));
  fill($("pool-endpoints").tBodies[0], p.endpoints.map((e) => el("tr", { "data-endpoint": e.endpoint, "data-healthy": e.healthy ? "yes" : "no" },
    el("td", { class: "mono" }, e.endpoint),
    el("td", {}, badge(e.healthy, "healthy", "down"), e.healthy ? null : el("span", { class: "sub" }, e.error || "")),
    el("td", {}, e.healthy ? (e.leader ? "leader" : "follower") : "–"),
    el("td", {}, e.version || "–"),
    el("td", { class: "db-size" }, e.db_size === null ? "–" : `${(e.db_size / 1048576).toFixed(1)} MiB`),
    el("td", {}, e.round_trip_ms === null ? "–" : `${e.round_trip_ms.toFixed(1)} ms`),
  )));
}

function usageBar(inUse, quantity, handles, unit) {
  const frac = quantity > 0 ? Math.min(1, inUse / quantity) : 0;
  const fillEl = el("span");
  fillEl.style.width = `${(frac * 100).toFixed(1)}%`;
  const cls = frac >= 1 ? "bar full" : frac >= 0.8 ? "bar high" : "bar";
  const bar = el("div", { class: cls, title: `${inUse} of ${quantity} seats in use (one per ${unit})` }, fillEl);
  const held = handles === null || handles === undefined ? null
    : el("span", { class: "sub handles" }, `${handles} handle${handles === 1 ? "" : "s"}`);
  return el("div", { class: "usage" }, bar, el("span", { class: "count" }, `${inUse} of ${quantity} seats`, held));
}

function renderLicenses(list) {
  fill($("licenses").tBodies[0], list.map((l) => el("tr", { "data-license-id": l.license_id },
    el("td", {}, l.product_name, el("span", { class: "sub mono" }, `${product(l)} · ${l.license_id.slice(0, 12)}…`)),
    el("td", {}, usageBar(l.in_use, l.quantity, l.handles, l.counting_unit)),
    el("td", {}, l.counting_unit, l.exclusive_allowed ? el("span", { class: "sub" }, "exclusive allowed") : null),
    el("td", { class: "mono" }, l.features),
    l.expiry === null ? el("td", {}, "perpetual") : whenCell(l.expiry, l.expired ? el("span", { class: "badge bad" }, "expired") : null),
    el("td", {}, l.vm_policy),
    el("td", { class: "mono" }, l.container),
  )));
}

function revokeButton(seat) {
  const b = el("button", { type: "button", class: "revoke", "data-seat-id": seat.seat_id }, "Revoke");
  b.disabled = !canChange();
  b.title = canChange() ? "" : LOCKED_TITLE;
  let armed = null;
  b.addEventListener("click", async () => {
    if (!armed) {
      b.classList.add("confirm");
      b.textContent = "Confirm revoke";
      armed = setTimeout(() => { armed = null; b.classList.remove("confirm"); b.textContent = "Revoke"; }, 5000);
      return;
    }
    clearTimeout(armed);
    b.disabled = true;
    try {
      await post(`/api/v1/seats/${encodeURIComponent(seat.seat_id)}/revoke`, { reason: "revoked on the admin page" });
      say(`Seat ${seat.seat_id} of ${seat.product_name || "?"} on ${seat.host || "?"} revoked.`, "ok");
    } catch (e) {
      say(`Revoke failed: ${e.message}.${refusedToken(e)}`, "error");
    }
    refresh();
  });
  return b;
}

function renderSeats(seats) {
  $("no-seats").hidden = seats.length > 0;
  fill($("seats").tBodies[0], seats.map((s) => el("tr", { "data-seat-id": s.seat_id },
    el("td", {}, s.product_name || "?", el("span", { class: "sub mono", title: s.seat_id }, `${s.seat_id.slice(0, 12)}…`)),
    // Which seat of the license this handle counts in: handles with the same one are one seat.
    el("td", { class: "seat", title: `handles sharing this ${s.counting_unit || "unit"} count as one seat` },
      el("span", { class: "mono" }, s.seat || "–"),
      el("span", { class: "sub" }, `${s.counting_unit || "?"} · ${s.handles_in_seat || 1} handle${s.handles_in_seat > 1 ? "s" : ""}`)),
    el("td", {}, s.host || "(re-attaching)"),
    el("td", {}, s.user || "–", el("span", { class: "sub mono" }, s.session || "")),
    s.borrowed
      // A borrowed seat: another machine's container has it until its end (or its return);
      // it cannot be revoked (that machine may be offline).
      ? el("td", {}, el("span", { class: "badge borrowed" }, "borrowed"), el("span", { class: "sub mono" }, s.borrower))
      : el("td", {}, s.machine || "–", s.vm ? el("span", { class: "badge" }, "VM") : null),
    el("td", { class: "num" }, s.pid === null || s.pid === undefined ? "–" : s.pid),
    whenCell(s.since),
    whenCell(s.lease_expires, s.borrowed ? el("span", { class: "sub" }, "borrowed until") : null),
    el("td", {}, s.borrowed ? el("span", { class: "sub", title: "a borrowed seat ends at its time or when it is returned" }, "not revocable") : revokeButton(s)),
  )));
}

// The refusals shown: the server's own since it started ("memory", refreshed with the
// page), or the usage logs' records ("log", read once when asked for).
let denialSource = "memory";

function renderDenials(d) {
  const list = d.denials.slice(0, 50);
  $("no-denials").hidden = list.length > 0;
  $("denials").hidden = list.length === 0;
  $("no-denials").textContent = d.source === "log"
    ? "The usage logs record no refused seat request."
    : "No seat request was refused since the server started.";
  $("denials-summary").textContent = d.source === "log"
    ? `the latest ${list.length} the usage logs record (also from before this start)`
    : d.total ? `${d.total} since the server started; the latest ${list.length} here (the server keeps ${d.kept})` : "";
  $("denials-source").textContent = d.source === "log" ? "Show the latest since the start" : "Show the usage log's refusals";
  fill($("denials").tBodies[0], list.map((x) => el("tr", { "data-reason": x.reason },
    whenCell(x.at_ms / 1000),
    el("td", {}, x.product_name || "?", el("span", { class: "sub mono" }, `${x.vendor_id}:${x.product_code}${x.features ? ` · features ${x.features}` : ""}`)),
    el("td", {}, x.host || "–"),
    el("td", {}, x.user || "–"),
    el("td", { class: "num" }, x.pid === null || x.pid === undefined ? "–" : x.pid),
    el("td", { class: "why" }, el("span", { class: "badge bad" }, x.reason.replace(/_/g, " ")),
      x.count > 1 ? el("span", { class: "badge" }, `× ${x.count}`) : null,
      el("span", { class: "sub" }, x.message)),
  )));
}

// The report of the window shown, as a file: fetched with the page's credentials (a plain
// link would not carry the admin token), saved through a temporary object URL.
async function download(format) {
  const minutes = $("chart-window").value;
  const r = await fetch(`/api/v1/report?format=${format}&minutes=${encodeURIComponent(minutes)}`,
    { credentials: "same-origin", cache: "no-store", headers: headers({ Accept: "*/*" }) });
  if (!r.ok) {
    let m = `HTTP ${r.status}`;
    try { m = (await r.json()).error || m; } catch (_) { /* not JSON */ }
    throw new ApiError(r.status, m);
  }
  const name = (/filename="([^"]+)"/.exec(r.headers.get("Content-Disposition") || "") || [])[1] || `tessera-report.${format}`;
  const blob = await r.blob();
  const url = URL.createObjectURL(blob);
  const a = el("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  document.body.dataset.lastDownload = name;
  say(`Report saved as ${name} (${blob.size} bytes).`, "ok");
}

function renderContainers(list) {
  fill($("containers").tBodies[0], list.map((c) => el("tr", {},
    el("td", {}, c.kind),
    el("td", { class: "mono" }, c.serial),
    el("td", {}, c.mode),
    el("td", { class: "num" }, c.vendor_id),
    el("td", {}, el("span", { class: c.access === "exclusive" ? "badge good" : "badge bad", title: c.access_error || "" }, c.access)),
    el("td", { class: "num" }, c.licenses),
    whenCell(c.delegation_expiry),
  )));
}

// The chart: one step line per product, seats in use against time, with the quantity
// dashed. Drawn as SVG elements (no inline style, no library).
const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function renderChart(h) {
  const sel = $("chart-product");
  const known = new Set([...sel.options].map((o) => o.value));
  for (const p of h.products) {
    if (!known.has(product(p))) sel.append(el("option", { value: product(p) }, `${p.product_name || "?"} (${product(p)})`));
  }
  const W = 1000, H = 240, L = 40, R = 12, T = 10, B = 26;
  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none" });
  const from = h.from, to = h.to + h.step * 60;
  const shown = h.products.filter((p) => !sel.value || product(p) === sel.value);
  let top = 1;
  for (const p of shown) {
    top = Math.max(top, p.quantity);
    for (const [, n] of p.points) top = Math.max(top, n);
  }
  const x = (t) => L + ((t - from) / Math.max(1, to - from)) * (W - L - R);
  const y = (n) => H - B - (n / top) * (H - T - B);
  const ticks = Math.min(top, 5);
  for (let i = 0; i <= ticks; i++) {
    const n = Math.round((top * i) / ticks);
    root.append(svg("line", { x1: L, x2: W - R, y1: y(n), y2: y(n), class: "grid" }));
    root.append(svg("text", { x: L - 6, y: y(n) + 4, "text-anchor": "end" }, n));
  }
  for (let i = 0; i <= 4; i++) {
    const t = from + ((to - from) * i) / 4;
    const d = new Date(t * 1000);
    const label = h.minutes > 1440 ? `${pad(d.getMonth() + 1)}-${pad(d.getDate())}` : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
    root.append(svg("text", { x: x(t), y: H - 8, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" }, label));
  }
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
  root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
  const legend = [];
  // Products with the same values would draw one line over another: each gets its own
  // dash pattern and marker shape, and a small vertical offset, so every one stays visible.
  shown.forEach((p, i) => {
    const cls = `c${i % 6}`;
    const off = hidden.has(product(p)) ? null : (i % 6) * 2.5;
    const item = el("li", { class: hidden.has(product(p)) ? `${cls} off` : cls, "data-product": product(p) },
      el("button", { type: "button", title: "hide or show this product" }, legendSwatch(cls, i),
        `${p.product_name || "?"}: ${p.in_use} of ${p.quantity} seats now`));
    item.addEventListener("click", () => {
      if (hidden.has(product(p))) hidden.delete(product(p)); else hidden.add(product(p));
      renderChart(h);
    });
    legend.push(item);
    if (off === null) return;
    root.append(svg("line", { x1: L, x2: W - R, y1: y(p.quantity), y2: y(p.quantity), class: `quota ${cls}` }));
    // Step line; a gap (no sample) breaks it.
    let d = "", prev = null;
    const marks = [];
    for (const [t, n] of p.points) {
      const yy = (y(n) - off).toFixed(1);
      if (prev === null || t - prev > h.step * 60) d += `M${x(t).toFixed(1)},${yy}`;
      else d += `V${yy}`;
      d += `H${x(Math.min(to, t + h.step * 60)).toFixed(1)}`;
      if (prev === null || marks.length === 0 || marks[marks.length - 1][1] !== n) marks.push([t, n]);
      prev = t;
    }
    if (d) root.append(svg("path", { d, class: `line ${cls}`, "data-product": product(p) }));
    // A marker where the count changes (at most 40 per line).
    for (const [t, n] of marks.slice(-40)) root.append(marker(i, x(t), y(n) - off, cls, product(p)));
  });
  $("chart").replaceChildren(root);
  fill($("chart-legend"), legend);
}

const hidden = new Set();

// Marker shapes by product index: circle, square, triangle, diamond, cross, ring.
function marker(i, cx, cy, cls, prod) {
  const a = { class: `marker ${cls}`, "data-product": prod };
  switch (i % 6) {
    case 1: return svg("rect", Object.assign(a, { x: cx - 3.5, y: cy - 3.5, width: 7, height: 7 }));
    case 2: return svg("path", Object.assign(a, { d: `M${cx},${cy - 4.5}L${cx + 4.5},${cy + 3.5}L${cx - 4.5},${cy + 3.5}Z` }));
    case 3: return svg("path", Object.assign(a, { d: `M${cx},${cy - 5}L${cx + 5},${cy}L${cx},${cy + 5}L${cx - 5},${cy}Z` }));
    case 4: return svg("path", Object.assign(a, { d: `M${cx - 4},${cy - 4}L${cx + 4},${cy + 4}M${cx + 4},${cy - 4}L${cx - 4},${cy + 4}` }));
    case 5: return svg("circle", Object.assign(a, { cx, cy, r: 5 }));
    default: return svg("circle", Object.assign(a, { cx, cy, r: 3.5 }));
  }
}

function legendSwatch(cls, i) {
  const s = svg("svg", { width: 34, height: 12, viewBox: "0 0 34 12", class: "swatch" });
  s.append(svg("path", { d: "M1,6H33", class: `line ${cls}` }));
  s.append(marker(i, 17, 6, cls, ""));
  return s;
}

async function refresh() {
  clearTimeout(timer);
  try {
    const minutes = $("chart-window").value;
    const [status, licenses, seats, containers, history, denials] = await Promise.all([
      api("/api/v1/status"),
      api("/api/v1/licenses"),
      api("/api/v1/seats"),
      api("/api/v1/containers"),
      api(`/api/v1/history?minutes=${encodeURIComponent(minutes)}`),
      denialSource === "memory" ? api("/api/v1/denials?limit=50") : null,
    ]);
    if (AUTH === "token") $("login").hidden = true;
    renderStatus(status);
    renderPool(status.pool);
    renderLicenses(licenses.licenses);
    renderSeats(seats.seats);
    renderContainers(containers.containers);
    renderChart(history);
    if (denials) renderDenials(denials);
    document.body.dataset.loaded = "yes";
  } catch (e) {
    if (e.status === 401 && AUTH === "token") {
      $("login").hidden = false;
      say(token ? "The token was refused." : "", token ? "error" : "");
      return;
    }
    if (e.status === 401 && AUTH === "local" && token) {
      // A wrong local token is refused even for reading: forget it, read without it.
      keepToken("");
      say("The local admin token was refused and is forgotten (the server makes a new one at each start): run sudo tessera admin page again, or paste the current token. Until then the page is read-only.", "error");
      timer = setTimeout(refresh, 0);
      return;
    }
    say(`Could not read the server: ${e.message}`, "error");
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  $("login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    keepToken($("login-token").value);
    $("login-token").value = "";
    say("", "");
    refresh();
  });
  if (AUTH === "local") {
    $("login-why").replaceChildren("Revoke and reload need this server's local admin token: run ",
      el("code", { class: "mono" }, "sudo tessera admin page"), " on this machine and open the link it prints, or paste the token.");
    $("login-label").textContent = "Local admin token";
    $("login").querySelector("button").textContent = "Unlock";
    $("lock").addEventListener("click", () => keepToken(""));
    window.addEventListener("hashchange", () => { if (takeFragmentToken()) refresh(); });
  }
  takeFragmentToken();
  showLock();
  $("reload").addEventListener("click", async () => {
    try {
      const r = await post("/api/v1/reload");
      const restart = r.restart_needed.length ? ` Needs a restart: ${r.restart_needed.join(", ")}.` : "";
      say(`Configuration reloaded: ${r.containers} container(s), ${r.licenses} license(s).${restart}`, "ok");
    } catch (e) {
      say(`Reload failed: ${e.message}.${refusedToken(e)}`, "error");
    }
    refresh();
  });
  $("tz-name").textContent = `${TZ} (UTC${offset(new Date())})`;
  for (const b of document.querySelectorAll("button.export")) {
    b.addEventListener("click", async () => {
      try {
        await download(b.dataset.format);
      } catch (e) {
        say(`Download failed: ${e.message}`, "error");
      }
    });
  }
  $("denials-source").addEventListener("click", async () => {
    try {
      if (denialSource === "memory") {
        const d = await api("/api/v1/denials?source=log&limit=50");
        denialSource = "log";
        renderDenials(d);
      } else {
        denialSource = "memory";
        refresh();
      }
    } catch (e) {
      say(`Could not read the refusals: ${e.message}`, "error");
    }
  });
  $("chart-product").addEventListener("change", refresh);
  $("chart-window").addEventListener("change", refresh);
  refresh();
});
