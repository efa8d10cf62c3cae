//! The conductor-side, content-addressed image cache for kernels and
//! ramdisks.
//!
//! Layout under the cache directory:
//!
//! * `blobs/<sha256>`: the content, named by its SHA-256 (computed while
//!   downloading; the name is the checksum, and a blob is only renamed into
//!   place once complete, so a reader never sees a partial file);
//! * `urls/<sha256 of the URL>`: which blob a source URL gave, and when
//!   (`<sha256> <size> <unix seconds> <source mtime or 0>`);
//! * `tmp/`: downloads in progress.
//!
//! Two URLs with the same content share one blob. Concurrent fetches of one
//! URL in this process are de-duplicated (one download, the others wait for
//! it). Several processes sharing the directory may download the same URL
//! at once; the rename makes the result the same. After each download the
//! least recently used blobs are evicted until the total is within the size
//! limit (the blob just fetched is kept even if it alone is over).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncWriteExt;

/// A cached file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    pub path: PathBuf,
    /// Hex SHA-256 of the content.
    pub sha256: String,
    pub size: u64,
}

/// Why an image could not be cached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CacheError(pub String);

/// The cache. Cheap to share (`Arc`).
#[derive(Debug)]
pub struct ImageCache {
    dir: PathBuf,
    max_bytes: u64,
    max_file_bytes: u64,
    refresh_after: Duration,
    http: reqwest::Client,
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn mtime_secs(meta: &std::fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

/// One `urls/` record.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    sha256: String,
    size: u64,
    fetched_at: u64,
    source_mtime: u64,
}

impl Record {
    fn parse(s: &str) -> Option<Record> {
        let mut it = s.split_whitespace();
        let sha256 = it.next()?.to_string();
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        Some(Record {
            sha256,
            size: it.next()?.parse().ok()?,
            fetched_at: it.next()?.parse().ok()?,
            source_mtime: it.next()?.parse().ok()?,
        })
    }

    fn render(&self) -> String {
        format!(
            "{} {} {} {}\n",
            self.sha256, self.size, self.fetched_at, self.source_mtime
        )
    }
}

impl ImageCache {
    /// A cache in `dir` holding at most `max_bytes`, refusing a single image
    /// over `max_file_bytes`; http(s) images older than `refresh_after` are
    /// downloaded again by [`ImageCache::get`] with `refresh`.
    pub fn new(
        dir: impl Into<PathBuf>,
        max_bytes: u64,
        max_file_bytes: u64,
        refresh_after: Duration,
    ) -> Self {
        ImageCache {
            dir: dir.into(),
            max_bytes,
            max_file_bytes,
            refresh_after,
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, url: &str) -> PathBuf {
        self.dir
            .join("urls")
            .join(hex(&Sha256::digest(url.as_bytes())))
    }

    fn blob_path(&self, sha256: &str) -> PathBuf {
        self.dir.join("blobs").join(sha256)
    }

    /// The blob of `sha256` if the cache has it.
    pub async fn blob(&self, sha256: &str) -> Option<CachedFile> {
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.blob_path(sha256);
        let meta = tokio::fs::metadata(&path).await.ok()?;
        Some(CachedFile {
            path,
            sha256: sha256.to_string(),
            size: meta.len(),
        })
    }

    /// The image at `url` (`http://`, `https://` or `file://`), downloaded
    /// if the cache does not have it. `refresh`: also download again an
    /// http(s) image fetched longer than `refresh_after` ago (a `file://`
    /// image is checked against its size and modification time every time).
    pub async fn get(&self, url: &str, refresh: bool) -> Result<CachedFile, CacheError> {
        let gate = {
            let mut map = match self.inflight.lock() {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
            map.entry(url.to_string()).or_default().clone()
        };
        let result = {
            let _one_fetch_per_url = gate.lock().await;
            match self.lookup(url, refresh).await {
                Some(f) => Ok(f),
                None => self.fetch(url).await,
            }
        };
        let mut map = match self.inflight.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        // Only the map and this function hold it: nobody else waits.
        if Arc::strong_count(&gate) <= 2 {
            map.remove(url);
        }
        result
    }

    /// A usable record of `url`, its blob touched (least-recently-used order).
    async fn lookup(&self, url: &str, refresh: bool) -> Option<CachedFile> {
        let text = tokio::fs::read_to_string(self.record_path(url))
            .await
            .ok()?;
        let rec = Record::parse(&text)?;
        if let Some(path) = url.strip_prefix("file://") {
            let meta = tokio::fs::metadata(path).await.ok()?;
            if meta.len() != rec.size || mtime_secs(&meta) != rec.source_mtime {
                return None;
            }
        } else if refresh
            && now_secs().saturating_sub(rec.fetched_at) > self.refresh_after.as_secs()
        {
            return None;
        }
        let file = self.blob(&rec.sha256).await?;
        if file.size != rec.size {
            return None;
        }
        let touched = std::fs::File::options()
            .append(true)
            .open(&file.path)
            .and_then(|f| f.set_modified(SystemTime::now()));
        if let Err(e) = touched {
            tracing::debug!(error.message = %e, path = %file.path.display(), "cannot touch a cached image");
        }
        Some(file)
    }

    async fn fetch(&self, url: &str) -> Result<CachedFile, CacheError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            CacheError(format!("cannot cache image {url}: {what}: {e}"))
        };
        for sub in ["blobs", "urls", "tmp"] {
            tokio::fs::create_dir_all(self.dir.join(sub))
                .await
                .map_err(|e| err("creating the cache directory", &e))?;
        }
        let tmp = self
            .dir
            .join("tmp")
            .join(format!("{}.part", uuid::Uuid::new_v4()));
        let fetched = self.download(url, &tmp).await;
        let (sha256, size, source_mtime) = match fetched {
            Ok(v) => v,
            Err(e) => {
                let _gone_or_never_made = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
        };
        let blob = self.blob_path(&sha256);
        tokio::fs::rename(&tmp, &blob)
            .await
            .map_err(|e| err("storing the image", &e))?;
        let rec = Record {
            sha256: sha256.clone(),
            size,
            fetched_at: now_secs(),
            source_mtime,
        };
        let rec_tmp = self
            .dir
            .join("tmp")
            .join(format!("{}.rec", uuid::Uuid::new_v4()));
        tokio::fs::write(&rec_tmp, rec.render())
            .await
            .map_err(|e| err("writing the index", &e))?;
        tokio::fs::rename(&rec_tmp, self.record_path(url))
            .await
            .map_err(|e| err("writing the index", &e))?;
        tracing::info!(url, sha256 = %sha256, size, "image cached");
        self.evict(&sha256).await;
        Ok(CachedFile {
            path: blob,
            sha256,
            size,
        })
    }

    /// Download `url` into `tmp`: (sha256, size, source mtime).
    async fn download(&self, url: &str, tmp: &Path) -> Result<(String, u64, u64), CacheError> {
        let err = |what: &str, e: &dyn std::fmt::Display| {
            CacheError(format!("cannot cache image {url}: {what}: {e}"))
        };
        let too_big = || {
            CacheError(format!(
                "cannot cache image {url}: larger than pxe.max_image_bytes ({} bytes)",
                self.max_file_bytes
            ))
        };
        let mut out = tokio::fs::File::create(tmp)
            .await
            .map_err(|e| err("creating a temporary file", &e))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut source_mtime = 0;
        if let Some(path) = url.strip_prefix("file://") {
            use tokio::io::AsyncReadExt;
            let mut f = tokio::fs::File::open(path)
                .await
                .map_err(|e| err("opening", &e))?;
            let meta = f.metadata().await.map_err(|e| err("reading", &e))?;
            if !meta.is_file() {
                return Err(CacheError(format!(
                    "cannot cache image {url}: not a regular file"
                )));
            }
            source_mtime = mtime_secs(&meta);
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).await.map_err(|e| err("reading", &e))?;
                if n == 0 {
                    break;
                }
                size += n as u64;
                if size > self.max_file_bytes {
                    return Err(too_big());
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .await
                    .map_err(|e| err("writing", &e))?;
            }
        } else if url.starts_with("http://") || url.starts_with("https://") {
            let mut resp = self
                .http
                .get(url)
                .send()
                .await
                .map_err(|e| err("downloading", &e))?;
            if !resp.status().is_success() {
                return Err(CacheError(format!(
                    "cannot cache image {url}: the server answered {}",
                    resp.status()
                )));
            }
            if resp
                .content_length()
                .is_some_and(|l| l > self.max_file_bytes)
            {
                return Err(too_big());
            }
            while let Some(chunk) = resp.chunk().await.map_err(|e| err("downloading", &e))? {
                size += chunk.len() as u64;
                if size > self.max_file_bytes {
                    return Err(too_big());
                }
                hasher.update(&chunk);
                out.write_all(&chunk)
                    .await
                    .map_err(|e| err("writing", &e))?;
            }
        } else {
            return Err(CacheError(format!(
                "cannot cache image {url}: only http://, https:// and file:// URLs are supported"
            )));
        }
        out.flush().await.map_err(|e| err("writing", &e))?;
        out.sync_all().await.map_err(|e| err("writing", &e))?;
        Ok((hex(&hasher.finalize()), size, source_mtime))
    }

    /// Remove least recently used blobs (not `keep`) until the total is
    /// within the limit. Failures are logged: eviction is best effort.
    async fn evict(&self, keep: &str) {
        let mut blobs = Vec::new();
        let mut total: u64 = 0;
        let Ok(mut dir) = tokio::fs::read_dir(self.dir.join("blobs")).await else {
            return;
        };
        while let Ok(Some(e)) = dir.next_entry().await {
            if let Ok(meta) = e.metadata().await {
                total += meta.len();
                let used = meta.modified().unwrap_or(UNIX_EPOCH);
                blobs.push((used, meta.len(), e.path(), e.file_name()));
            }
        }
        blobs.sort_by_key(|b| b.0);
        for (_, len, path, name) in blobs {
            if total <= self.max_bytes {
                break;
            }
            if name.to_str() == Some(keep) {
                continue;
            }
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {
                    total = total.saturating_sub(len);
                    tracing::info!(path = %path.display(), size = len, "cached image evicted");
                }
                Err(e) => {
                    tracing::warn!(error.message = %e, path = %path.display(), "cannot evict a cached image")
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sha(b: &[u8]) -> String {
        hex(&Sha256::digest(b))
    }

    #[tokio::test]
    async fn file_urls_are_content_addressed_and_shared() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let a = src.path().join("a");
        let b = src.path().join("b");
        std::fs::write(&a, b"kernel bytes").unwrap();
        std::fs::write(&b, b"kernel bytes").unwrap();
        let cache = ImageCache::new(dir.path(), 1 << 20, 1 << 20, Duration::from_secs(3600));
        let fa = cache
            .get(&format!("file://{}", a.display()), false)
            .await
            .unwrap();
        let fb = cache
            .get(&format!("file://{}", b.display()), false)
            .await
            .unwrap();
        assert_eq!(fa.sha256, sha(b"kernel bytes"));
        assert_eq!(fa, fb, "same content, one blob");
        assert_eq!(std::fs::read(&fa.path).unwrap(), b"kernel bytes");
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
            1
        );
        // A changed source is fetched again.
        std::fs::write(&a, b"new kernel bytes!").unwrap();
        let fa2 = cache
            .get(&format!("file://{}", a.display()), false)
            .await
            .unwrap();
        assert_eq!(fa2.sha256, sha(b"new kernel bytes!"));
        assert_eq!(cache.blob(&fa2.sha256).await.unwrap().size, 17);
        assert!(cache.blob("../../etc/passwd").await.is_none());
    }

    #[tokio::test]
    async fn bad_sources_are_errors_and_leave_nothing() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let big = src.path().join("big");
        std::fs::write(&big, vec![7u8; 2000]).unwrap();
        let cache = ImageCache::new(dir.path(), 1 << 20, 1000, Duration::from_secs(3600));
        let e = cache
            .get(&format!("file://{}", big.display()), false)
            .await
            .unwrap_err();
        assert!(
            e.0.contains("larger than pxe.max_image_bytes (1000 bytes)"),
            "{e}"
        );
        let e = cache.get("file:///nonexistent/x", false).await.unwrap_err();
        assert!(
            e.0.contains("cannot cache image file:///nonexistent/x: opening"),
            "{e}"
        );
        let e = cache.get("ftp://h/x", false).await.unwrap_err();
        assert!(e.0.contains("only http://, https:// and file://"), "{e}");
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(
            std::fs::read_dir(dir.path().join("blobs")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn least_recently_used_blobs_are_evicted() {
        let src = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cache = ImageCache::new(dir.path(), 250, 1000, Duration::from_secs(3600));
        let mut urls = Vec::new();
        for (i, name) in ["one", "two", "three"].iter().enumerate() {
            let p = src.path().join(name);
            std::fs::write(&p, vec![i as u8; 100]).unwrap();
            urls.push(format!("file://{}", p.display()));
        }
        let one = cache.get(&urls[0], false).await.unwrap();
        let two = cache.get(&urls[1], false).await.unwrap();
        // Make `one` the oldest for sure, then use `two` again.
        std::fs::File::options()
            .append(true)
            .open(&one.path)
            .unwrap()
            .set_modified(UNIX_EPOCH + Duration::from_secs(1000))
            .unwrap();
        let three = cache.get(&urls[2], false).await.unwrap();
        assert!(!one.path.exists(), "the least recently used went");
        assert!(two.path.exists() && three.path.exists());
        // The evicted one comes back on demand.
        let again = cache.get(&urls[0], false).await.unwrap();
        assert_eq!(again.sha256, one.sha256);
        assert!(again.path.exists());
    }

    #[tokio::test]
    async fn concurrent_fetches_of_one_url_download_once() {
        use axum::routing::get;
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        let app = axum::Router::new().route(
            "/ramdisk",
            get(move || {
                let h = h.clone();
                async move {
                    h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    vec![42u8; 5000]
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ImageCache::new(
            dir.path(),
            1 << 20,
            1 << 20,
            Duration::from_secs(3600),
        ));
        let url = format!("http://{addr}/ramdisk");
        let mut joins = Vec::new();
        for _ in 0..8 {
            let c = cache.clone();
            let u = url.clone();
            joins.push(tokio::spawn(async move { c.get(&u, false).await }));
        }
        for j in joins {
            let f = j.await.unwrap().unwrap();
            assert_eq!(f.size, 5000);
            assert_eq!(f.sha256, sha(&[42u8; 5000]));
        }
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        // A 404 is an error naming the status.
        let e = cache
            .get(&format!("http://{addr}/missing"), false)
            .await
            .unwrap_err();
        assert!(e.0.contains("404"), "{e}");
        // refresh=true with a fresh record does not download again.
        cache.get(&url, true).await.unwrap();
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
        server.abort();
    }
}
