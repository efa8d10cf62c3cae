//! Shared helpers: running the built binary, temp databases, bounded waits.

use ferric_store::testing::{Engine, TestStore};
use std::path::Path;
use std::process::{Child, Command, Output};
use std::sync::Once;
use std::time::{Duration, Instant};

/// Upper bound of every readiness wait. Generous: a loaded 2-core CI
/// machine is slow, and a wait that ends early costs nothing.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Initialise logging once; printed only with `TEST_LOG=1`.
pub fn init_tracing() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = ferric::telemetry::init(ferric::telemetry::LogFormat::Text, "debug");
        }
    });
}

/// The built `ferric` binary, with every `FERRIC_*` and `RUST_LOG` variable
/// of the test environment removed so that only what a test sets applies.
pub fn ferric() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferric"));
    for (name, _) in std::env::vars_os() {
        let n = name.to_string_lossy();
        if n.starts_with("FERRIC_") || n == "RUST_LOG" {
            cmd.env_remove(&name);
        }
    }
    cmd
}

/// Run to completion and return the output.
pub fn output(cmd: &mut Command) -> Output {
    match cmd.output() {
        Ok(o) => o,
        Err(e) => panic!("cannot run {cmd:?}: {e}"),
    }
}

/// Run to completion; panic with stdout and stderr unless it exits 0.
pub fn success(cmd: &mut Command) -> String {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A SQLite URL for a fresh file in `dir`.
pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("ferric.db").display())
}

/// A URL a separate process can open to reach the same database as `ts`:
/// for PostgreSQL, the test's own schema goes into `search_path`.
pub fn url_for(ts: &TestStore) -> String {
    match (&ts.engine, &ts.schema) {
        (Engine::Postgres, Some(schema)) => {
            let sep = if ts.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}options=-c%20search_path%3D{schema}", ts.url)
        }
        _ => ts.url.clone(),
    }
}

/// Poll `check` until it is true; panic after `READY_TIMEOUT`.
pub fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Async [`wait_until`].
pub async fn wait_until_async<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(
            start.elapsed() < READY_TIMEOUT,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A child process killed (SIGKILL) if the test ends without reaping it.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn id(&self) -> u32 {
        self.0.as_ref().map(Child::id).unwrap_or_default()
    }

    /// The exit status if the process has ended.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.0.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Wait (bounded) for the process to exit.
    pub fn wait_bounded(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.try_wait() {
                self.0 = None;
                return status;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "process did not exit in time"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = self.0.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Send a signal with the `kill` command.
pub fn signal(pid: u32, sig: &str) {
    success(Command::new("kill").args([format!("-{sig}"), pid.to_string()].iter()));
}

/// A minimal HTTP/1.1 request over a plain socket; returns the whole reply
/// (status line, headers, body). Enough for tests that must not depend on a
/// client library.
pub fn http(addr: &str, method: &str, path: &str, json: Option<&str>) -> String {
    http_at(addr, method, path, json, None)
}

/// [`http`] at an Ironic API microversion (`X-OpenStack-Ironic-API-Version`).
pub fn http_at(
    addr: &str,
    method: &str,
    path: &str,
    json: Option<&str>,
    version: Option<&str>,
) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = json.unwrap_or("");
    let version = version
        .map(|v| format!("X-OpenStack-Ironic-API-Version: {v}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{version}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    reply
}

/// The API address a `ferric serve` logged (`api=http://ADDR`).
pub fn api_addr_in_log(log: &str) -> Option<String> {
    log.split("api=http://")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|a| a.trim_matches('"').to_string())
}
