//! The `s3` remote: an S3-compatible bucket through `object_store`, driven from a private tokio
//! runtime so that cairn's API stays synchronous.
//!
//! Small objects are written with one conditional PUT (`If-None-Match: *`). Large ones go up as
//! a multipart upload, which S3 cannot make conditional: they are only ever content-addressed
//! (artifact bytes, and run files above [`MULTIPART_THRESHOLD`], see
//! [`Remote::content_addressed_above`]), so a concurrent writer can only store the same bytes,
//! and an interrupted upload is never completed (it never appears).
//! Opening a remote probes that the server honors conditional writes and refuses it otherwise.

use std::io::{Read, Write};
use std::ops::Range;
use std::sync::{Arc, OnceLock};

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, WriteMultipart};

use super::{META_PREFIX, Progress, Put, Remote, remote_error};
use crate::durable::failpoint;
use crate::error::Result;

/// Objects larger than this go up as multipart uploads.
pub const MULTIPART_THRESHOLD: u64 = 16 << 20;
/// Size of one part of a multipart upload.
const PART: usize = 16 << 20;
/// Parts in flight at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Read size from the source while uploading.
const READ_CHUNK: usize = 1 << 20;

/// The runtime every S3 remote of the process shares.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-s3")
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// An S3-compatible remote.
#[derive(Debug)]
pub struct S3Remote {
    name: String,
    prefix: String,
    store: Arc<AmazonS3>,
}

impl S3Remote {
    /// Connects to the bucket of `spec` and probes conditional writes: a second
    /// create-if-absent PUT of a probe key must be refused by the server.
    pub fn open(name: &str, spec: &super::S3Spec) -> Result<Self> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&spec.bucket);
        let endpoint = spec
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        if let Some(ep) = endpoint {
            b = b
                .with_allow_http(ep.starts_with("http://"))
                .with_endpoint(ep);
        }
        if let Some(region) = &spec.region {
            b = b.with_region(region);
        }
        if let Some((key, secret)) = &spec.credentials {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        }
        let store = b
            .build()
            .map_err(|e| remote_error(name, "", format!("configure: {e}")))?;
        let remote = S3Remote {
            name: name.into(),
            prefix: spec.prefix.trim_matches('/').to_owned(),
            store: Arc::new(store),
        };
        remote.probe_conditional_writes()?;
        Ok(remote)
    }

    fn probe_conditional_writes(&self) -> Result<()> {
        let key = format!("{META_PREFIX}/probe/{}", uuid::Uuid::new_v4().simple());
        let first = self.put_new(&key, b"probe")?;
        let second = self.put_new(&key, b"probe");
        let _ = self.delete(&key);
        match (first, second?) {
            (Put::Created, Put::Exists) => Ok(()),
            _ => Err(remote_error(
                &self.name,
                &key,
                "the server ignores conditional writes (a second If-None-Match: * PUT \
                 succeeded); two pushers could clobber each other, so cairn refuses this remote",
            )),
        }
    }

    fn path(&self, key: &str) -> Result<ObjectPath> {
        let full = if self.prefix.is_empty() || key.is_empty() {
            format!("{}{key}", self.prefix)
        } else {
            format!("{}/{key}", self.prefix)
        };
        ObjectPath::parse(&full).map_err(|e| remote_error(&self.name, key, e.to_string()))
    }

    fn err(&self, key: &str, e: object_store::Error) -> crate::Error {
        remote_error(&self.name, key, e.to_string())
    }

    fn multipart(
        &self,
        key: &str,
        src: &mut dyn Read,
        size: u64,
        progress: Progress<'_>,
    ) -> Result<Put> {
        let path = self.path(key)?;
        if self.size(key)?.is_some() {
            return Ok(Put::Exists);
        }
        runtime().block_on(async {
            let upload = self
                .store
                .put_multipart(&path)
                .await
                .map_err(|e| self.err(key, e))?;
            let mut w = WriteMultipart::new_with_chunk_size(upload, PART);
            let mut buf = vec![0u8; READ_CHUNK];
            let mut done = 0u64;
            let sent: Result<()> = async {
                loop {
                    let n = src
                        .read(&mut buf)
                        .map_err(|e| remote_error(&self.name, key, format!("read source: {e}")))?;
                    if n == 0 {
                        break;
                    }
                    failpoint("remote.upload_chunk")?;
                    w.wait_for_capacity(PARTS_IN_FLIGHT)
                        .await
                        .map_err(|e| self.err(key, e))?;
                    w.write(&buf[..n]);
                    done += n as u64;
                    progress(n as u64);
                }
                if done != size {
                    return Err(remote_error(
                        &self.name,
                        key,
                        format!("source gave {done} bytes, expected {size}"),
                    ));
                }
                Ok(())
            }
            .await;
            match sent {
                Ok(()) => w.finish().await.map(drop).map_err(|e| self.err(key, e)),
                Err(e) => {
                    let _ = w.abort().await;
                    Err(e)
                }
            }
        })?;
        Ok(Put::Created)
    }
}

impl Remote for S3Remote {
    fn name(&self) -> &str {
        &self.name
    }

    fn put_stream(
        &self,
        key: &str,
        src: &mut dyn Read,
        size: u64,
        progress: Progress<'_>,
    ) -> Result<Put> {
        if size > MULTIPART_THRESHOLD {
            return self.multipart(key, src, size, progress);
        }
        let mut bytes = Vec::with_capacity(size as usize);
        src.take(size + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| remote_error(&self.name, key, format!("read source: {e}")))?;
        if bytes.len() as u64 != size {
            return Err(remote_error(
                &self.name,
                key,
                format!("source gave {} bytes, expected {size}", bytes.len()),
            ));
        }
        failpoint("remote.upload_chunk")?;
        let put = self.put_new(key, &bytes)?;
        progress(size);
        Ok(put)
    }

    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Put> {
        let path = self.path(key)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let payload = PutPayload::from(bytes::Bytes::copy_from_slice(bytes));
        match runtime().block_on(self.store.put_opts(&path, payload, opts)) {
            Ok(_) => Ok(Put::Created),
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => Ok(Put::Exists),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn get(&self, key: &str, sink: &mut dyn Write, progress: Progress<'_>) -> Result<Option<u64>> {
        let path = self.path(key)?;
        runtime().block_on(async {
            let got = match self.store.get(&path).await {
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.err(key, e)),
                Ok(g) => g,
            };
            let mut stream = got.into_stream();
            let mut done = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.err(key, e))?;
                sink.write_all(&chunk).map_err(|e| {
                    remote_error(&self.name, key, format!("write destination: {e}"))
                })?;
                done += chunk.len() as u64;
                progress(chunk.len() as u64);
            }
            Ok(Some(done))
        })
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = self.path(key)?;
        runtime()
            .block_on(self.store.get_range(&path, range))
            .map(|b| b.to_vec())
            .map_err(|e| self.err(key, e))
    }

    fn size(&self, key: &str) -> Result<Option<u64>> {
        let path = self.path(key)?;
        match runtime().block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn modified(&self, key: &str) -> Result<Option<std::time::SystemTime>> {
        let path = self.path(key)?;
        match runtime().block_on(self.store.head(&path)) {
            Ok(meta) => Ok(Some(meta.last_modified.into())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let path = self.path(prefix.trim_end_matches('/'))?;
        let strip = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let mut keys = runtime().block_on(async {
            let mut out = Vec::new();
            let mut stream = self.store.list(Some(&path));
            while let Some(meta) = stream.next().await {
                let meta = meta.map_err(|e| self.err(prefix, e))?;
                if let Some(k) = meta.location.as_ref().strip_prefix(&strip) {
                    out.push(k.to_owned());
                }
            }
            Ok::<_, crate::Error>(out)
        })?;
        keys.sort();
        Ok(keys)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match runtime().block_on(self.store.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err(key, e)),
        }
    }

    fn content_addressed_above(&self) -> Option<u64> {
        Some(MULTIPART_THRESHOLD)
    }
}
