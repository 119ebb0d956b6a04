//! TLS and authentication, end to end: the promgres binary with a web configuration file
//! (TLS, bcrypt users), a bearer-token file and roles; a real Prometheus sending over TLS with
//! basic auth and with a bearer token; wrong or missing credentials refused with 401 and
//! nothing stored; roles enforced; client certificates; certificates and tokens rotated by
//! SIGHUP; and no secret in any log line, /metrics or error body.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const DB_PASSWORD: &str = "Db-Pw-7c1d9e3a";
const PROM_PASSWORD: &str = "Prom-Pw-5b2e8f41";
const ADMIN_PASSWORD: &str = "Admin-Pw-0a9d6c27";
const WRITE_TOKEN: &str = "write-token-3f6a1b9c2d8e4f70";
const READ_TOKEN: &str = "read-token-91c7e2a45b0d3f68";
const NEW_TOKEN: &str = "rotated-token-6e2b9d0c1a7f4e35";

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate.
fn make_pki(dir: &Path, ca: &str) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
    ];
    let mut a = vec!["req", "-x509"];
    a.extend(ec);
    let (key, pem, subj) = (
        format!("{ca}.key"),
        format!("{ca}.pem"),
        format!("/CN=promgres test {ca}"),
    );
    a.extend(["-keyout", &key, "-out", &pem, "-days", "2", "-subj", &subj]);
    openssl(dir, &a);
    for (name, ext) in [
        (
            "server",
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
        ),
        (
            "client",
            "subjectAltName=DNS:prometheus.test\nextendedKeyUsage=clientAuth\n",
        ),
    ] {
        let (k, csr, crt, extfile) = (
            format!("{ca}-{name}.key"),
            format!("{ca}-{name}.csr"),
            format!("{ca}-{name}.pem"),
            format!("{ca}-{name}.ext"),
        );
        std::fs::write(dir.join(&extfile), ext).unwrap();
        let mut r = vec!["req"];
        r.extend(ec);
        let subj = format!("/CN={name}");
        r.extend(["-keyout", &k, "-out", &csr, "-subj", &subj]);
        openssl(dir, &r);
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                &pem,
                "-CAkey",
                &key,
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "2",
                "-extfile",
                &extfile,
            ],
        );
    }
}

struct Tls {
    dir: TempDir,
}

impl Tls {
    fn new() -> Tls {
        let dir = TempDir::new("tls");
        make_pki(&dir.0, "ca");
        make_pki(&dir.0, "other");
        Tls { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.0.join(name)
    }
}

/// An HTTPS exchange with curl: (status, body); status 0 when no TLS session came about.
fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-sS", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .stderr(Stdio::piped())
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

fn basic(user: &str, password: &str) -> String {
    format!("{user}:{password}")
}

struct Promgres {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Promgres {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Promgres {
    fn start(db_uri: &str, args: &[String], log: PathBuf, ca: &Path, client: &[&str]) -> Promgres {
        let port = free_port();
        let stderr = std::fs::File::create(&log).unwrap();
        let child = Command::new(BIN)
            .args(["--db-uri", db_uri, "--log-level", "trace"])
            .args(["--web-listen-address", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start promgres");
        let p = Promgres { child, port, log };
        let ca = ca.display().to_string();
        let mut a = vec!["--cacert", ca.as_str()];
        a.extend(client);
        let up = wait_for(Duration::from_secs(20), || {
            (curl(&p.url("/healthz"), &a).0 == 200).then_some(())
        });
        assert!(up.is_some(), "promgres did not come up: {}", p.log_text());
        p
    }

    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn write_body(metric: &str) -> PathBuf {
    let req = write_request(vec![series(
        &[("__name__", metric), ("job", "curl")],
        &[(now_ms(), 1.0)],
    )]);
    let path = std::env::temp_dir().join(format!(
        "promgres-auth-body-{metric}-{}",
        std::process::id()
    ));
    std::fs::write(&path, encode(&req)).unwrap();
    path
}

fn post_write(p: &Promgres, ca: &str, auth: &[&str], metric: &str) -> (u16, String) {
    let body = write_body(metric);
    let data = format!("@{}", body.display());
    let mut args = vec![
        "--cacert",
        ca,
        "-H",
        "Content-Encoding: snappy",
        "-H",
        "Content-Type: application/x-protobuf",
        "-H",
        "X-Prometheus-Remote-Write-Version: 0.1.0",
        "--data-binary",
        &data,
    ];
    args.extend(auth);
    let r = curl(&p.url("/write"), &args);
    let _ = std::fs::remove_file(body);
    r
}

fn samples_of(db: &TestDb, metric: &str) -> i64 {
    count(
        &mut db.client(),
        &format!(
            "SELECT count(*) FROM prom_samples JOIN prom_series USING (series_id) WHERE metric = '{metric}'"
        ),
    )
}

#[test]
fn prometheus_over_tls_with_basic_auth_and_bearer_tokens() {
    let db = TestDb::new("auth_tls");
    let tls = Tls::new();
    let dir = &tls.dir.0;
    let hash = |p: &str| bcrypt::hash(p, 6).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        format!(
            "tls_server_config:\n  cert_file: ca-server.pem\n  key_file: ca-server.key\n\
             http_server_config:\n  headers:\n    X-Content-Type-Options: nosniff\n\
             basic_auth_users:\n  prometheus: {}\n  ops: {}\n",
            hash(PROM_PASSWORD),
            hash(ADMIN_PASSWORD)
        ),
    )
    .unwrap();
    let tokens = dir.join("tokens");
    std::fs::write(
        &tokens,
        format!("# writers\nwrite {WRITE_TOKEN}\nread {READ_TOKEN}\n"),
    )
    .unwrap();
    let pwfile = dir.join("dbpw");
    std::fs::write(&pwfile, DB_PASSWORD).unwrap();
    // The app role's password becomes DB_PASSWORD, to be looked for in the output.
    db.admin_client()
        .batch_execute(&format!(
            "ALTER ROLE {} PASSWORD '{DB_PASSWORD}'",
            db.app_role
        ))
        .unwrap();
    let uri = db
        .uri()
        .replacen(":promgres-test-app@", &format!(":{DB_PASSWORD}@"), 1);
    assert!(uri.contains(DB_PASSWORD), "{uri}");
    let args: Vec<String> = [
        "--high-availability",
        "--web-config-file",
        &dir.join("web.yml").display().to_string(),
        "--web-tokens-file",
        &tokens.display().to_string(),
        "--web-user-role",
        "prometheus=write",
        "--web-user-role",
        "ops=admin",
        "--db-password-file",
        &pwfile.display().to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let ca = tls.path("ca.pem").display().to_string();
    let p = Promgres::start(
        &uri,
        &args,
        dir.join("promgres.log"),
        &tls.path("ca.pem"),
        &[],
    );
    let mut bodies = Vec::new();

    // Plain HTTP to the TLS port gets nothing stored and no answer worth the name.
    let t0 = std::time::Instant::now();
    let plain = request(
        format!("127.0.0.1:{}", p.port).parse().unwrap(),
        "GET",
        "/healthz",
        &[],
        b"",
    );
    assert!(plain.map(|r| r.status != 200).unwrap_or(true));
    eprintln!("plain request refused after {:?}", t0.elapsed());
    // The wrong CA: the client refuses the server.
    let other = tls.path("other.pem").display().to_string();
    assert_eq!(curl(&p.url("/healthz"), &["--cacert", &other]).0, 0);

    // A real Prometheus: one remote_write with basic auth, one with a bearer token, one with a
    // wrong password, each marking its samples.
    let prom_cfg = format!(
        r#"global:
  scrape_interval: 1s
  scrape_timeout: 900ms
  external_labels:
    cluster: tls
    __replica__: a
scrape_configs:
  - job_name: self
    static_configs:
      - targets: ['127.0.0.1:{{port}}']
remote_write:
  - url: {url}
    tls_config: {{ ca_file: {ca} }}
    basic_auth: {{ username: prometheus, password: {PROM_PASSWORD} }}
    write_relabel_configs: [{{ target_label: via, replacement: basic }}]
    queue_config: {{ batch_send_deadline: 500ms, min_backoff: 50ms, max_backoff: 500ms }}
  - url: {url}
    tls_config: {{ ca_file: {ca} }}
    authorization: {{ credentials: {WRITE_TOKEN} }}
    write_relabel_configs: [{{ target_label: via, replacement: bearer }}]
    queue_config: {{ batch_send_deadline: 500ms, min_backoff: 50ms, max_backoff: 500ms }}
  - url: {url}
    tls_config: {{ ca_file: {ca} }}
    basic_auth: {{ username: prometheus, password: not-the-password }}
    write_relabel_configs: [{{ target_label: via, replacement: wrong }}]
    queue_config: {{ batch_send_deadline: 500ms, min_backoff: 50ms, max_backoff: 500ms }}
"#,
        url = p.url("/write"),
    );
    let prom = Prometheus::start("auth-tls", &prom_cfg);
    // The view prom_metric.up appears with the first sample of `up`.
    let via = |v: &str| -> i64 {
        db.client()
            .query_one(
                "SELECT count(*) FROM prom_samples JOIN prom_series USING (series_id) \
                 WHERE metric = 'up' AND labels->>'via' = $1",
                &[&v],
            )
            .and_then(|r| r.try_get(0))
            .unwrap_or(0)
    };
    let arrived = wait_for(Duration::from_secs(40), || {
        (via("basic") >= 3 && via("bearer") >= 3).then_some(())
    });
    assert!(
        arrived.is_some(),
        "basic {} bearer {}; prometheus log: {}",
        via("basic"),
        via("bearer"),
        prom.log()
    );
    assert_eq!(via("wrong"), 0, "a wrong password stored samples");
    let refused = wait_for(Duration::from_secs(10), || {
        let (_, m) = curl(&p.url("/metrics"), &["--cacert", &ca]);
        m.lines()
            .any(|l| l.contains("path=\"/write\"") && l.contains("code=\"401\""))
            .then_some(m)
    });
    assert!(refused.is_some(), "no 401 counted for the wrong password");
    drop(prom);

    // By hand: missing, wrong, and right credentials; 401 carries WWW-Authenticate.
    let before = samples_of(&db, "by_hand");
    let (code, body) = post_write(&p, &ca, &[], "by_hand");
    assert_eq!(code, 401, "{body}");
    bodies.push(body);
    let (code, body) = post_write(&p, &ca, &["-u", &basic("prometheus", "nope")], "by_hand");
    assert_eq!(code, 401);
    bodies.push(body);
    let (code, body) = post_write(
        &p,
        &ca,
        &["-H", "Authorization: Bearer not-a-token-at-all"],
        "by_hand",
    );
    assert_eq!(code, 401);
    bodies.push(body);
    assert_eq!(
        samples_of(&db, "by_hand"),
        before,
        "a refused request stored samples"
    );
    let head = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-D", "-", "--cacert", &ca])
        .arg(p.url("/write"))
        .output()
        .unwrap();
    let head = String::from_utf8_lossy(&head.stdout).to_lowercase();
    assert!(
        head.contains("www-authenticate: basic realm=\"promgres\""),
        "{head}"
    );
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");

    // Roles: the writer user cannot read or hand over; the read token cannot write; admin can.
    let (code, _) = post_write(
        &p,
        &ca,
        &["-u", &basic("prometheus", PROM_PASSWORD)],
        "by_hand",
    );
    assert_eq!(code, 204);
    let read_token = format!("Authorization: Bearer {READ_TOKEN}");
    let (code, _) = post_write(&p, &ca, &["-H", &read_token], "by_hand");
    assert_eq!(code, 403);
    let (code, _) = curl(
        &p.url("/api/v1/ha/clusters"),
        &["--cacert", &ca, "-u", &basic("prometheus", PROM_PASSWORD)],
    );
    assert_eq!(code, 403);
    let (code, body) = curl(
        &p.url("/api/v1/ha/clusters"),
        &["--cacert", &ca, "-H", &read_token],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("tls"), "{body}");
    let hand_over = p.url("/api/v1/ha/clusters/tls/leader?replica=a");
    let (code, _) = curl(
        &hand_over,
        &["--cacert", &ca, "-X", "POST", "-H", &read_token],
    );
    assert_eq!(code, 403);
    let (code, body) = curl(
        &hand_over,
        &[
            "--cacert",
            &ca,
            "-X",
            "POST",
            "-u",
            &basic("ops", ADMIN_PASSWORD),
        ],
    );
    assert!(code != 401 && code != 403, "admin refused: {code} {body}");
    // A page of another site cannot use an admin's browser for it (cross-site request).
    let (code, _) = curl(
        &hand_over,
        &[
            "--cacert",
            &ca,
            "-X",
            "POST",
            "-u",
            &basic("ops", ADMIN_PASSWORD),
            "-H",
            "Origin: https://elsewhere.example",
        ],
    );
    assert_eq!(code, 403, "cross-origin hand-over");
    bodies.push(body);
    // The /ha page: read role; without credentials 401 (a browser then asks for them).
    assert_eq!(curl(&p.url("/ha"), &["--cacert", &ca]).0, 401);
    let (code, page) = curl(&p.url("/ha"), &["--cacert", &ca, "-H", &read_token]);
    assert_eq!(code, 200);
    assert!(page.contains("tls"), "{page}");
    // /healthz and /metrics stay open by default.
    assert_eq!(curl(&p.url("/healthz"), &["--cacert", &ca]).0, 200);
    let (code, metrics) = curl(&p.url("/metrics"), &["--cacert", &ca]);
    assert_eq!(code, 200);

    // SIGHUP: a new tokens file replaces the old one; a broken web config leaves the settings
    // in force.
    std::fs::write(&tokens, format!("write {NEW_TOKEN}\n")).unwrap();
    let kill = |sig: &str| {
        Command::new("kill")
            .args([sig, &p.child.id().to_string()])
            .status()
            .unwrap();
    };
    kill("-HUP");
    let new_token = format!("Authorization: Bearer {NEW_TOKEN}");
    let swapped = wait_for(Duration::from_secs(5), || {
        (post_write(&p, &ca, &["-H", &new_token], "rotated").0 == 204).then_some(())
    });
    assert!(
        swapped.is_some(),
        "new token not accepted after SIGHUP: {}",
        p.log_text()
    );
    let old_token = format!("Authorization: Bearer {WRITE_TOKEN}");
    assert_eq!(post_write(&p, &ca, &["-H", &old_token], "rotated").0, 401);
    std::fs::write(dir.join("web.yml"), "tls_server_config: [broken\n").unwrap();
    kill("-HUP");
    let kept = wait_for(Duration::from_secs(5), || {
        p.log_text().contains("reload failed").then_some(())
    });
    assert!(kept.is_some(), "{}", p.log_text());
    assert_eq!(post_write(&p, &ca, &["-H", &new_token], "rotated").0, 204);

    // Nothing leaks: not in the trace-level log, /metrics, or any error body.
    let log = p.log_text();
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "log level: {log}"
    );
    for secret in [
        DB_PASSWORD,
        PROM_PASSWORD,
        ADMIN_PASSWORD,
        WRITE_TOKEN,
        READ_TOKEN,
        NEW_TOKEN,
    ] {
        assert!(!log.contains(secret), "the log shows {secret}");
        assert!(!metrics.contains(secret), "/metrics shows {secret}");
        for b in &bodies {
            assert!(!b.contains(secret), "an error body shows {secret}: {b}");
        }
    }
}

#[test]
fn client_certificates_and_certificate_rotation() {
    let db = TestDb::new("auth_mtls");
    let tls = Tls::new();
    let dir = &tls.dir.0;
    // Served files are copies, so rotation can overwrite them.
    std::fs::copy(dir.join("ca-server.pem"), dir.join("served.pem")).unwrap();
    std::fs::copy(dir.join("ca-server.key"), dir.join("served.key")).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: served.pem\n  key_file: served.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.pem\n  min_version: TLS12\n",
    )
    .unwrap();
    let args = vec![
        "--web-config-file".to_string(),
        dir.join("web.yml").display().to_string(),
    ];
    let ca = tls.path("ca.pem").display().to_string();
    let (cert, key) = (
        tls.path("ca-client.pem").display().to_string(),
        tls.path("ca-client.key").display().to_string(),
    );
    let client = ["--cert", cert.as_str(), "--key", key.as_str()];
    let p = Promgres::start(
        &db.uri(),
        &args,
        dir.join("promgres.log"),
        &tls.path("ca.pem"),
        &client,
    );

    // No client certificate, or one from another CA: no TLS session.
    assert_eq!(curl(&p.url("/healthz"), &["--cacert", &ca]).0, 0);
    let (ocert, okey) = (
        tls.path("other-client.pem").display().to_string(),
        tls.path("other-client.key").display().to_string(),
    );
    assert_eq!(
        curl(
            &p.url("/healthz"),
            &["--cacert", &ca, "--cert", &ocert, "--key", &okey]
        )
        .0,
        0
    );
    let mut with_cert = vec!["--cacert", ca.as_str()];
    with_cert.extend(client);
    assert_eq!(post_write(&p, &ca, &client, "mtls").0, 204);
    assert_eq!(samples_of(&db, "mtls"), 1);

    // Rotation: the server certificate from the other CA, and that CA for clients; SIGHUP.
    std::fs::copy(dir.join("other-server.pem"), dir.join("served.pem")).unwrap();
    std::fs::copy(dir.join("other-server.key"), dir.join("served.key")).unwrap();
    std::fs::write(
        dir.join("web.yml"),
        "tls_server_config:\n  cert_file: served.pem\n  key_file: served.key\n  \
         client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: other.pem\n",
    )
    .unwrap();
    Command::new("kill")
        .args(["-HUP", &p.child.id().to_string()])
        .status()
        .unwrap();
    let other_ca = tls.path("other.pem").display().to_string();
    let rotated = wait_for(Duration::from_secs(5), || {
        (curl(
            &p.url("/healthz"),
            &["--cacert", &other_ca, "--cert", &ocert, "--key", &okey],
        )
        .0 == 200)
            .then_some(())
    });
    assert!(
        rotated.is_some(),
        "rotated certificate not served: {}",
        p.log_text()
    );
    assert_eq!(
        curl(&p.url("/healthz"), &with_cert).0,
        0,
        "the old CA still works"
    );
}

#[test]
fn bad_web_configuration_stops_start_up_with_a_clear_error() {
    let dir = TempDir::new("webcfg-bad");
    let cases: [(&str, &str, &[&str]); 3] = [
        ("unknown key", "tls_config: {}\n", &[]),
        (
            "no --web-user-role",
            "basic_auth_users:\n  someone: $2y$10$abcdefghijklmnopqrstuv\n",
            &[],
        ),
        (
            "cannot read",
            "tls_server_config:\n  cert_file: missing.pem\n  key_file: missing.key\n",
            &[],
        ),
    ];
    for (expect, text, extra) in cases {
        let path = dir.0.join("web.yml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(BIN)
            .args(["--db-uri", "postgresql://nobody@127.0.0.1:1/none"])
            .args([
                "--web-listen-address",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .args(["--web-config-file", &path.display().to_string()])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(expect) || stderr.contains(&expect.replace("no ", "")),
            "{expect}: {stderr}"
        );
    }
}
