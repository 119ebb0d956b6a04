//! The `/ha` page in a real headless browser (Debian's chromium): promgres with
//! --high-availability and two clusters of two replicas each; the DOM chromium renders shows
//! both clusters, their leaders and replicas; a hand-over through the page's form endpoint (a
//! form POST, as the browser sends it) shows the new leader; a screenshot proves it renders;
//! names with markup from the network are shown as text. Without --high-availability, /ha is
//! a 404.
//!
//! chromium comes from scripts/ensure-chromium.sh (`make test` runs it). Without it this test
//! fails, unless PROMGRES_SKIP_BROWSER=1. PROMGRES_HA_PAGE_SCREENSHOT=<file> writes the
//! screenshot there (docs/ha-page.png was taken so) instead of a temporary directory.

mod common;

use common::*;
use promgres::config::Config;
use promgres::ha::HaConfig;
use promgres::proto::WriteRequest;
use promgres::server::Server;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest one chromium run may take.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

fn ha_config(db: &TestDb) -> Config {
    let mut c = Config::for_database(db.config());
    c.ha = Some(HaConfig {
        cluster_label: "cluster".into(),
        replica_label: "__replica__".into(),
        // Long: no failover while the browser runs; every replica counts as sending.
        failover_timeout_ms: 120_000,
        interval_ms: 500,
        buffer_bytes: 64 << 20,
    });
    c
}

/// One scrape of a few targets by a replica of `cluster`.
fn scrape(cluster: &str, replica: &str, ts: i64) -> WriteRequest {
    write_request(
        ["node", "api", "db"]
            .iter()
            .enumerate()
            .map(|(i, job)| {
                series(
                    &[
                        ("__name__", "up"),
                        ("job", job),
                        ("cluster", cluster),
                        ("__replica__", replica),
                    ],
                    &[(ts, i as f64)],
                )
            })
            .collect(),
    )
}

/// Headless chromium, with a profile directory of its own.
struct Browser {
    profile: TempDir,
}

impl Browser {
    /// chromium, or None when it is missing and PROMGRES_SKIP_BROWSER=1; missing otherwise
    /// is a failure.
    fn find() -> Option<Browser> {
        let found = Command::new("chromium")
            .arg("--version")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .output();
        match found {
            Ok(out) if out.status.success() => {
                eprintln!("browser: {}", String::from_utf8_lossy(&out.stdout).trim());
                Some(Browser {
                    profile: TempDir::new("ha-page-chromium"),
                })
            }
            _ if std::env::var("PROMGRES_SKIP_BROWSER").as_deref() == Ok("1") => {
                eprintln!("SKIPPED: chromium is not installed and PROMGRES_SKIP_BROWSER=1");
                None
            }
            other => panic!(
                "chromium is not on PATH ({other:?}): run scripts/ensure-chromium.sh \
                 (make test does), or set PROMGRES_SKIP_BROWSER=1 to skip the browser test"
            ),
        }
    }

    /// Runs chromium headless with `args`; returns its standard output.
    fn run(&self, args: &[&str]) -> String {
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", self.profile.0.display()))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start chromium");
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = Vec::new();
                let _ = r.read_to_end(&mut s);
                String::from_utf8_lossy(&s).into_owned()
            })
        };
        let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
        let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait for chromium") {
                break status;
            }
            if started.elapsed() > BROWSER_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "chromium {args:?} took over {BROWSER_TIMEOUT:?}; stderr: {}",
                    stderr.join().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let out = stdout.join().unwrap_or_default();
        let err = stderr.join().unwrap_or_default();
        assert!(
            status.success(),
            "chromium {args:?}: {status}; stderr: {err}"
        );
        out
    }

    /// The DOM chromium built from the page at `path`, serialized.
    fn dom(&self, addr: SocketAddr, path: &str) -> String {
        let dom = self.run(&["--dump-dom", &format!("http://{addr}{path}")]);
        assert!(dom.contains("</html>"), "no document: {dom}");
        dom
    }

    fn screenshot(&self, addr: SocketAddr, path: &str, file: &Path) {
        let _ = std::fs::remove_file(file);
        self.run(&[
            &format!("--screenshot={}", file.display()),
            "--window-size=1200,800",
            &format!("http://{addr}{path}"),
        ]);
    }
}

/// The serialized section of one cluster (its `data-cluster` attribute as chromium writes it).
fn cluster_section<'a>(dom: &'a str, cluster: &str) -> &'a str {
    let start = dom
        .find(&format!("data-cluster=\"{cluster}\""))
        .unwrap_or_else(|| panic!("no section for cluster {cluster:?} in the DOM: {dom}"));
    let end = dom[start..]
        .find("</section>")
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// POSTs the hand-over form as a browser does.
fn post_form(addr: SocketAddr, action: &str, body: &str, origin: Option<&str>) -> Reply {
    let mut headers = vec![("Content-Type", "application/x-www-form-urlencoded")];
    if let Some(o) = origin {
        headers.push(("Origin", o));
    }
    request(addr, "POST", action, &headers, body.as_bytes()).expect("form POST")
}

#[test]
fn the_ha_page_renders_in_a_browser_and_hands_over() {
    let Some(browser) = Browser::find() else {
        return;
    };
    let db = TestDb::new("ha_page");
    let server = Server::start(&ha_config(&db)).expect("start");
    let addr = server.addr();
    let t = now_ms() - 30_000;
    // Two clusters, two replicas each: the first to write leads, the other is a standby.
    for (cluster, leader, standby) in [
        ("eu-west", "prom-0", "prom-1"),
        ("us-east", "prom-a", "prom-b"),
    ] {
        for i in 0..3 {
            let ts = t + i * 10_000;
            assert_eq!(
                post_write(addr, &encode(&scrape(cluster, leader, ts))).status,
                204
            );
            assert_eq!(
                post_write(addr, &encode(&scrape(cluster, standby, ts + 300))).status,
                202
            );
        }
    }
    let plain = get(addr, "/ha");
    assert_eq!(plain.status, 200, "{}", plain.body);
    assert_eq!(
        plain.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );

    let dom = browser.dom(addr, "/ha");
    for (cluster, leader, standby) in [
        ("eu-west", "prom-0", "prom-1"),
        ("us-east", "prom-a", "prom-b"),
    ] {
        let s = cluster_section(&dom, cluster);
        assert!(
            s.contains(&format!("data-leader=\"{leader}\" data-term=\"1\"")),
            "{s}"
        );
        assert!(s.contains(&format!("<h2>{cluster} <span")), "{s}");
        assert!(
            s.contains(&format!("<tr data-replica=\"{leader}\" class=\"leader\">")),
            "{s}"
        );
        assert!(
            s.contains(&format!(
                "<tr data-replica=\"{standby}\" class=\"replica\">"
            )),
            "{s}"
        );
        // The hand-over form is there for the standby only.
        assert_eq!(s.matches("<form ").count(), 1, "{s}");
        assert!(s.contains(&format!("value=\"{standby}\"")), "{s}");
        assert!(s.contains("first writer"), "{s}");
    }

    // The hand-over through the page's form endpoint, as the browser posts it.
    let r = post_form(
        addr,
        "/ha/clusters/eu-west/leader",
        "replica=prom-1",
        Some(&format!("http://{addr}")),
    );
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.header("Location"), Some("/ha"));
    let dom = browser.dom(addr, "/ha");
    let eu = cluster_section(&dom, "eu-west");
    assert!(
        eu.contains("data-leader=\"prom-1\" data-term=\"2\""),
        "{eu}"
    );
    assert!(
        eu.contains("<tr data-replica=\"prom-1\" class=\"leader\">"),
        "{eu}"
    );
    assert!(eu.contains("value=\"prom-0\""), "{eu}");
    assert!(eu.contains("operator hand-over"), "{eu}");
    assert!(
        eu.contains("<tr data-term=\"1\" data-leader=\"prom-0\">"),
        "{eu}"
    );
    let us = cluster_section(&dom, "us-east");
    assert!(
        us.contains("data-leader=\"prom-a\" data-term=\"1\""),
        "{us}"
    );

    // It renders: a PNG of the window's size.
    let shots = TempDir::new("ha-page-shot");
    let file = std::env::var("PROMGRES_HA_PAGE_SCREENSHOT")
        .map(PathBuf::from)
        .unwrap_or_else(|_| shots.0.join("ha.png"));
    browser.screenshot(addr, "/ha", &file);
    let png = std::fs::read(&file).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (w, h) = (
        u32::from_be_bytes(png[16..20].try_into().expect("width")),
        u32::from_be_bytes(png[20..24].try_into().expect("height")),
    );
    assert_eq!((w, h), (1200, 800));
    assert!(png.len() > 20_000, "{} bytes: an empty page?", png.len());
    eprintln!("screenshot: {} ({} bytes)", file.display(), png.len());

    // Refused hand-overs answer an HTML page with the status, and change nothing.
    let r = post_form(addr, "/ha/clusters/eu-west/leader", "replica=ghost", None);
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body.contains("data-status=\"409\""), "{}", r.body);
    let r = post_form(addr, "/ha/clusters/nowhere/leader", "replica=prom-0", None);
    assert_eq!(r.status, 404, "{}", r.body);
    let r = post_form(addr, "/ha/clusters/eu-west/leader", "other=1", None);
    assert_eq!(r.status, 400, "{}", r.body);
    let r = post_form(
        addr,
        "/ha/clusters/eu-west/leader",
        "replica=prom-0",
        Some("http://evil.example"),
    );
    assert_eq!(r.status, 403, "{}", r.body);
    let r = request(addr, "GET", "/ha/clusters/eu-west/leader", &[], b"").expect("GET");
    assert_eq!(r.status, 405, "{}", r.body);
    let json = get(addr, "/api/v1/ha/clusters").body;
    assert!(
        json.contains("\"cluster\":\"eu-west\",\"leader\":\"prom-1\""),
        "{json}"
    );

    // Names with markup, from the network, are text in the browser; the form's percent-encoded
    // action and its form-encoded replica (a space is '+') reach the right cluster and replica.
    let evil = "<b>x</b> & \"y\"/z";
    assert_eq!(
        post_write(addr, &encode(&scrape(evil, "r<1>", t))).status,
        204
    );
    assert_eq!(
        post_write(addr, &encode(&scrape(evil, "r 2", t + 300))).status,
        202
    );
    let dom = browser.dom(addr, "/ha");
    assert!(
        !dom.contains("<b>x</b>"),
        "markup from a label rendered: {dom}"
    );
    assert!(
        dom.contains("<h2>&lt;b&gt;x&lt;/b&gt; &amp; \"y\"/z <span"),
        "{dom}"
    );
    assert!(dom.contains("r&lt;1&gt;"), "{dom}");
    let action = "/ha/clusters/%3Cb%3Ex%3C%2Fb%3E%20%26%20%22y%22%2Fz/leader";
    assert!(dom.contains(&format!("action=\"{action}\"")), "{dom}");
    let r = post_form(addr, action, "replica=r+2", None);
    assert_eq!(r.status, 303, "{}", r.body);
    let json = get(addr, "/api/v1/ha/clusters").body;
    assert!(json.contains("\"leader\":\"r 2\""), "{json}");

    // Behind a proxy that rewrites Host, the browser's Origin is the proxy's X-Forwarded-Host.
    let r = request(
        addr,
        "POST",
        "/ha/clusters/eu-west/leader",
        &[
            ("Content-Type", "application/x-www-form-urlencoded"),
            ("Origin", "https://ha.example.org"),
            ("X-Forwarded-Host", "ha.example.org"),
        ],
        b"replica=prom-0",
    )
    .expect("form POST");
    assert_eq!(r.status, 303, "{}", r.body);
    let json = get(addr, "/api/v1/ha/clusters").body;
    assert!(
        json.contains("\"cluster\":\"eu-west\",\"leader\":\"prom-0\""),
        "{json}"
    );

    assert!(server.shutdown(Duration::from_secs(10)));
}

#[test]
fn without_high_availability_the_page_is_a_404_that_says_why() {
    let running = Running::start("ha_page_off");
    let r = get(running.addr, "/ha");
    assert_eq!(r.status, 404, "{}", r.body);
    assert!(r.body.contains("--high-availability"), "{}", r.body);
    let r = post_form(running.addr, "/ha/clusters/c/leader", "replica=r", None);
    assert_eq!(r.status, 404, "{}", r.body);
}
