//! What a network-booting machine fetches from ferric (issue 15). Not
//! Ironic API: these live outside `/v1`, need no credentials (a machine in
//! PXE has none, as Ironic's own HTTP server for boot files), and answer
//! plain text or bytes.
//!
//! * `GET /boot/boot.ipxe`: the chain script (DHCP's boot file for iPXE);
//! * `GET /boot/ipxe/mac/{mac}`: the script of the node owning the port
//!   with that MAC (`52-54-00-..` as iPXE's `hexhyp`, or colons); 404 makes
//!   the chain script try the next NIC;
//! * `GET /boot/nodes/{node}/script`: the same for a node (`?mac=` for BOOTIF);
//! * `GET /boot/nodes/{node}/{deploy,rescue}_{kernel,ramdisk}`: the image,
//!   from the conductor-side cache (fetched on a miss), with `Range`
//!   (one range, RFC 9110) and the content's SHA-256 as `ETag`;
//! * `GET /boot/nodes/{node}/boot.iso`: the virtual media ISO of a node
//!   with the `redfish-virtual-media` boot interface while it boots a
//!   ramdisk (built on a miss: `ferric_conductor::netboot::vmedia`), as the
//!   images; what the BMC downloads.
//!
//! Every response is rendered from the database and the cache: any
//! `ferric serve` of a cluster serves any node. All 404 when network boot
//! is not configured (`Drivers` without `NetBoot`).

use crate::ApiState;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use ferric_conductor::netboot::{NetBoot, NetbootError};
use ferric_store::NodeIdent;
use serde::Deserialize;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

/// The boot routes (merged outside `/v1`).
pub fn routes() -> Router<ApiState> {
    Router::new()
        .route("/boot/boot.ipxe", get(chain))
        .route("/boot/ipxe/mac/{mac}", get(by_mac))
        .route("/boot/nodes/{node}/script", get(by_node))
        .route("/boot/nodes/{node}/{file}", get(image))
}

/// Whether `path` is one of these routes (no `/v1` rewrite, no credentials).
pub fn is_boot_path(path: &str) -> bool {
    path.starts_with("/boot/")
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn failure(e: NetbootError) -> Response {
    let status = match &e {
        NetbootError::NotFound(_) => StatusCode::NOT_FOUND,
        NetbootError::Invalid(_) => StatusCode::CONFLICT,
        NetbootError::Unavailable(_) => StatusCode::BAD_GATEWAY,
    };
    if status != StatusCode::NOT_FOUND {
        tracing::warn!(error.message = %e, "boot file not served");
    }
    text(status, format!("{e}\n"))
}

fn netboot(st: &ApiState) -> Option<Arc<NetBoot>> {
    st.drivers().netboot().cloned()
}

fn not_configured() -> Response {
    text(
        StatusCode::NOT_FOUND,
        "network boot is not configured\n".into(),
    )
}

fn request_id() -> String {
    format!("req-{}", uuid::Uuid::new_v4())
}

async fn chain(State(st): State<ApiState>) -> Response {
    match netboot(&st) {
        Some(nb) => {
            tracing::info!("iPXE chain script served");
            text(StatusCode::OK, nb.chain_script())
        }
        None => not_configured(),
    }
}

async fn by_mac(State(st): State<ApiState>, Path(mac): Path<String>) -> Response {
    let Some(nb) = netboot(&st) else {
        return not_configured();
    };
    let rid = request_id();
    match nb.script_for_mac(st.tm.store().as_ref(), &mac, &rid).await {
        Ok((node, script)) => {
            tracing::info!(node_uuid = %node.uuid, mac = %mac, provision_state = %node.provision_state.as_str(), global_request_id = %rid, "iPXE script served");
            text(StatusCode::OK, script)
        }
        Err(e) => failure(e),
    }
}

/// `?mac=` of the per-node script.
#[derive(Debug, Deserialize)]
pub struct ScriptQuery {
    #[serde(default)]
    mac: Option<String>,
}

async fn by_node(
    State(st): State<ApiState>,
    Path(node): Path<String>,
    Query(q): Query<ScriptQuery>,
) -> Response {
    let Some(nb) = netboot(&st) else {
        return not_configured();
    };
    let mac = match q.mac.as_deref() {
        None => None,
        Some(m) => match ferric_conductor::netboot::ipxe::parse_mac(m) {
            Some(m) => Some(m),
            None => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("{m:?} is not a MAC address\n"),
                )
            }
        },
    };
    match st.tm.store().get_node(&NodeIdent::parse(&node)).await {
        Ok(n) => text(
            StatusCode::OK,
            nb.script_for_node(&n, mac.as_deref(), &request_id()),
        ),
        Err(e) => failure(e.into()),
    }
}

/// What a `Range` header asks of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// The whole file: no header, several ranges or a form this server
    /// ignores (RFC 9110 lets a server ignore `Range`).
    Whole,
    /// Bytes `first..=last`.
    Part(u64, u64),
    /// Outside the file (416).
    Unsatisfiable,
}

/// The [`RangeSpec`] of `header` for a file of `size` bytes.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeSpec {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeSpec::Whole;
    };
    if spec.contains(',') {
        return RangeSpec::Whole;
    }
    let Some((a, b)) = spec.split_once('-') else {
        return RangeSpec::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // The last b bytes.
        let Ok(n) = b.parse::<u64>() else {
            return RangeSpec::Whole;
        };
        if n == 0 || size == 0 {
            return RangeSpec::Unsatisfiable;
        }
        return RangeSpec::Part(size.saturating_sub(n), size - 1);
    }
    let Ok(start) = a.parse::<u64>() else {
        return RangeSpec::Whole;
    };
    let end = if b.is_empty() {
        size.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(e) if e >= start => e.min(size.saturating_sub(1)),
            _ => return RangeSpec::Whole,
        }
    };
    if start >= size {
        return RangeSpec::Unsatisfiable;
    }
    RangeSpec::Part(start, end)
}

async fn image(
    State(st): State<ApiState>,
    Path((node, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let Some(nb) = netboot(&st) else {
        return not_configured();
    };
    let ident = NodeIdent::parse(&node);
    let store = st.tm.store();
    let lookup = if file == "boot.iso" {
        nb.boot_iso_for_node(store.as_ref(), &ident).await
    } else {
        nb.image_for_node(store.as_ref(), &ident, &file).await
    };
    let cached = match lookup {
        Ok(c) => c,
        Err(e) => return failure(e),
    };
    let size = cached.size;
    tracing::info!(node = %node, file = %file, size, range = ?headers.get(header::RANGE), "boot image requested");
    let range = parse_range(
        headers.get(header::RANGE).and_then(|v| v.to_str().ok()),
        size,
    );
    let (status, start, len) = match range {
        RangeSpec::Whole => (StatusCode::OK, 0, size),
        RangeSpec::Part(a, b) => (StatusCode::PARTIAL_CONTENT, a, b - a + 1),
        RangeSpec::Unsatisfiable => {
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                [(header::CONTENT_RANGE, format!("bytes */{size}"))],
            )
                .into_response()
        }
    };
    let mut f = match tokio::fs::File::open(&cached.path).await {
        Ok(f) => f,
        // Evicted between the lookup and now: the machine retries.
        Err(e) => {
            return failure(NetbootError::Unavailable(format!(
                "cannot open the cached image: {e}"
            )))
        }
    };
    if start > 0 {
        if let Err(e) = f.seek(std::io::SeekFrom::Start(start)).await {
            return failure(NetbootError::Unavailable(format!(
                "cannot read the cached image: {e}"
            )));
        }
    }
    let stream = futures_util::stream::unfold((f, len), |(mut f, left)| async move {
        if left == 0 {
            return None;
        }
        let mut buf = vec![0u8; left.min(1 << 16) as usize];
        match f.read(&mut buf).await {
            Ok(0) => Some((
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "cached image shrank",
                )),
                (f, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), (f, left - n as u64)))
            }
            Err(e) => Some((Err(e), (f, 0))),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", cached.sha256)) {
        h.insert(header::ETAG, v);
    }
    if status == StatusCode::PARTIAL_CONTENT {
        if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{}/{size}", start + len - 1)) {
            h.insert(header::CONTENT_RANGE, v);
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        use RangeSpec::*;
        assert_eq!(parse_range(None, 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-9"), 100), Part(0, 9));
        assert_eq!(parse_range(Some("bytes=90-"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=90-500"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-10"), 100), Part(90, 99));
        assert_eq!(parse_range(Some("bytes=-500"), 100), Part(0, 99));
        assert_eq!(parse_range(Some("bytes=100-"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=-0"), 100), Unsatisfiable);
        assert_eq!(parse_range(Some("bytes=5-1"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=0-1,5-6"), 100), Whole);
        assert_eq!(parse_range(Some("items=0-1"), 100), Whole);
        assert_eq!(parse_range(Some("bytes=x-1"), 100), Whole);
    }
}
