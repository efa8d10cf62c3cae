//! Idle and slow clients against a real `ferric serve` process (issue 17,
//! item 2): 1,100 idle sockets under `ulimit -n 1024` do not take the API
//! down, a body that stops arriving is cut off, idle keep-alive connections
//! and connections that never send a request are closed.

use crate::helpers::Serve;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// `ferric serve` on a fresh SQLite file, under `prlimit --nofile=N:N`
/// when `nofile` is given (soft and hard: it cannot raise it back).
fn start(dir: &Path, nofile: Option<u64>, env: &[(&str, &str)]) -> Serve {
    let log = dir.join("serve.log");
    let mut cmd = match nofile {
        Some(n) => {
            let mut c = Command::new("prlimit");
            c.arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_ferric"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_ferric")),
    };
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("FERRIC_") || n == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd.args(["serve", "--host", "conn-test"])
        .env(
            "FERRIC_DATABASE__URL",
            format!("sqlite://{}", dir.join("ferric.db").display()),
        )
        .env("FERRIC_API__PORT", "0")
        .env("FERRIC_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    Serve::spawn(cmd, log)
}

/// The API's socket address, once logged.
fn addr(serve: &mut Serve) -> SocketAddr {
    serve.api().parse().unwrap()
}

/// How many files the server has open.
fn open_fds(serve: &Serve) -> usize {
    std::fs::read_dir(format!("/proc/{}/fd", serve.child.id()))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// `GET /v1` on a fresh connection: the status line and how long it took
/// (connect included).
fn get_v1(addr: SocketAddr, within: Duration) -> (String, Duration) {
    let started = Instant::now();
    let mut s = TcpStream::connect_timeout(&addr, within).unwrap();
    s.set_read_timeout(Some(within)).unwrap();
    write!(
        s,
        "GET /v1 HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    let status = reply.lines().next().unwrap_or_default().to_string();
    (status, started.elapsed())
}

/// Read until the server closes (or `within` passes): what came, and when
/// the connection ended (None: still open).
fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while started.elapsed() < within {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        match s.read(&mut buf) {
            Ok(0) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                return (
                    String::from_utf8_lossy(&got).into(),
                    Some(started.elapsed()),
                )
            }
        }
    }
    (String::from_utf8_lossy(&got).into(), None)
}

/// The issue's reproduction: `ulimit -n 1024`, 1,100 idle TCP connections
/// (nothing sent), then `GET /v1` must answer within 45 s, with the default
/// timeouts. Before: `accept error: Too many open files` for as long as the
/// sockets stayed open.
#[test]
fn idle_connections_do_not_take_the_api_down() {
    // This process holds 1,100 sockets too.
    let ours = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(
        ours >= 1_300,
        "the test needs ~1,300 open files, has {ours}"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut serve = start(dir.path(), Some(1024), &[]);
    let addr = addr(&mut serve);
    let (status, _) = get_v1(addr, Duration::from_secs(10));
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let fds_before = open_fds(&serve);

    let mut idle = Vec::new();
    let opened = Instant::now();
    for _ in 0..1_100 {
        // Past the server's limit they wait in the listen backlog; connect
        // still completes in the kernel.
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connection {} failed: {e}", idle.len() + 1),
        }
    }
    eprintln!(
        "opened {} idle connections in {:?}",
        idle.len(),
        opened.elapsed()
    );
    // Let the server accept what it will.
    std::thread::sleep(Duration::from_secs(2));
    let fds_full = open_fds(&serve);

    let (status, took) = get_v1(addr, Duration::from_secs(45));
    let log = serve.log();
    eprintln!(
        "GET /v1 with 1,100 idle sockets: {status:?} in {took:?}; server fds: {fds_before} \
         before, {fds_full} with the sockets (limit 1024)"
    );
    assert!(status.starts_with("HTTP/1.1 200"), "{status}\n{log}");
    assert!(took < Duration::from_secs(45), "took {took:?}");
    assert!(fds_full < 1024, "{fds_full} open files");
    assert!(
        log.contains("API connection limit reached"),
        "no log line for the limit:\n{log}"
    );
    assert!(
        !log.contains("Too many open files"),
        "the server ran out of files:\n{log}"
    );
    assert!(log.contains("api_max_connections=888"), "{log}");
    drop(idle);
}

/// A request declaring a 100-byte body and sending 2 bytes is answered
/// 408 and closed once `api.body_timeout` passes (was held ≥ 40 s); a
/// connection that sends nothing and an idle keep-alive connection are
/// closed after `api.header_timeout`; a body that arrives in time works.
#[test]
fn slow_and_idle_clients_are_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = start(
        dir.path(),
        None,
        &[
            ("FERRIC_API__HEADER_TIMEOUT", "1s"),
            ("FERRIC_API__BODY_TIMEOUT", "2s"),
        ],
    );
    let addr = addr(&mut serve);
    let bound = Duration::from_secs(10);

    // The slow body: 2 of 100 bytes.
    let mut slow = TcpStream::connect(addr).unwrap();
    write!(
        slow,
        "POST /v1/nodes HTTP/1.1\r\nHost: {addr}\r\nX-OpenStack-Ironic-API-Version: 1.80\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\""
    )
    .unwrap();
    let (reply, closed) = read_until_closed(&mut slow, bound);
    eprintln!("slow body: closed after {closed:?}");
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        reply.contains("Timed out reading the request body"),
        "{reply}"
    );
    let closed = closed.expect("the slow-body connection stayed open");
    assert!(
        closed >= Duration::from_millis(1_500) && closed < Duration::from_secs(5),
        "{closed:?}"
    );

    // Nothing sent at all: closed after the header timeout.
    let mut silent = TcpStream::connect(addr).unwrap();
    let (reply, closed) = read_until_closed(&mut silent, bound);
    eprintln!("silent connection: closed after {closed:?}");
    let closed = closed.expect("the silent connection stayed open");
    assert!(closed < Duration::from_secs(4), "{closed:?} {reply}");

    // Half a request head: the same.
    let mut partial = TcpStream::connect(addr).unwrap();
    write!(partial, "GET /v1 HTTP/1.1\r\nHost: x\r\n").unwrap();
    let (_, closed) = read_until_closed(&mut partial, bound);
    let closed = closed.expect("the half-head connection stayed open");
    assert!(closed < Duration::from_secs(4), "{closed:?}");

    // Keep-alive: a request answered, then idle → closed.
    let mut keep = TcpStream::connect(addr).unwrap();
    write!(keep, "GET /v1 HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let (reply, closed) = read_until_closed(&mut keep, bound);
    eprintln!("idle keep-alive connection: closed after {closed:?}");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let closed = closed.expect("the idle keep-alive connection stayed open");
    assert!(
        closed >= Duration::from_millis(500) && closed < Duration::from_secs(4),
        "{closed:?}"
    );

    // A body that arrives in time, in two parts, is served.
    let body = r#"{"name": "in-time", "driver": "fake-hardware"}"#;
    let mut ok = TcpStream::connect(addr).unwrap();
    write!(
        ok,
        "POST /v1/nodes HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         X-OpenStack-Ironic-API-Version: 1.80\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..10]
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    ok.write_all(&body.as_bytes()[10..]).unwrap();
    let (reply, _) = read_until_closed(&mut ok, bound);
    assert!(reply.starts_with("HTTP/1.1 201"), "{reply}");
}
