//! Operations: `make install` lays out the binary, the systemd unit and the environment file
//! (PREFIX and DESTDIR honoured, an existing environment file kept), the unit passes
//! `systemd-analyze verify`, and `--version` names the commit it was built from.

mod common;

use common::*;
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_promgres");

fn make_install(destdir: &std::path::Path) {
    let out = Command::new("make")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "install",
            &format!("BIN={BIN}"),
            &format!("DESTDIR={}", destdir.display()),
            "PREFIX=/opt/promgres",
        ])
        .output()
        .expect("run make");
    assert!(
        out.status.success(),
        "make install failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn make_install_lays_out_binary_unit_and_settings() {
    let dir = TempDir::new("install");
    make_install(&dir.0);
    let bin = dir.0.join("opt/promgres/bin/promgres");
    assert!(bin.exists(), "binary installed");
    let unit =
        std::fs::read_to_string(dir.0.join("etc/systemd/system/promgres.service")).expect("unit");
    assert!(
        unit.contains("ExecStart=/opt/promgres/bin/promgres $PROMGRES_ARGS"),
        "{unit}"
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "DynamicUser=yes",
        "Restart=on-failure",
        "EnvironmentFile=-/etc/default/promgres",
    ] {
        assert!(unit.contains(hardening), "unit lacks {hardening}");
    }
    let env_file = dir.0.join("etc/default/promgres");
    assert!(std::fs::read_to_string(&env_file)
        .expect("env")
        .contains("PROMGRES_DB_URI="));
    // A second install keeps the operator's settings.
    std::fs::write(&env_file, "PROMGRES_DB_URI=postgresql://mine@db/metrics\n").expect("edit");
    make_install(&dir.0);
    assert_eq!(
        std::fs::read_to_string(&env_file).expect("env"),
        "PROMGRES_DB_URI=postgresql://mine@db/metrics\n"
    );
}

#[test]
fn the_unit_passes_systemd_analyze_verify() {
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/promgres.service"
    ))
    .expect("unit");
    // verify checks that ExecStart exists: point it at this build.
    let path = dir.0.join("promgres.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/promgres", BIN)).expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd) must be installed");
    assert!(
        out.status.success(),
        "systemd-analyze verify:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn version_names_the_commit() {
    let out = Command::new(BIN).arg("--version").output().expect("run");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.starts_with(&format!("promgres {}", env!("CARGO_PKG_VERSION"))),
        "{text}"
    );
    // Built through make, the commit is known (make exports it to cargo).
    if let Some(commit) = option_env!("PROMGRES_GIT_COMMIT") {
        assert!(text.contains(commit), "{text} should name {commit}");
    }
}
