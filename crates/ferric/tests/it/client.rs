//! The real binary: API authentication (SPEC §8) and the `ferric node`
//! client commands (SPEC §9) against a spawned `ferric serve`.

use crate::helpers::{ferric, http, output, success, Serve};
use std::path::Path;
use std::process::{Command, Output, Stdio};

const TOKEN: &str = "t0ken-for-tests";

/// `ferric serve` on a fresh SQLite file in `dir`, with extra args and env.
fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
    let mut cmd = ferric();
    cmd.args(["serve", "--host", "client-test", "--api-port", "0"])
        .args(args)
        .env(
            "FERRIC_DATABASE__URL",
            format!("sqlite://{}", dir.join("ferric.db").display()),
        );
    for (k, v) in env {
        cmd.env(k, v);
    }
    Serve::spawn(cmd, dir.join("serve.log"))
}

/// `ferric node ARGS` against `api`, with `token` if any.
fn node(api: &str, token: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = ferric();
    cmd.arg("node")
        .args(args)
        .env("FERRIC_URL", format!("http://{api}"));
    if let Some(t) = token {
        cmd.env("FERRIC_TOKEN", t);
    }
    cmd
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn show(api: &str, name: &str) -> serde_json::Value {
    serde_json::from_str(&success(&mut node(
        api,
        Some(TOKEN),
        &["show", name, "--json"],
    )))
    .unwrap()
}

#[test]
fn serve_refuses_a_non_loopback_address_without_auth() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ferric.db");
    let out = output(
        ferric()
            .args(["serve", "--api-host", "0.0.0.0", "--api-port", "0"])
            .env("FERRIC_DATABASE__URL", format!("sqlite://{}", db.display()))
            .stdin(Stdio::null()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("api.host \"0.0.0.0\" is not a loopback address")
            && err.contains("api.auth")
            && err.contains("--insecure-no-auth"),
        "{err}"
    );
    assert!(!db.exists(), "nothing may start: {err}");

    // Token auth named but no token: also refused before anything starts.
    let out = output(
        ferric()
            .args(["serve", "--api-port", "0"])
            .env("FERRIC_DATABASE__URL", format!("sqlite://{}", db.display()))
            .env("FERRIC_API__AUTH", "token")
            .stdin(Stdio::null()),
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("api.token"), "{}", stderr(&out));
    assert!(!db.exists());
}

#[test]
fn config_show_masks_the_api_token() {
    let out = success(
        ferric()
            .args(["config", "show"])
            .env("FERRIC_API__AUTH", "token")
            .env("FERRIC_API__TOKEN", "hunter2-secret"),
    );
    assert!(!out.contains("hunter2-secret"), "{out}");
    assert!(
        out.contains("token = \"****\"") && out.contains("auth = \"token\""),
        "{out}"
    );
}

#[test]
fn basic_auth_reads_the_htpasswd_file() {
    let dir = tempfile::tempdir().unwrap();
    let htpasswd = dir.path().join("htpasswd");
    let hash = bcrypt::hash("secret", 4).unwrap();
    std::fs::write(&htpasswd, format!("# users\nadmin:{hash}\n")).unwrap();
    let mut serve = start(
        dir.path(),
        &[],
        &[
            ("FERRIC_API__AUTH", "basic"),
            ("FERRIC_API__HTPASSWD_FILE", htpasswd.to_str().unwrap()),
        ],
    );
    let api = serve.api();
    let reply = http(&api, "GET", "/v1/nodes", None);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert!(
        reply
            .to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{reply}"
    );
    // The version document stays public.
    assert!(http(&api, "GET", "/v1", None).starts_with("HTTP/1.1 200"));
    // admin:secret and admin:wrong.
    let ok = get_with(&api, "/v1/nodes", "Authorization: Basic YWRtaW46c2VjcmV0");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let bad = get_with(&api, "/v1/nodes", "Authorization: Basic YWRtaW46d3Jvbmc=");
    assert!(bad.starts_with("HTTP/1.1 401"), "{bad}");
    // The client with a user and password.
    let list = || {
        let mut cmd = node(&api, None, &["list", "--json"]);
        cmd.env("FERRIC_USER", "admin");
        cmd
    };
    let out = success(list().env("FERRIC_PASSWORD", "secret"));
    assert!(out.contains("\"nodes\""), "{out}");
    let out = output(list().env("FERRIC_PASSWORD", "wrong"));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("HTTP 401"), "{}", stderr(&out));
}

/// `GET path` with one extra header line.
fn get_with(addr: &str, path: &str, header: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{header}\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

#[test]
fn token_auth_and_the_node_commands() {
    let dir = tempfile::tempdir().unwrap();
    // A configured auth lifts the loopback-only rule.
    let mut serve = start(
        dir.path(),
        &["--api-host", "0.0.0.0"],
        &[("FERRIC_API__AUTH", "token"), ("FERRIC_API__TOKEN", TOKEN)],
    );
    let api = serve.api();

    // Unauthenticated: 401, from the API and through the client.
    let reply = http(&api, "GET", "/v1/nodes", None);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    let out = output(&mut node(&api, None, &["list"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("requires authentication") && stderr(&out).contains("HTTP 401"),
        "{}",
        stderr(&out)
    );
    let out = output(&mut node(&api, Some("wrong"), &["list"]));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // With the token: the lifecycle.
    let created = success(&mut node(
        &api,
        Some(TOKEN),
        &[
            "create",
            "--name",
            "c1",
            "--extra",
            "rack=r7",
            "--driver-info",
            "ipmi_password=pw",
            "--json",
        ],
    ));
    let created: serde_json::Value = serde_json::from_str(&created).unwrap();
    assert_eq!(created["provision_state"], "enroll");
    assert_eq!(created["extra"]["rack"], "r7");
    assert_eq!(created["driver_info"]["ipmi_password"], "******");
    let uuid = created["uuid"].as_str().unwrap().to_string();

    let table = success(&mut node(&api, Some(TOKEN), &["list"]));
    assert!(
        table.starts_with("UUID") && table.contains(&uuid) && table.contains("enroll"),
        "{table}"
    );

    for (verb, state, transient) in [
        ("manage", "manageable", "verifying"),
        ("provide", "available", "cleaning"),
        ("deploy", "active", "deploying"),
    ] {
        let out = output(&mut node(
            &api,
            Some(TOKEN),
            &[verb, "c1", "--wait", "--timeout", "60s"],
        ));
        let err = stderr(&out);
        assert!(out.status.success(), "{verb}: {err}");
        // Progress: the transient state, then the stable one, on stderr.
        assert!(
            err.contains(&format!("node c1: {transient} → {state}"))
                && err.contains(&format!("node c1: {state} (+")),
            "{verb}: {err}"
        );
        assert_eq!(show(&api, "c1")["provision_state"], state);
    }

    success(&mut node(
        &api,
        Some(TOKEN),
        &["power", "off", "c1", "--wait"],
    ));
    assert_eq!(show(&api, &uuid)["power_state"], "power off");
    success(&mut node(
        &api,
        Some(TOKEN),
        &["power", "on", "c1", "--wait"],
    ));
    assert_eq!(show(&api, &uuid)["power_state"], "power on");

    success(&mut node(
        &api,
        Some(TOKEN),
        &["maintenance", "set", "c1", "--reason", "disk"],
    ));
    let n = show(&api, "c1");
    assert_eq!(
        (n["maintenance"].clone(), n["maintenance_reason"].clone()),
        (true.into(), "disk".into())
    );
    success(&mut node(
        &api,
        Some(TOKEN),
        &["maintenance", "unset", "c1"],
    ));
    assert_eq!(show(&api, "c1")["maintenance"], false);

    // An invalid transition: exit 1 with the API's message; nothing changes.
    let out = output(&mut node(&api, Some(TOKEN), &["manage", "c1"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("can not be performed") && stderr(&out).contains("HTTP 400"),
        "{}",
        stderr(&out)
    );
    assert_eq!(show(&api, "c1")["provision_state"], "active");

    let out = output(&mut node(
        &api,
        Some(TOKEN),
        &["undeploy", "c1", "--wait", "--timeout", "60s"],
    ));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(show(&api, "c1")["provision_state"], "available");

    // A failing deploy: --wait exits 1 with last_error.
    let failing = success(&mut node(
        &api,
        Some(TOKEN),
        &[
            "create",
            "--name",
            "bad",
            "--driver-info",
            "fake_fail_deploy=disk on fire",
            "--json",
        ],
    ));
    assert!(failing.contains("\"bad\""), "{failing}");
    success(&mut node(&api, Some(TOKEN), &["manage", "bad", "--wait"]));
    success(&mut node(&api, Some(TOKEN), &["provide", "bad", "--wait"]));
    let out = output(&mut node(
        &api,
        Some(TOKEN),
        &["deploy", "bad", "--wait", "--timeout", "60s"],
    ));
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("deploy failed") && stderr(&out).contains("disk on fire"),
        "{}",
        stderr(&out)
    );

    // Delete: gone from the list.
    success(&mut node(&api, Some(TOKEN), &["delete", "c1"]));
    let out = output(&mut node(&api, Some(TOKEN), &["show", "c1"]));
    assert_eq!(out.status.code(), Some(1));
    let listed = success(&mut node(&api, Some(TOKEN), &["list", "--json"]));
    assert!(!listed.contains(&uuid), "{listed}");

    // Unknown node: exit 1, Ironic's message.
    let out = output(&mut node(&api, Some(TOKEN), &["show", "nope"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Node nope could not be found") && stderr(&out).contains("404"),
        "{}",
        stderr(&out)
    );
}
