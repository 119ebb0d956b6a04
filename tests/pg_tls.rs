//! PostgreSQL over TLS: a private PostgreSQL with `ssl = on` and a server certificate signed by
//! a CA this test makes with the openssl CLI. promgres, configured through `--db-uri` as an
//! operator would, stores and reads back samples with `sslmode=verify-full`, `verify-ca` and
//! `require`, and every session it opens is encrypted (pg_stat_ssl); a second CA, a host name
//! the certificate does not carry and a server without TLS are refused at start-up, clearly.

mod common;

use argh::FromArgs;
use common::*;
use promgres::config::{self, Config};
use promgres::proto::{LabelMatcher, Query, ReadRequest, ReadResponse};
use promgres::server::Server;
use prost::Message;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A self-signed CA: `<name>.crt` and `<name>.key` in `dir`.
fn make_ca(dir: &Path, name: &str) -> PathBuf {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
            "-days",
            "2",
            "-subj",
            &format!("/CN=promgres test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    dir.join(format!("{name}.crt"))
}

/// The server's certificate, signed by `ca`, valid for localhost and 127.0.0.1 only.
fn make_server_cert(dir: &Path, ca: &str) -> (PathBuf, PathBuf) {
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\n\
         basicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\n\
         extendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &format!("{ca}.crt"),
            "-CAkey",
            &format!("{ca}.key"),
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "server.ext",
        ],
    );
    (dir.join("server.crt"), dir.join("server.key"))
}

/// Hands a file to the server's OS user (tests run as root; PostgreSQL runs as `postgres`
/// and wants its key private to itself).
fn give_to_server(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false);
    if root {
        let ok = Command::new("chown")
            .arg("postgres:")
            .arg(path)
            .status()
            .expect("chown");
        assert!(ok.success(), "chown postgres {}", path.display());
    }
}

/// Turns TLS on or off with ALTER SYSTEM and a reload, and waits until new sessions see it.
fn set_ssl(admin: &str, on: bool, cert: &Path, key: &Path) {
    let mut c = postgres::Client::connect(admin, postgres::NoTls).expect("admin session");
    // One statement each: ALTER SYSTEM cannot run in the implicit transaction of a batch.
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        format!("ALTER SYSTEM SET ssl = {}", if on { "on" } else { "off" }),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        c.batch_execute(&sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    let want = if on { "on" } else { "off" };
    let seen = wait_for(Duration::from_secs(15), || {
        let mut c = postgres::Client::connect(admin, postgres::NoTls).ok()?;
        let v: String = c.query_one("SHOW ssl", &[]).ok()?.get(0);
        (v == want).then_some(())
    });
    assert!(seen.is_some(), "the server did not turn ssl {want}");
}

/// promgres's configuration from its flags, as the binary makes it.
fn config_from(uri: &str) -> Result<Config, String> {
    let args = config::Args::from_args(&["promgres"], &["--db-uri", uri]).expect("flags");
    let mut config = config::from_args(args, |_| None)?;
    config.listen = "127.0.0.1:0".parse().expect("addr");
    config.compaction_delay = Duration::from_secs(3600);
    Ok(config)
}

fn start(uri: &str) -> Result<Server, String> {
    Server::start(&config_from(uri)?)
}

/// (sessions of promgres on `db`, how many of them are encrypted, their TLS versions).
fn promgres_sessions(admin: &mut postgres::Client, db: &str) -> (i64, i64, Vec<String>) {
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl),
                    coalesce(array_agg(DISTINCT s.version) FILTER (WHERE s.ssl), '{}')
               FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
              WHERE a.datname = $1 AND a.application_name LIKE 'promgres-%'",
            &[&db],
        )
        .expect("pg_stat_ssl");
    (row.get(0), row.get(1), row.get(2))
}

/// Writes one sample through promgres and reads it back through promgres's remote read.
fn write_and_read_back(server: &Server, metric: &str) {
    let t = now_ms() - 1_000;
    let req = write_request(vec![series(
        &[("__name__", metric), ("job", "tls")],
        &[(t, 42.5)],
    )]);
    let reply = post_write(server.addr(), &encode(&req));
    assert_eq!(reply.status, 204, "{}", reply.body);
    let read = ReadRequest {
        queries: vec![Query {
            start_timestamp_ms: t - 60_000,
            end_timestamp_ms: t + 60_000,
            matchers: vec![LabelMatcher {
                r#type: 0,
                name: "__name__".into(),
                value: metric.into(),
            }],
        }],
        accepted_response_types: vec![],
    };
    let body = snap::raw::Encoder::new()
        .compress_vec(&read.encode_to_vec())
        .expect("snappy");
    let r = exchange(
        server.addr(),
        "POST",
        "/read",
        &[
            ("Content-Encoding", "snappy"),
            ("Content-Type", "application/x-protobuf"),
            ("X-Prometheus-Remote-Read-Version", "0.1.0"),
        ],
        &body,
        None,
    )
    .expect("remote read");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&r.body)
        .expect("snappy response");
    let resp = ReadResponse::decode(raw.as_slice()).expect("ReadResponse");
    let samples: Vec<(i64, f64)> = resp.results[0]
        .timeseries
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| (x.timestamp, x.value)))
        .collect();
    assert_eq!(samples, vec![(t, 42.5)], "read back through promgres");
}

/// Starts promgres on `uri`, writes and reads a sample, and checks every session it holds
/// on the database is (or is not) encrypted.
fn serves(uri: &str, admin: &mut postgres::Client, db: &str, metric: &str, tls: bool) {
    let server = start(uri).unwrap_or_else(|e| panic!("promgres starts on {metric}: {e}"));
    write_and_read_back(&server, metric);
    let (sessions, encrypted, versions) = promgres_sessions(admin, db);
    assert!(sessions >= 3, "{metric}: only {sessions} promgres sessions");
    if tls {
        assert_eq!(encrypted, sessions, "{metric}: every session is TLS");
        assert!(
            versions.iter().all(|v| v.starts_with("TLSv1.")),
            "{versions:?}"
        );
    } else {
        assert_eq!(encrypted, 0, "{metric}: no session is TLS");
    }
    server.shutdown(Duration::from_secs(10));
}

#[test]
fn sslmode_and_sslrootcert_verify_the_server_and_refuse_what_does_not_verify() {
    let pg = ScratchPg::new("pg_tls");
    let dir = pg.dir.0.clone();
    make_ca(&dir, "ca");
    make_ca(&dir, "other-ca");
    let (cert, key) = make_server_cert(&dir, "ca");
    give_to_server(&cert, 0o644);
    give_to_server(&key, 0o600);
    let ca = dir.join("ca.crt");
    let other_ca = dir.join("other-ca.crt");
    set_ssl(&pg.admin_uri(), true, &cert, &key);

    let db = TestDb::on(&pg.admin_uri(), "tls");
    let mut admin = postgres::Client::connect(&pg.admin_uri(), postgres::NoTls).expect("admin");
    let port = pg.port;
    let name = db.name.clone();
    // trust authentication: the password is never used, but must never be printed either.
    let base = format!("postgresql://postgres:sekrit@127.0.0.1:{port}/{name}");
    let ca_s = ca.display().to_string();
    let other_s = other_ca.display().to_string();

    // verify-full: the chain and the name (127.0.0.1 is in the certificate).
    serves(
        &format!("{base}?sslmode=verify-full&sslrootcert={ca_s}"),
        &mut admin,
        &name,
        "tls_verify_full",
        true,
    );
    // verify-ca: the chain only, so a name the certificate does not carry is fine.
    serves(
        &format!(
            "postgresql://postgres@not-in-cert.invalid:{port}/{name}\
             ?hostaddr=127.0.0.1&sslmode=verify-ca&sslrootcert={ca_s}"
        ),
        &mut admin,
        &name,
        "tls_verify_ca",
        true,
    );
    // require: encrypted, not verified (libpq's meaning); key=value form.
    serves(
        &format!("host=127.0.0.1 port={port} user=postgres dbname={name} sslmode=require"),
        &mut admin,
        &name,
        "tls_require",
        true,
    );
    // An sslrootcert without sslmode: libpq's prefer, with the chain checked.
    serves(
        &format!("{base}?sslrootcert={ca_s}"),
        &mut admin,
        &name,
        "tls_rootcert_only",
        true,
    );
    // No sslmode: plain text, as before TLS support.
    serves(&base, &mut admin, &name, "tls_none", false);

    // A CA that did not sign the server's certificate: refused at start-up, in every mode
    // that verifies (require with an sslrootcert verifies the chain, as in libpq).
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = start(&format!("{base}?sslmode={mode}&sslrootcert={other_s}"))
            .err()
            .unwrap_or_else(|| panic!("{mode} with another CA must be refused"));
        assert!(
            e.contains("certificate could not be verified") && e.contains(&other_s),
            "{mode}: {e}"
        );
        assert!(!e.contains("sekrit"), "{e}");
    }
    // The binary says the same and exits 1.
    let listen = format!("127.0.0.1:{}", free_port());
    let mut child = Command::new(BIN)
        .args([
            "--db-uri",
            &format!("{base}?sslmode=verify-full&sslrootcert={other_s}"),
            "--web-listen-address",
            &listen,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn promgres");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("promgres kept running with an unverifiable server certificate");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr)
        .expect("stderr");
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("certificate could not be verified") && !stderr.contains("sekrit"),
        "{stderr}"
    );

    // verify-full with a host name the certificate does not carry.
    let e = start(&format!(
        "postgresql://postgres@not-in-cert.invalid:{port}/{name}\
         ?hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca_s}"
    ))
    .err()
    .expect("verify-full with a name not in the certificate must be refused");
    assert!(
        e.contains("does not name the host") && e.contains("not-in-cert.invalid"),
        "{e}"
    );

    // A missing root file is a start-up error naming it.
    let missing = dir.join("missing-ca.crt").display().to_string();
    let e = config_from(&format!("{base}?sslmode=verify-full&sslrootcert={missing}"))
        .expect_err("a missing sslrootcert must be refused");
    assert!(
        e.contains(&missing) && e.contains("sslrootcert") && !e.contains("sekrit"),
        "{e}"
    );

    // The server without TLS: require fails clearly, prefer falls back to plain text.
    set_ssl(&pg.admin_uri(), false, &cert, &key);
    let e = start(&format!("{base}?sslmode=require"))
        .err()
        .expect("require against ssl=off must fail");
    assert!(e.contains("does not support TLS"), "{e}");
    serves(
        &format!("{base}?sslmode=prefer"),
        &mut admin,
        &name,
        "tls_prefer_fallback",
        false,
    );
    drop(admin);
}
