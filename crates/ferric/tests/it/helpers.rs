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

/// One runtime for the store calls of the multi-process tests (chaos,
/// outage, frozen), which read the database between steps from plain test
/// threads. A pool's connections belong to the runtime that opened them;
/// one opened in a throwaway runtime that was dropped fails later with "A
/// Tokio 1.x context was found, but it is being shutdown" (seen in CI).
pub fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("test runtime")
    })
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

/// A `ferric serve` child process whose stderr goes to `log`; killed if the
/// test ends without reaping it.
pub struct Serve {
    pub child: ChildGuard,
    pub log: std::path::PathBuf,
}

impl Serve {
    /// Spawn `cmd` (a `ferric serve ...` command the caller set up) with no
    /// stdin and stdout, its stderr into `log`.
    pub fn spawn(mut cmd: std::process::Command, log: std::path::PathBuf) -> Serve {
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Serve {
            child: ChildGuard(Some(child)),
            log,
        }
    }

    /// `ferric serve --host HOST` on `url`, the API on a free port, with the
    /// fast cluster timings of the multi-process tests (heartbeat every
    /// `beat`, dead after `dead`, recovery every 200 ms, wait states checked
    /// every 300 ms) and `env` on top; its log is `dir/HOST.log`.
    pub fn conductor(
        url: &str,
        host: &str,
        dir: &std::path::Path,
        beat: &str,
        dead: &str,
        env: &[(&str, &str)],
    ) -> Serve {
        let mut cmd = ferric();
        cmd.args(["serve", "--host", host])
            .env("FERRIC_DATABASE__URL", url)
            .env("FERRIC_API__PORT", "0")
            .env("FERRIC_CONDUCTOR__HEARTBEAT_INTERVAL", beat)
            .env("FERRIC_CONDUCTOR__HEARTBEAT_TIMEOUT", dead)
            .env("FERRIC_CONDUCTOR__RECOVERY_INTERVAL", "200ms")
            .env("FERRIC_CONDUCTOR__CHECK_PROVISION_STATE_INTERVAL", "300ms")
            .env("FERRIC_LOG", "info");
        for (k, v) in env {
            cmd.env(k, v);
        }
        Serve::spawn(cmd, dir.join(format!("{host}.log")))
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The API address to connect to (0.0.0.0 → 127.0.0.1), once logged.
    pub fn api(&mut self) -> String {
        let mut addr = None;
        wait_until("the API address in the log", || {
            if let Some(status) = self.child.try_wait() {
                panic!("serve exited early with {status}:\n{}", self.log());
            }
            addr = api_addr_in_log(&self.log());
            addr.is_some()
        });
        addr.unwrap().replace("0.0.0.0", "127.0.0.1")
    }
}
