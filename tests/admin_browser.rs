//! The admin page in a real browser: headless Chromium (Debian's chromium and
//! chromium-driver, installed by `make test`) driven through chromedriver's W3C WebDriver
//! API. The page loads from the server alone, shows a seat a running client holds, refuses
//! to change anything until it has the local admin token (issue 18, point 7), revokes the
//! seat with its button once opened from `tessera admin page`'s link, and the client's next
//! call gets `TESSERA_E_LEASE_LOST`.
//!
//! The test starts and stops chromedriver, the server and the client itself; on failure it
//! leaves a screenshot in the system's temporary directory (the path is printed).
//! `TESSERA_ADMIN_SCREENSHOT=FILE` saves the page with the seat held (docs/admin-page.png),
//! `TESSERA_ADMIN_LOCKED_SCREENSHOT=FILE` the same page before it has the local admin token.

use std::io::BufReader;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tessera::cipher::Mode;
use tessera::client::{Environment, Session, SessionOptions, sources};
use tessera::host::HostIdentity;
use tessera::license::CountingUnit;
use tessera::publisher::PublisherKey;
use tessera::util::SystemClock;

mod common;
use common::server::{ServerProc, read_line_with};
use common::spec;

const VENDOR: u32 = 0xB0;
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A process that leads its own process group; the whole group (chromedriver and the
/// browser processes it started) is killed on drop, also when the test fails: killing
/// chromedriver alone leaves Chromium running.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads
        // (it was spawned with `process_group(0)`); no memory is involved.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A chromedriver and one browser session; both end on drop, with a screenshot first if
/// the test is failing.
struct Browser {
    base: String,
    session: String,
    agent: ureq::Agent,
    _driver: Proc,
}

impl Browser {
    fn start(profile: &Path) -> Browser {
        let port = free_port();
        let driver = Proc(
            Command::new("/usr/bin/chromedriver")
                .arg(format!("--port={port}"))
                .process_group(0)
                // The browser runs on the real clock even when the test runs under
                // libfaketime (scripts/test-shifted-clock.sh): Chromium does not start
                // under it. The server, whose clock the page shows, stays shifted.
                .env_remove("LD_PRELOAD")
                .env_remove("FAKETIME")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver (Debian's chromium-driver; make test installs it)"),
        );
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let start = Instant::now();
        loop {
            let ready = agent
                .get(format!("{base}/status"))
                .call()
                .ok()
                .and_then(|mut r| r.body_mut().read_to_string().ok())
                .and_then(|t| serde_json::from_str::<Value>(&t).ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let caps = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage", "--window-size=1280,1400",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let mut b = Browser {
            base,
            session: String::new(),
            agent,
            _driver: driver,
        };
        let v = b.call("POST", "/session", Some(caps));
        b.session = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        b
    }

    /// A WebDriver call; returns `value`, panics on a WebDriver error.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let v = self.try_call(method, path, body);
        if v.get("error").is_some() {
            panic!("WebDriver {method} {path}: {v}");
        }
        v
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = match method {
            "GET" => self.agent.get(&url).call(),
            "DELETE" => self.agent.delete(&url).call(),
            _ => self
                .agent
                .post(&url)
                .header("Content-Type", "application/json")
                .send(body.unwrap_or(json!({})).to_string()),
        };
        let text = resp
            .unwrap_or_else(|e| panic!("WebDriver {method} {path}: {e}"))
            .body_mut()
            .with_config()
            .limit(50 << 20)
            .read_to_string()
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        v["value"].clone()
    }

    fn s(&self, path: &str) -> String {
        format!("/session/{}{path}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call("POST", &self.s("/url"), Some(json!({ "url": url })));
    }

    fn find_all(&self, css: &str) -> Vec<String> {
        self.call(
            "POST",
            &self.s("/elements"),
            Some(json!({ "using": "css selector", "value": css })),
        )
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e[ELEMENT].as_str().unwrap().to_string())
        .collect()
    }

    /// Waits until `css` matches an element whose text satisfies `ok`; returns its text.
    fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            for e in self.find_all(css) {
                let t = self.try_call("GET", &self.s(&format!("/element/{e}/text")), None);
                if let Some(t) = t.as_str()
                    && ok(t)
                {
                    return t.to_string();
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the page never showed {what} ({css})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_gone(&self, css: &str, what: &str) {
        let start = Instant::now();
        while !self.find_all(css).is_empty() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{what} stayed on the page ({css})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A WebDriver action (`click`, `value`) on the first element at `css`.
    fn act(&self, css: &str, action: &str, body: Value) {
        let e = self
            .find_all(css)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no element at {css} to {action}"));
        self.call(
            "POST",
            &self.s(&format!("/element/{e}/{action}")),
            Some(body),
        );
    }

    fn click(&self, css: &str) {
        self.act(css, "click", json!({}));
    }

    /// Types `text` into the field at `css`.
    fn type_into(&self, css: &str, text: &str) {
        self.act(css, "value", json!({ "text": text }));
    }

    /// Runs `js` as an async script: it ends by calling its last argument with the result.
    fn script_async(&self, js: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/async"),
            Some(json!({ "script": js, "args": [] })),
        )
    }

    /// Waits until `js` (an expression) is true on the page.
    fn wait_true(&self, js: &str, what: &str) {
        let start = Instant::now();
        while self.script(&format!("return !!({js})")) != json!(true) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "the page never showed {what} ({js})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            &self.s("/execute/sync"),
            Some(json!({ "script": js, "args": [] })),
        )
    }

    fn screenshot(&self, to: &Path) {
        let b64 = self.call("GET", &self.s("/screenshot"), None);
        std::fs::write(to, base64_decode(b64.as_str().unwrap())).unwrap();
    }

    /// What the page logged to its console (errors, CSP violations).
    fn console(&self) -> Vec<String> {
        let v = self.try_call(
            "POST",
            &self.s("/se/log"),
            Some(json!({ "type": "browser" })),
        );
        v.as_array()
            .map(|l| {
                l.iter()
                    .map(|e| format!("{} {}", e["level"], e["message"]))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.session.is_empty() {
            return;
        }
        if std::thread::panicking() {
            // Outside the test's own temporary directory, which goes with the test.
            let shot = std::env::temp_dir().join(format!(
                "tessera-admin-browser-failure-{}.png",
                std::process::id()
            ));
            let b64 = self.try_call("GET", &self.s("/screenshot"), None);
            if let Some(s) = b64.as_str() {
                let _ = std::fs::write(&shot, base64_decode(s));
                eprintln!("admin page at the failure: {}", shot.display());
            }
        }
        let _ = self.try_call("DELETE", &self.s(""), None);
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(val(*c)) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// Child mode: a client holding a network seat, calling on it every 100 ms until a call
/// fails, then printing the status it got.
#[test]
fn child_seat_user() {
    let Some(s) = common::server::child_session(VENDOR, "workstation-7") else {
        return;
    };
    let seat = s.acquire(1, 0, false).unwrap();
    println!("\nSEAT ok");
    let mut buf = vec![0u8; 100];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Err(e) = seat.encrypt(Mode::Derived, b"work", &mut buf) {
            println!("\nSTATUS {:?} {e}", tessera::ffi::status::from_error(&e));
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!("STATUS none");
}

#[test]
fn the_admin_page_shows_a_held_seat_and_revokes_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "browser test");
    let home = dir.path().join("server-home");
    let mut cad = spec(1, 2, CountingUnit::Station);
    cad.product_name = "Orbit CAD".into();
    let mut viewer = spec(2, 10, CountingUnit::Handle);
    viewer.product_name = "Orbit Viewer".into();
    viewer.borrow_days = 3;
    common::activate(&common::env_in(&home), &key, &[cad, viewer]);
    let server = ServerProc::start(&dir.path().join("server-state"), &home, 0);
    let keyfile = dir.path().join("key");
    key.save(&keyfile).unwrap();

    // A running client holding a seat of Orbit CAD.
    let mut child = Proc(
        common::server::child_command(
            "child_seat_user",
            &server.addr,
            &keyfile,
            &dir.path().join("client-home"),
        )
        .spawn()
        .unwrap(),
    );
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    read_line_with(&mut out, "SEAT ok");
    // And two seats of the viewer, from this process.
    let mut o = SessionOptions::new(VENDOR, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![server.addr.clone()];
    let viewer = Session::open_in(
        o,
        Environment {
            home: dir.path().join("viewer-home"),
            host: HostIdentity::simulated("lab-pc-12"),
            clock: Arc::new(SystemClock),
        },
    )
    .unwrap();
    let _v1 = viewer.acquire(2, 0, false).unwrap();
    let _v2 = viewer.acquire(2, 0, false).unwrap();
    // And a viewer seat borrowed by a laptop.
    let laptop = common::borrow::laptop(VENDOR, "field-laptop");
    let mut conn = common::borrow::connect(&server.addr, &key.public_key(), VENDOR, "field-laptop");
    common::borrow::borrow(&mut conn, VENDOR, [0xBB; 16], 2, 3, &laptop).unwrap();

    let browser = Browser::start(&dir.path().join("profile"));
    let url = format!("http://{}/", server.admin);
    browser.goto(&url);

    // The licenses with their usage, the seat with its holder.
    let cad_row = browser.wait_text("#licenses tbody tr", "Orbit CAD's license", |t| {
        t.contains("Orbit CAD")
    });
    assert!(cad_row.contains("1 of 2"), "{cad_row}");
    browser.wait_text("#licenses tbody tr", "the viewer's usage", |t| {
        t.contains("Orbit Viewer") && t.contains("3 of 10")
    });
    let seat_row = browser.wait_text("#seats tbody tr", "the client's seat", |t| {
        t.contains("workstation-7")
    });
    assert!(seat_row.contains("Orbit CAD"), "{seat_row}");
    assert!(seat_row.contains("uid "), "the user: {seat_row}");
    let summary = browser.wait_text("#sum-seats", "seats in use", |t| t.contains("4 / 12"));
    assert_eq!(summary, "4 / 12");
    // The borrowed seat: marked, with who has it, and no revoke button.
    let borrowed = browser.wait_text("#seats tbody tr", "the borrowed seat", |t| {
        t.contains("field-laptop")
    });
    assert!(borrowed.contains("borrowed"), "{borrowed}");
    assert!(borrowed.contains(laptop.engine.serial()), "{borrowed}");
    assert!(borrowed.contains("not revocable"), "{borrowed}");
    assert!(
        browser
            .find_all(&format!(
                "button.revoke[data-seat-id=\"{}\"]",
                hex::encode([0xBB; 16])
            ))
            .is_empty()
    );
    // The chart has a line per product, drawn by the page itself.
    let lines = browser.script(
        "return [...document.querySelectorAll('#chart svg path.line')].map(p => p.dataset.product)",
    );
    let lines = lines.as_array().unwrap();
    assert!(
        lines.contains(&json!(format!("{VENDOR}:1")))
            && lines.contains(&json!(format!("{VENDOR}:2"))),
        "{lines:?}"
    );
    // Nothing came from anywhere but the server.
    let origin = format!("http://{}", server.admin);
    let resources = browser.script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])",
    );
    for r in resources.as_array().unwrap() {
        assert!(
            r.as_str().unwrap().starts_with(&origin),
            "{r} is not from the server"
        );
    }

    // Opened without the local admin token (as any user of this machine could): read-only,
    // with the notice saying how to unlock it, and the buttons that change things disabled.
    let notice = browser.wait_text("#login", "the notice", |t| t.contains("local admin token"));
    assert!(
        notice.contains("Revoke and reload need this server's local admin token")
            && notice.contains("sudo tessera admin page"),
        "{notice}"
    );
    let seat_id = browser.script(
        "return [...document.querySelectorAll('#seats tbody tr')].find(r => r.textContent.includes('workstation-7')).dataset.seatId",
    );
    let seat_id = seat_id.as_str().unwrap().to_string();
    assert_eq!(seat_id.len(), 32);
    let button = format!("button.revoke[data-seat-id=\"{seat_id}\"]");
    let locked = "[...document.querySelectorAll('button.revoke, #reload')].map(b => b.disabled)";
    let disabled = browser.script(&format!("return {locked}"));
    assert!(
        disabled.as_array().unwrap().len() >= 4
            && disabled.as_array().unwrap().iter().all(|d| d == true),
        "{disabled}"
    );
    if let Ok(to) = std::env::var("TESSERA_ADMIN_LOCKED_SCREENSHOT") {
        browser.screenshot(Path::new(&to));
    }
    // A click on the disabled button does nothing, and a script on the page that posts
    // anyway (all the page has) is refused by the server, with a message.
    browser.click(&button);
    let refused = browser.script_async(&format!(
        "const done = arguments[arguments.length - 1];
         fetch('/api/v1/seats/{seat_id}/revoke', {{ method: 'POST',
             headers: {{ 'Content-Type': 'application/json' }}, body: '{{}}' }})
           .then(r => r.json().then(j => done([r.status, j.error])));"
    ));
    assert_eq!(refused[0], 403, "{refused}");
    assert!(
        refused[1].as_str().unwrap().contains("local admin token"),
        "{refused}"
    );
    // A wrong token typed in is refused, forgotten and said so; the page stays read-only.
    browser.type_into("#login-token", &"ab".repeat(32));
    browser.click("#login button[type=submit]");
    let msg = browser.wait_text("#message", "the wrong token refused", |t| {
        t.contains("refused")
    });
    assert!(msg.contains("forgotten"), "{msg}");
    browser.wait_true(
        "!document.getElementById('login').hidden && !sessionStorage.getItem('tessera-admin-token')",
        "the notice again, with no token kept",
    );
    browser.wait_text("#seats tbody tr", "the seats, read without a token", |t| {
        t.contains("workstation-7")
    });
    assert_eq!(
        browser.script(&format!("return {locked}.every(d => d)")),
        json!(true)
    );
    assert_eq!(
        browser.find_all("#seats tbody tr").len(),
        4,
        "nothing revoked"
    );
    // The console so far (read once, which empties it): only those refusals.
    let console = browser.console();
    assert!(
        console.iter().any(|l| l.contains("status of 403")),
        "{console:?}"
    );
    assert!(
        console
            .iter()
            .all(|l| l.contains("status of 403") || l.contains("status of 401")),
        "{console:?}"
    );

    // Opened with the link `sudo tessera admin page` prints: the token is taken from the
    // fragment, kept for the tab, gone from the address bar, and the buttons work.
    let printed = Command::new(common::bin("tessera"))
        .args([
            "admin",
            "--server",
            &format!("http://{}", server.admin),
            "page",
        ])
        .env_remove("TESSERA_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(printed.status.success(), "{printed:?}");
    let link = String::from_utf8(printed.stdout)
        .unwrap()
        .trim()
        .to_string();
    assert!(link.starts_with(&format!("{url}#token=")), "{link}");
    let token = link.rsplit('=').next().unwrap().to_string();
    browser.goto("about:blank");
    browser.goto(&link);
    browser.wait_text("#seats tbody tr", "the seats", |t| {
        t.contains("workstation-7")
    });
    browser.wait_true(
        "document.getElementById('login').hidden && !document.getElementById('unlocked').hidden",
        "the page unlocked",
    );
    let address = browser.script("return [location.hash, location.href, history.length]");
    assert_eq!(address[0], "", "{address}");
    assert_eq!(address[1], url.as_str(), "{address}");
    assert_eq!(
        browser.script("return sessionStorage.getItem('tessera-admin-token')"),
        json!(token)
    );
    browser.wait_true(&format!("{locked}.every(d => !d)"), "the buttons enabled");
    if let Ok(to) = std::env::var("TESSERA_ADMIN_SCREENSHOT") {
        browser.screenshot(Path::new(&to));
    }

    // Revoke: the button asks to be pressed again, then the seat goes.
    browser.click(&button);
    browser.wait_text(&button, "the confirmation", |t| t.contains("Confirm"));
    assert_eq!(
        browser.find_all("#seats tbody tr").len(),
        4,
        "one click revokes nothing"
    );
    browser.click(&button);
    let msg = browser.wait_text("#message", "the revoke message", |t| t.contains("revoked"));
    assert!(
        msg.contains(&seat_id) && msg.contains("workstation-7"),
        "{msg}"
    );
    browser.wait_gone(
        &format!("#seats tbody tr[data-seat-id=\"{seat_id}\"]"),
        "the revoked seat",
    );
    browser.wait_text("#licenses tbody tr", "Orbit CAD's usage going down", |t| {
        t.contains("Orbit CAD") && t.contains("0 of 2")
    });

    // The client's next call says its seat is gone.
    let status = read_line_with(&mut out, "STATUS");
    assert!(
        status.starts_with("STATUS TESSERA_E_LEASE_LOST"),
        "the client got {status}"
    );
    // And why: an administrator took it, with the reason the page gave.
    assert!(
        status.contains("revoked by an administrator") && status.contains("admin page"),
        "the client got {status}"
    );
    // Locked again, then the link opened in the same tab (only the fragment changes, the
    // page does not load again): it takes the token all the same, and the address is clean.
    browser.click("#lock");
    browser.wait_true(
        &format!("!document.getElementById('login').hidden && {locked}.every(d => d)"),
        "the page locked",
    );
    assert_eq!(
        browser.script("return sessionStorage.getItem('tessera-admin-token')"),
        Value::Null
    );
    browser.goto(&link);
    browser.wait_true(
        &format!("document.getElementById('login').hidden && location.hash === '' && {locked}.every(d => !d)"),
        "the page unlocked from the fragment",
    );
    assert_eq!(
        browser.script("return sessionStorage.getItem('tessera-admin-token')"),
        json!(token)
    );
    // No script error and no Content-Security-Policy violation on the page.
    let console = browser.console();
    assert!(
        console
            .iter()
            .all(|l| !l.contains("SEVERE") && !l.contains("Content Security Policy")),
        "{console:?}"
    );
    drop(browser);
    drop(child);
}

/// The page says what it counts, names users, shows time zones, keeps two products with
/// the same values visible on the chart, lists refused requests and downloads the report.
#[test]
fn the_admin_page_labels_its_counts_and_shows_users_zones_refusals_and_the_report() {
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR, "browser test");
    let home = dir.path().join("server-home");
    let mut cad = spec(1, 2, CountingUnit::Station);
    cad.product_name = "Orbit CAD".into();
    let mut viewer = spec(2, 2, CountingUnit::Station);
    viewer.product_name = "Orbit Viewer".into();
    common::activate(&common::env_in(&home), &key, &[cad, viewer]);
    let server = ServerProc::start(&dir.path().join("server-state"), &home, 0);
    let session = |name: &str, this_machine: bool| {
        let mut o = SessionOptions::new(VENDOR, key.public_key());
        o.sources = sources::NETWORK;
        o.servers = vec![server.addr.clone()];
        let mut host = HostIdentity::simulated(name);
        if this_machine {
            // A client on the server's own machine, run by root: its user has a name there.
            host.hostname = tessera::host::hostname();
            host.session.id = "uid:0/sid:1".into();
        }
        Session::open_in(
            o,
            Environment {
                home: dir.path().join(format!("client-{name}")),
                host,
                clock: Arc::new(SystemClock),
            },
        )
        .unwrap()
    };
    // Two handles of one process on this machine: one seat of the per-station CAD license;
    // and one viewer seat: both products at 1 seat, the same line on the chart.
    let local = session("local", true);
    let _h1 = local.acquire(1, 0, false).unwrap();
    let _h2 = local.acquire(1, 0, false).unwrap();
    let _v = local.acquire(2, 0, false).unwrap();
    // A refusal: a feature the license does not have, from another machine.
    let other = session("intruder-pc", false);
    assert!(other.acquire(1, 0x100, false).is_err());

    let browser = Browser::start(&dir.path().join("profile"));
    browser.goto(&format!("http://{}/", server.admin));

    // Every count says what it counts, and they agree with the API.
    browser.wait_text("#sum-seats", "seats in use", |t| t == "2 / 4");
    browser.wait_text("#sum-handles", "the handles", |t| t == "3");
    browser.wait_text("#sum-denials", "the refusals", |t| t == "1");
    let st = common::http::get(&server.admin, "/api/v1/status", &[]).json();
    assert_eq!(
        (&st["seats_in_use"], &st["quantity"], &st["handles"]),
        (&json!(2), &json!(4), &json!(3)),
        "{st}"
    );
    let cad_row = browser.wait_text("#licenses tbody tr", "Orbit CAD's seats", |t| {
        t.contains("Orbit CAD") && t.contains("1 of 2 seats")
    });
    assert!(cad_row.contains("2 handles"), "{cad_row}");
    let metrics = common::http::get(&server.admin, "/metrics", &[]).body;
    let labels = format!("vendor=\"{VENDOR}\",product=\"1\",product_name=\"Orbit CAD\"");
    assert!(
        metrics.contains(&format!("tessera_seats_in_use{{{labels}}} 1\n")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("tessera_handles{{{labels}}} 2\n")),
        "{metrics}"
    );

    // The user by name (this machine's user database), keeping the uid; the two CAD
    // handles are marked as one seat.
    browser.wait_text("#seats tbody tr", "the CAD handles", |t| {
        t.contains("Orbit CAD") && t.contains("root (uid 0)") && t.contains("2 handles")
    });
    let groups = browser.script(
        "return [...document.querySelectorAll('#seats tbody tr')].filter(r => r.textContent.includes('Orbit CAD')).map(r => r.querySelector('td.seat .mono').textContent)",
    );
    let groups = groups.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(groups[0], groups[1], "one seat, two handles: {groups:?}");

    // Times carry their zone: the zone's name on the page, the offset on every time.
    let zone = browser.script("return Intl.DateTimeFormat().resolvedOptions().timeZone");
    let tz = browser.wait_text("#tz-name", "the time zone", |t| !t.is_empty());
    assert!(
        tz.contains(zone.as_str().unwrap()) && tz.contains("UTC"),
        "{tz}"
    );
    let times = browser
        .script("return [...document.querySelectorAll('#seats td.time')].map(c => c.textContent)");
    let offset = |t: &str| {
        let b = t.as_bytes();
        b.len() >= 6 && {
            let o = &b[b.len() - 6..];
            (o[0] == b'+' || o[0] == b'-') && o[3] == b':'
        }
    };
    let times = times.as_array().unwrap();
    assert!(!times.is_empty());
    for t in times {
        assert!(offset(t.as_str().unwrap()), "no offset in {t}");
    }

    // The refusal: who, what, when and why.
    let refused = browser.wait_text("#denials tbody tr", "the refusal", |t| {
        t.contains("intruder-pc")
    });
    assert!(
        refused.contains("Orbit CAD") && refused.contains("feature missing"),
        "{refused}"
    );
    assert!(refused.contains("uid 1000"), "{refused}");
    // The usage log's refusal records, on demand (once the log has it), and back.
    let start = Instant::now();
    while common::http::get(&server.admin, "/api/v1/denials?source=log", &[]).json()["denials"]
        .as_array()
        .is_none_or(|l| l.is_empty())
    {
        assert!(start.elapsed() < Duration::from_secs(10), "never logged");
        std::thread::sleep(Duration::from_millis(50));
    }
    browser.click("#denials-source");
    browser.wait_text("#denials-summary", "the log's refusals", |t| {
        t.contains("usage logs record")
    });
    let logged = browser.wait_text("#denials tbody tr", "the logged refusal", |t| {
        t.contains("intruder-pc")
    });
    assert!(logged.contains("feature missing"), "{logged}");
    browser.click("#denials-source");
    browser.wait_text("#denials-summary", "the refusals since the start", |t| {
        t.contains("since the server started")
    });

    // Both products' lines are on the chart and look different (dash, marker), though
    // their values are the same; the legend hides and shows one.
    let look = "return [...document.querySelectorAll('#chart svg path.line')].map(p => [p.dataset.product, getComputedStyle(p).strokeDasharray, p.getAttribute('d')])";
    let lines = browser.script(look);
    let lines = lines.as_array().unwrap();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_ne!(lines[0][0], lines[1][0]);
    assert_ne!(lines[0][1], lines[1][1], "the same dash pattern: {lines:?}");
    assert_ne!(
        lines[0][2], lines[1][2],
        "one line hides the other: {lines:?}"
    );
    let markers = browser.script(
        "return [...new Set([...document.querySelectorAll('#chart svg .marker')].map(m => m.tagName + ' ' + m.dataset.product))]",
    );
    assert_eq!(markers.as_array().unwrap().len(), 2, "{markers:?}");
    let viewer_line = format!("#chart svg path.line[data-product=\"{VENDOR}:2\"]");
    browser.click(&format!(
        "#chart-legend li[data-product=\"{VENDOR}:2\"] button"
    ));
    browser.wait_gone(&viewer_line, "the hidden viewer line");
    browser.click(&format!(
        "#chart-legend li[data-product=\"{VENDOR}:2\"] button"
    ));
    browser.wait_text(&viewer_line, "the viewer line back", |_| true);

    // The report, downloaded from the page.
    browser.click("#export-csv");
    let msg = browser.wait_text("#message", "the download", |t| t.contains("Report saved"));
    assert!(
        msg.contains("tessera-report-") && msg.contains(".csv"),
        "{msg}"
    );
    let csv =
        browser.script("return fetch('/api/v1/report?format=csv&minutes=60').then(r => r.text())");
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with(
            "time,time_iso,vendor_id,product_code,product_name,seats_in_use,quantity\r\n"
        ),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(",{VENDOR},1,Orbit CAD,1,2\r\n")),
        "{csv}"
    );
    assert!(
        csv.contains(&format!(",{VENDOR},2,Orbit Viewer,1,2\r\n")),
        "{csv}"
    );

    if let Ok(to) = std::env::var("TESSERA_ADMIN_SCREENSHOT_2") {
        browser.script("document.getElementById('chart').scrollIntoView()");
        browser.screenshot(Path::new(&to));
    }
    let console = browser.console();
    assert!(
        console
            .iter()
            .all(|l| !l.contains("SEVERE") && !l.contains("Content Security Policy")),
        "{console:?}"
    );
}

/// A pool member's page shows the pool: its members (which are up) and the etcd endpoints
/// (their health), and a seat its client holds.
#[test]
fn a_pool_members_page_shows_the_members_and_the_etcd_endpoints() {
    let etcd = common::etcd::Etcd::single();
    let dir = tempfile::tempdir().unwrap();
    let key = PublisherKey::generate(VENDOR + 1, "browser pool test");
    let home = dir.path().join("member-home");
    common::activate(
        &common::env_in(&home),
        &key,
        &[spec(1, 2, CountingUnit::Handle)],
    );
    let member = ServerProc::start_with(
        &dir.path().join("member-state"),
        &home,
        0,
        &["--pool", &etcd.pool_url(), "--pool-name", "browser"],
    );
    let mut o = SessionOptions::new(VENDOR + 1, key.public_key());
    o.sources = sources::NETWORK;
    o.servers = vec![member.addr.clone()];
    let client = Session::open_in(
        o,
        Environment {
            home: dir.path().join("client-home"),
            host: HostIdentity::simulated("pool-pc-1"),
            clock: Arc::new(SystemClock),
        },
    )
    .unwrap();
    let _seat = client.acquire(1, 0, false).unwrap();

    let browser = Browser::start(&dir.path().join("profile"));
    browser.goto(&format!("http://{}/", member.admin));
    let summary = browser.wait_text("#pool-summary", "the pool's summary", |t| {
        t.contains("1 of 1 members up") && t.contains("1 of 1 etcd endpoints healthy")
    });
    assert!(summary.contains("member test-server"), "{summary}");
    let row = browser.wait_text("#pool-members tbody tr", "the member", |t| {
        t.contains("test-server")
    });
    assert!(row.contains("up") && row.contains("this member"), "{row}");
    let endpoint = browser.wait_text("#pool-endpoints tbody tr", "the endpoint", |t| {
        t.contains("healthy")
    });
    assert!(endpoint.contains(&etcd.endpoints()[0]), "{endpoint}");
    assert!(endpoint.contains("leader"), "{endpoint}");
    assert!(
        endpoint.contains(" MiB"),
        "the node's database size: {endpoint}"
    );
    browser.wait_text("#seats tbody tr", "the pool's seat", |t| {
        t.contains("pool-pc-1")
    });
    assert!(browser.console().is_empty(), "{:?}", browser.console());
}
