//! `ferric bench ports`: N nodes with one port each; the full paginated
//! `GET /v1/ports/detail` walk over real HTTP (the API served in process on
//! 127.0.0.1, following `next` links as clients do) beside the same walk
//! through `Store::list_resources` without HTTP (issue 13: port lists at
//! 100,000 nodes).

use ferric_conductor::{ConductorConfig, LogSink, TaskError, TaskManager};
use ferric_core::NewNode;
use ferric_store::{
    ConductorInfo, NewResource, ResourceKind, ResourceQuery, ResourceSort, SqlStore, Store,
    StoreError,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

/// What `ferric bench ports` runs.
#[derive(Debug, Clone)]
pub struct PortsBenchParams {
    /// Nodes, each with one port.
    pub nodes: usize,
    /// Page size of both walks (Ironic's max_limit is 1000).
    pub page: u32,
    /// Concurrent port creators.
    pub writers: usize,
}

/// One `ferric bench ports` result.
#[derive(Debug, Clone, Serialize)]
pub struct PortsBenchReport {
    pub bench: &'static str,
    pub backend: ferric_store::Backend,
    pub nodes: usize,
    pub ports: usize,
    pub page: u32,
    /// Node enrolment through `Store::create_nodes`.
    pub enroll_nodes_per_s: f64,
    /// Port creation through `Store::create_resource`, one transaction each
    /// (revision and change-feed entry included), `writers` at a time.
    pub create_ports_per_s: f64,
    /// The full walk through `Store::list_resources` (default order:
    /// created_at, uuid), page by page with a marker.
    pub store_list_s: f64,
    pub store_list_ports: usize,
    /// The full `GET /v1/ports/detail` walk over HTTP (latest microversion),
    /// following `next`.
    pub http_detail_list_s: f64,
    pub http_detail_ports: usize,
    pub http_pages: usize,
    /// `http_detail_list_s / store_list_s`.
    pub http_over_store: f64,
}

fn bench_err(what: impl std::fmt::Display) -> TaskError {
    TaskError::Store(StoreError::Invalid(format!("ports bench: {what}")))
}

/// Run the benchmark on a fresh `store`.
pub async fn run_ports_bench(
    store: Arc<SqlStore>,
    p: PortsBenchParams,
) -> Result<PortsBenchReport, TaskError> {
    let host = "bench-ports";
    store
        .register_conductor(&ConductorInfo {
            hostname: host.into(),
            conductor_group: String::new(),
            drivers: vec!["fake-hardware".into()],
        })
        .await?;
    let uuids: Vec<Uuid> = (0..p.nodes).map(|_| Uuid::new_v4()).collect();
    let started = Instant::now();
    for chunk in uuids.chunks(1_000) {
        let batch = chunk
            .iter()
            .map(|u| NewNode {
                uuid: Some(*u),
                driver: "fake-hardware".into(),
                ..Default::default()
            })
            .collect();
        store.create_nodes(batch).await?;
    }
    let enroll_s = started.elapsed().as_secs_f64();

    // One port per node, `writers` creators over disjoint slices.
    let started = Instant::now();
    let uuids = Arc::new(uuids);
    let writers = p.writers.max(1);
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        let uuids = uuids.clone();
        tasks.push(tokio::spawn(async move {
            for i in (w..uuids.len()).step_by(writers) {
                let mac = format!(
                    "52:54:{:02x}:{:02x}:{:02x}:{:02x}",
                    (i >> 24) & 0xff,
                    (i >> 16) & 0xff,
                    (i >> 8) & 0xff,
                    i & 0xff
                );
                let mut body = serde_json::Map::new();
                body.insert("pxe_enabled".into(), serde_json::json!(true));
                body.insert("extra".into(), serde_json::json!({"bench": i}));
                store
                    .create_resource(
                        ResourceKind::Port,
                        NewResource {
                            node: Some(uuids[i]),
                            key: Some(mac),
                            body,
                            ..Default::default()
                        },
                    )
                    .await?;
            }
            Ok::<(), StoreError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(bench_err)??;
    }
    let create_s = started.elapsed().as_secs_f64();

    // The store's own walk.
    let started = Instant::now();
    let (mut marker, mut store_seen) = (None, 0);
    loop {
        let page = store
            .list_resources(&ResourceQuery {
                marker,
                limit: Some(p.page),
                sort: ResourceSort::CreatedAt,
                ..ResourceQuery::all(ResourceKind::Port)
            })
            .await?;
        store_seen += page.len();
        if page.len() < p.page as usize {
            break;
        }
        marker = page.last().map(|r| r.uuid);
    }
    let store_list_s = started.elapsed().as_secs_f64();

    // The API in process, over real HTTP.
    let config = ConductorConfig {
        host: host.into(),
        ..Default::default()
    };
    let tm = TaskManager::new(store.clone(), config, Arc::new(LogSink));
    let state = ferric_api::ApiState::new(tm);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(bench_err)?;
    let base = format!("http://{}", listener.local_addr().map_err(bench_err)?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(ferric_api::serve(listener, state, async move {
        let _ = stop_rx.await;
    }));
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut url = format!("{base}/v1/ports/detail?limit={}", p.page);
    let (mut http_seen, mut pages) = (0, 0);
    loop {
        let resp = http
            .get(&url)
            .header("X-OpenStack-Ironic-API-Version", "latest")
            .send()
            .await
            .map_err(bench_err)?;
        if !resp.status().is_success() {
            return Err(bench_err(format!("{url}: {}", resp.status())));
        }
        let body: serde_json::Value = resp.json().await.map_err(bench_err)?;
        pages += 1;
        http_seen += body["ports"].as_array().map_or(0, Vec::len);
        match body["next"].as_str() {
            Some(next) => url = next.to_string(),
            None => break,
        }
    }
    let http_s = started.elapsed().as_secs_f64();
    let _ = stop_tx.send(());
    let _ = server.await;
    if store_seen != p.nodes || http_seen != p.nodes {
        return Err(bench_err(format!(
            "walks saw {store_seen} (store) and {http_seen} (HTTP) of {} ports",
            p.nodes
        )));
    }
    Ok(PortsBenchReport {
        bench: "ports",
        backend: store.backend(),
        nodes: p.nodes,
        ports: p.nodes,
        page: p.page,
        enroll_nodes_per_s: p.nodes as f64 / enroll_s.max(1e-9),
        create_ports_per_s: p.nodes as f64 / create_s.max(1e-9),
        store_list_s,
        store_list_ports: store_seen,
        http_detail_list_s: http_s,
        http_detail_ports: http_seen,
        http_pages: pages,
        http_over_store: http_s / store_list_s.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small run on each engine: both walks see every port, in the
    /// expected number of pages (the last page is short or empty).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ports_bench_walks_every_port_on_sqlite() {
        ports_bench_walks_every_port(ferric_store::testing::Engine::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ports_bench_walks_every_port_on_postgres() {
        ports_bench_walks_every_port(ferric_store::testing::Engine::Postgres).await;
    }

    async fn ports_bench_walks_every_port(engine: ferric_store::testing::Engine) {
        let Some(t) = ferric_store::testing::TestStore::open(engine).await else {
            return; // PostgreSQL not configured (FERRIC_TEST_PG_URL)
        };
        let r = run_ports_bench(
            t.store.clone(),
            PortsBenchParams {
                nodes: 250,
                page: 100,
                writers: 4,
            },
        )
        .await
        .unwrap();
        assert_eq!((r.store_list_ports, r.http_detail_ports), (250, 250));
        assert_eq!(r.http_pages, 3);
        assert!(r.create_ports_per_s > 0.0 && r.http_over_store > 0.0);
        t.cleanup().await;
    }
}
