//! A PostgreSQL outage longer than heartbeat_timeout with two healthy
//! conductors (issue 17, item 3): both fence themselves while they cannot
//! heartbeat, and when the database comes back neither fails the other's
//! deploys ("conductor c1 went offline" was the bug). The outage is a TCP
//! proxy between the conductors and PostgreSQL that the test cuts: the
//! machine's PostgreSQL server is never stopped.

use crate::helpers::{ferric, http_at, rt, success, url_for, wait_until, Serve};
use ferric_core::ProvisionState;
use ferric_store::testing::{Engine, TestStore};
use ferric_store::{NodeIdent, Store};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A TCP proxy to `upstream` that can be cut (every connection closed, new
/// ones closed at once) and restored.
struct Proxy {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let thread = {
            let (cut, stop, open) = (cut.clone(), stop.clone(), open.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let client = match listener.accept() {
                        Ok((c, _)) => c,
                        Err(_) => {
                            std::thread::sleep(Duration::from_millis(10));
                            continue;
                        }
                    };
                    if cut.load(Ordering::SeqCst) {
                        let _ = client.shutdown(Shutdown::Both);
                        continue;
                    }
                    let _ = client.set_nonblocking(false);
                    let Ok(server) = TcpStream::connect(upstream) else {
                        continue;
                    };
                    let mut held = open.lock().unwrap();
                    held.push(client.try_clone().unwrap());
                    held.push(server.try_clone().unwrap());
                    drop(held);
                    for (mut from, mut to) in [
                        (client.try_clone().unwrap(), server.try_clone().unwrap()),
                        (server, client),
                    ] {
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut from, &mut to);
                            let _ = from.shutdown(Shutdown::Both);
                            let _ = to.shutdown(Shutdown::Both);
                        });
                    }
                }
            })
        };
        Proxy {
            addr,
            cut,
            stop,
            open,
            thread: Some(thread),
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for s in self.open.lock().unwrap().drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// A beat every 700 ms against recovery passes every 200 ms: after the
// outage a peer's recovery runs before this one beats again.
fn start(url: &str, host: &str, dir: &Path) -> Serve {
    Serve::conductor(url, host, dir, "700ms", "2s", &[])
}

fn node(store: &dyn Store, name: &str) -> ferric_core::Node {
    rt().block_on(store.get_node(&NodeIdent::Name(name.into())))
        .unwrap()
}

/// The deploy step's length: the outage falls inside it.
const DEPLOY_MS: u64 = 9_000;

fn deploy(api: &str, name: &str) {
    let body = format!(
        r#"{{"name": "{name}", "driver": "fake-hardware", "driver_info": {{"fake_deploy_delay_ms": {DEPLOY_MS}}}}}"#
    );
    let created = http_at(api, "POST", "/v1/nodes", Some(&body), Some("1.10"));
    assert!(created.starts_with("HTTP/1.1 201"), "{created}");
    let deploy = http_at(
        api,
        "PUT",
        &format!("/v1/nodes/{name}/states/provision"),
        Some(r#"{"target": "active"}"#),
        Some("1.10"),
    );
    assert!(deploy.starts_with("HTTP/1.1 202"), "{deploy}");
}

#[test]
fn database_outage_longer_than_heartbeat_timeout_fails_no_healthy_deploy_postgres() {
    let Some(ts) = rt().block_on(TestStore::open(Engine::Postgres)) else {
        return;
    };
    let direct = url_for(&ts);
    success(
        ferric()
            .args(["db", "migrate"])
            .env("FERRIC_DATABASE__URL", &direct),
    );
    // postgres://user@HOST:PORT/db?... → the proxy's address.
    let after_at = direct.split_once('@').unwrap().1;
    let hostport = after_at.split('/').next().unwrap();
    let upstream = hostport.to_socket_addrs().unwrap().next().unwrap();
    let proxy = Proxy::start(upstream);
    let url = direct.replacen(hostport, &proxy.addr.to_string(), 1);
    let store = ts.store.clone();
    let dir = tempfile::tempdir().unwrap();
    let mut c1 = start(&url, "outage-c1", dir.path());
    let mut c2 = start(&url, "outage-c2", dir.path());
    let (api1, api2) = (c1.api(), c2.api());
    let nodes = [
        ("n1", "outage-c1", &api1),
        ("n2", "outage-c1", &api1),
        ("n3", "outage-c2", &api2),
        ("n4", "outage-c2", &api2),
    ];
    for (name, _, api) in &nodes {
        deploy(api, name);
    }
    wait_until("every deploy to be in its long step", || {
        nodes.iter().all(|(name, holder, _)| {
            let n = node(&*store, name);
            n.provision_state == ProvisionState::Deploying
                && n.reservation.is_some_and(|r| r.holder == *holder)
                && n.deploy_step.get("step").and_then(|s| s.as_str()) == Some("deploy")
        })
    });
    std::thread::sleep(Duration::from_millis(300));

    // The outage: 3.5 s against a 2 s heartbeat timeout.
    let outage = Duration::from_millis(3_500);
    proxy.cut();
    let cut_at = Instant::now();
    std::thread::sleep(outage);
    let fenced = [c1.log(), c2.log()]
        .iter()
        .all(|log| log.contains("fenced (taking no locks"));
    proxy.restore();
    eprintln!("outage {:?}", cut_at.elapsed());
    assert!(
        fenced,
        "a conductor did not fence itself:\n{}\n{}",
        c1.log(),
        c2.log()
    );

    // Back: both beat again; every deploy finishes on its own conductor,
    // none is failed as "went offline".
    wait_until("both conductors to heartbeat again", || {
        c1.log().contains("heartbeat restored") && c2.log().contains("heartbeat restored")
    });
    wait_until("every deploy to finish", || {
        nodes.iter().all(|(name, holder, _)| {
            let n = node(&*store, name);
            assert!(
                matches!(
                    n.provision_state,
                    ProvisionState::Deploying | ProvisionState::Active
                ),
                "{name}: {:?} {:?}\n{}\n{}",
                n.provision_state,
                n.last_error,
                c1.log(),
                c2.log()
            );
            if n.provision_state == ProvisionState::Deploying {
                assert!(
                    n.reservation.as_ref().is_some_and(|r| r.holder == *holder),
                    "{name} lost its holder's lock: {:?}",
                    n.reservation
                );
            }
            n.provision_state == ProvisionState::Active
        })
    });
    eprintln!("every deploy finished {:?} after the cut", cut_at.elapsed());
    drop(c1);
    drop(c2);
    drop(proxy);
    rt().block_on(ts.cleanup());
}
