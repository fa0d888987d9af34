//! The registry's content on disk under `<data-dir>/registry`, content-addressed:
//!
//! ```text
//! blobs/sha256/<ab>/<hex>                        blob and manifest bytes
//! uploads/<id>/data, uploads/<id>/repository     uploads in progress
//! repositories/<repo>/_layers/<hex>              the blob is in <repo>
//! repositories/<repo>/_manifests/revisions/<hex> the manifest is in <repo>; holds its media type
//! repositories/<repo>/_manifests/tags/<tag>      holds the tagged digest
//! repositories/<repo>/_referrers/<subject>/<hex> holds the referrer's descriptor
//! ```
//!
//! Every file appears whole: written to a temp file, synced, renamed. A blob
//! appears only after its sha256 was checked.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};

use crate::error::{RegistryError, Result};

/// An upload in progress: its size so far and the hash of what it holds.
#[derive(Debug)]
pub(crate) struct Upload {
    pub(crate) size: u64,
    hasher: Sha256,
}

/// One repository of [`Storage::catalog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    /// `app` or `app/name`.
    pub name: String,
    /// Each tag and the manifest digest it names (none if unreadable).
    pub tags: Vec<(String, Option<String>)>,
    /// The digests of the manifests it holds.
    pub manifests: Vec<String>,
}

/// The registry's files.
#[derive(Debug)]
pub struct Storage {
    root: PathBuf,
    /// Hash state of running uploads, so finishing one does not read it again.
    /// After a restart it is rebuilt from the upload's file.
    uploads: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Upload>>>>,
    limits: Limits,
}

/// How much one client may store: one upload, and one repository's blobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in one blob upload (default 10 GiB).
    pub upload: u64,
    /// Bytes of the blobs one repository holds (default 100 GiB).
    pub repository: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upload: 10 << 30,
            repository: 100 << 30,
        }
    }
}

/// In `repositories/<app>/`: the create revision of the app that pushed there.
const OWNER_FILE: &str = "_owner";

fn hex_of(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn io_error(what: &str) -> impl Fn(std::io::Error) -> RegistryError + '_ {
    move |error| RegistryError::internal(what, error)
}

/// Writes `bytes` to `path` whole (temp file, fsync, rename), making its
/// directory first.
pub(crate) async fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    tokio::fs::create_dir_all(dir).await?;
    let (path, bytes) = (path.to_path_buf(), bytes.to_vec());
    tokio::task::spawn_blocking(move || support::write_file(&path, &bytes))
        .await
        .map_err(std::io::Error::other)?
}

impl Storage {
    pub fn new(root: PathBuf) -> Storage {
        Storage {
            root,
            uploads: Mutex::new(HashMap::new()),
            limits: Limits::default(),
        }
    }

    /// Refuses uploads beyond `limits`.
    pub fn with_limits(mut self, limits: Limits) -> Storage {
        self.limits = limits;
        self
    }

    /// The bytes of the blobs `repo` holds.
    async fn repository_bytes(&self, repo: &str) -> u64 {
        let mut total = 0;
        for hex in list_dir(&self.repository(repo).join("_layers")).await {
            if let Ok(meta) = tokio::fs::metadata(self.blob_path(&format!("sha256:{hex}"))).await {
                total += meta.len();
            }
        }
        total
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn blob_path(&self, digest: &str) -> PathBuf {
        let hex = hex_of(digest);
        self.root
            .join("blobs/sha256")
            .join(&hex[..2.min(hex.len())])
            .join(hex)
    }

    fn repository(&self, repo: &str) -> PathBuf {
        self.root.join("repositories").join(repo)
    }

    fn layer_link(&self, repo: &str, digest: &str) -> PathBuf {
        self.repository(repo).join("_layers").join(hex_of(digest))
    }

    fn revision(&self, repo: &str, digest: &str) -> PathBuf {
        self.repository(repo)
            .join("_manifests/revisions")
            .join(hex_of(digest))
    }

    fn tag_path(&self, repo: &str, tag: &str) -> PathBuf {
        self.repository(repo).join("_manifests/tags").join(tag)
    }

    fn upload_dir(&self, id: &str) -> PathBuf {
        self.root.join("uploads").join(id)
    }

    /// Whether the repository exists (has a manifest or a blob).
    pub(crate) fn repository_exists(&self, repo: &str) -> bool {
        self.repository(repo).is_dir()
    }

    /// The size of a blob the repository holds.
    pub(crate) async fn blob_size(&self, repo: &str, digest: &str) -> Option<u64> {
        if !tokio::fs::try_exists(self.layer_link(repo, digest))
            .await
            .unwrap_or(false)
        {
            return None;
        }
        tokio::fs::metadata(self.blob_path(digest))
            .await
            .ok()
            .map(|m| m.len())
    }

    /// Makes a stored blob part of `repo` (a push or a mount).
    pub(crate) async fn link_blob(&self, repo: &str, digest: &str) -> Result<()> {
        write_atomically(&self.layer_link(repo, digest), b"")
            .await
            .map_err(io_error("link a blob"))
    }

    pub(crate) async fn unlink_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        match tokio::fs::remove_file(self.layer_link(repo, digest)).await {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(false),
            Err(error) => Err(RegistryError::internal("delete a blob link", error)),
        }
    }

    /// Starts an upload into `repo`; returns its id.
    pub(crate) async fn start_upload(&self, repo: &str) -> Result<String> {
        let id = hex::encode(rand::random::<[u8; 16]>());
        let dir = self.upload_dir(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(io_error("start an upload"))?;
        tokio::fs::write(dir.join("data"), b"")
            .await
            .map_err(io_error("start an upload"))?;
        write_atomically(&dir.join("repository"), repo.as_bytes())
            .await
            .map_err(io_error("start an upload"))?;
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.clone(),
                Arc::new(tokio::sync::Mutex::new(Upload {
                    size: 0,
                    hasher: Sha256::new(),
                })),
            );
        Ok(id)
    }

    /// The upload `id` of `repo`, rebuilt from its file if this process did not start it.
    pub(crate) async fn upload(
        &self,
        repo: &str,
        id: &str,
    ) -> Result<Arc<tokio::sync::Mutex<Upload>>> {
        let dir = self.upload_dir(id);
        let owner = tokio::fs::read_to_string(dir.join("repository"))
            .await
            .map_err(|_| RegistryError::upload_unknown())?;
        if owner != repo {
            return Err(RegistryError::upload_unknown());
        }
        if let Some(upload) = self
            .uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
        {
            return Ok(upload.clone());
        }
        let mut file = tokio::fs::File::open(dir.join("data"))
            .await
            .map_err(|_| RegistryError::upload_unknown())?;
        let mut hasher = Sha256::new();
        let mut size = 0;
        let mut buffer = vec![0; 1 << 20];
        loop {
            let read = file
                .read(&mut buffer)
                .await
                .map_err(io_error("read an upload"))?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            size += read as u64;
        }
        let upload = Arc::new(tokio::sync::Mutex::new(Upload { size, hasher }));
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_string(), upload.clone());
        Ok(upload)
    }

    /// Appends a request body to the upload; returns the new size.
    pub(crate) async fn append(&self, id: &str, upload: &mut Upload, body: Body) -> Result<u64> {
        let file = tokio::fs::OpenOptions::new()
            .append(true)
            .open(self.upload_dir(id).join("data"))
            .await
            .map_err(|_| RegistryError::upload_unknown())?;
        let mut writer = BufWriter::with_capacity(1 << 20, file);
        let mut stream = body.into_data_stream();
        let mut written = 0u64;
        let mut hasher = upload.hasher.clone();
        while let Some(chunk) = stream.next().await {
            let chunk: Bytes = chunk.map_err(|error| {
                RegistryError::upload_invalid(format!("the upload stream broke: {error}"))
            })?;
            written += chunk.len() as u64;
            if upload.size + written > self.limits.upload {
                return Err(RegistryError::too_large(format!(
                    "a blob may hold at most {} MiB on this registry: nothing more of it was stored",
                    self.limits.upload >> 20
                )));
            }
            hasher.update(&chunk);
            writer
                .write_all(&chunk)
                .await
                .map_err(io_error("write an upload"))?;
        }
        writer.flush().await.map_err(io_error("write an upload"))?;
        // Only a whole body counts; a broken one leaves the state as it was
        // (the file is cut back so the two agree).
        upload.hasher = hasher;
        upload.size += written;
        Ok(upload.size)
    }

    /// Cuts an upload's file back to the size its state knows (after a broken body).
    pub(crate) async fn truncate(&self, id: &str, size: u64) {
        if let Ok(file) = tokio::fs::OpenOptions::new()
            .write(true)
            .open(self.upload_dir(id).join("data"))
            .await
        {
            let _ = file.set_len(size).await;
        }
    }

    /// Checks the upload against `digest` and, if it matches, makes it a blob
    /// of `repo`. On a mismatch the upload is discarded and nothing is stored.
    pub(crate) async fn finish(
        &self,
        repo: &str,
        id: &str,
        upload: &Upload,
        digest: &str,
    ) -> Result<u64> {
        let actual = format!("sha256:{}", hex::encode(upload.hasher.clone().finalize()));
        let dir = self.upload_dir(id);
        if actual != digest {
            self.cancel(id).await;
            return Err(RegistryError::digest_invalid(format!(
                "the upload's content has digest {actual}, not {digest}; nothing was stored"
            )));
        }
        if self.blob_size(repo, digest).await.is_none()
            && self.repository_bytes(repo).await + upload.size > self.limits.repository
        {
            self.cancel(id).await;
            return Err(RegistryError::too_large(format!(
                "repository {repo} may hold at most {} MiB of blobs on this registry: remove old images (paz registry gc) or ask an admin; nothing was stored",
                self.limits.repository >> 20
            )));
        }
        let data = dir.join("data");
        let file = tokio::fs::File::open(&data)
            .await
            .map_err(io_error("finish an upload"))?;
        file.sync_all()
            .await
            .map_err(io_error("finish an upload"))?;
        drop(file);
        let target = self.blob_path(digest);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(io_error("store a blob"))?;
        }
        // Two pushes of one blob both end here; the content is the same either way.
        tokio::fs::rename(&data, &target)
            .await
            .map_err(io_error("store a blob"))?;
        self.link_blob(repo, digest).await?;
        self.cancel(id).await;
        Ok(upload.size)
    }

    /// Forgets an upload and removes its files.
    pub(crate) async fn cancel(&self, id: &str) {
        self.uploads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
        let _ = tokio::fs::remove_dir_all(self.upload_dir(id)).await;
    }

    /// Stores bytes that are already in memory (manifests) as a blob.
    pub(crate) async fn put_bytes(&self, digest: &str, bytes: &[u8]) -> Result<()> {
        let target = self.blob_path(digest);
        if tokio::fs::try_exists(&target).await.unwrap_or(false) {
            return Ok(());
        }
        write_atomically(&target, bytes)
            .await
            .map_err(io_error("store a manifest"))
    }

    /// Records a manifest in `repo` with its media type, and the tag if any.
    pub(crate) async fn link_manifest(
        &self,
        repo: &str,
        digest: &str,
        media_type: &str,
        tag: Option<&str>,
    ) -> Result<()> {
        write_atomically(&self.revision(repo, digest), media_type.as_bytes())
            .await
            .map_err(io_error("record a manifest"))?;
        if let Some(tag) = tag {
            write_atomically(&self.tag_path(repo, tag), digest.as_bytes())
                .await
                .map_err(io_error("record a tag"))?;
        }
        Ok(())
    }

    /// The digest a tag points at.
    pub(crate) async fn tag_digest(&self, repo: &str, tag: &str) -> Option<String> {
        tokio::fs::read_to_string(self.tag_path(repo, tag))
            .await
            .ok()
    }

    /// A manifest's media type, if `repo` holds it.
    pub(crate) async fn manifest_type(&self, repo: &str, digest: &str) -> Option<String> {
        tokio::fs::read_to_string(self.revision(repo, digest))
            .await
            .ok()
    }

    pub(crate) async fn read_blob(&self, digest: &str) -> Result<Vec<u8>> {
        tokio::fs::read(self.blob_path(digest))
            .await
            .map_err(|_| RegistryError::blob_unknown(digest))
    }

    /// Deletes a tag; returns whether it existed.
    pub(crate) async fn delete_tag(&self, repo: &str, tag: &str) -> bool {
        tokio::fs::remove_file(self.tag_path(repo, tag))
            .await
            .is_ok()
    }

    /// Deletes a manifest from `repo` and every tag that points at it.
    pub(crate) async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<bool> {
        if tokio::fs::remove_file(self.revision(repo, digest))
            .await
            .is_err()
        {
            return Ok(false);
        }
        for tag in self.tags(repo).await {
            if self.tag_digest(repo, &tag).await.as_deref() == Some(digest) {
                self.delete_tag(repo, &tag).await;
            }
        }
        Ok(true)
    }

    /// The repository's tags, sorted.
    pub(crate) async fn tags(&self, repo: &str) -> Vec<String> {
        list_dir(&self.repository(repo).join("_manifests/tags")).await
    }

    /// The manifests `repo` holds (digests).
    pub(crate) async fn manifests(&self, repo: &str) -> Vec<String> {
        list_dir(&self.repository(repo).join("_manifests/revisions"))
            .await
            .into_iter()
            .map(|hex| format!("sha256:{hex}"))
            .collect()
    }

    /// Deletes repository `name` and the ones under it (`name/...`); the blobs
    /// stay for `paz registry gc`. Renamed aside first, so that a crash
    /// leaves either the whole repository or none of it.
    pub(crate) async fn remove_repository(&self, name: &str) -> std::io::Result<bool> {
        let dir = self.repository(name);
        if !tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return Ok(false);
        }
        let aside = self.root.join(format!(
            "deleted-{}-{}",
            name.replace('/', "_"),
            hex::encode(rand::random::<[u8; 4]>())
        ));
        tokio::fs::rename(&dir, &aside).await?;
        tokio::fs::remove_dir_all(&aside).await?;
        Ok(true)
    }

    /// Notes that the repositories of app `app` (`app` and `app/...`)
    /// belong to the app created at store revision `created`, so that they
    /// go if that app is destroyed, even while the registry is down.
    pub(crate) async fn mark_owner(&self, app: &str, created: i64) -> std::io::Result<()> {
        if self.owner(app).await == Some(created) {
            return Ok(());
        }
        let path = self.repository(app).join(OWNER_FILE);
        write_atomically(&path, created.to_string().as_bytes()).await
    }

    /// The create revision of the app that owns the repositories under
    /// `app`, if they were pushed while it existed.
    pub(crate) async fn owner(&self, app: &str) -> Option<i64> {
        let path = self.repository(app).join(OWNER_FILE);
        let text = tokio::fs::read_to_string(path).await.ok()?;
        text.trim().parse().ok()
    }

    /// The top-level repository names (`demo` for `demo` and `demo/api`).
    pub(crate) async fn top_level(&self) -> Vec<String> {
        list_dir(&self.root.join("repositories")).await
    }

    /// Every repository, sorted.
    pub(crate) async fn repositories(&self) -> Vec<String> {
        let mut names = Vec::new();
        for app in list_dir(&self.root.join("repositories")).await {
            let dir = self.repository(&app);
            if tokio::fs::try_exists(dir.join("_manifests"))
                .await
                .unwrap_or(false)
                || tokio::fs::try_exists(dir.join("_layers"))
                    .await
                    .unwrap_or(false)
            {
                names.push(app.clone());
            }
            for sub in list_dir(&dir).await {
                if !sub.starts_with('_') {
                    names.push(format!("{app}/{sub}"));
                }
            }
        }
        names.sort();
        names
    }

    /// Every repository with its tags (and the digest each names) and its
    /// manifests, for the web UI's registry page.
    pub async fn catalog(&self) -> Vec<Repository> {
        let mut catalog = Vec::new();
        for name in self.repositories().await {
            let mut tags = Vec::new();
            for tag in self.tags(&name).await {
                let digest = self.tag_digest(&name, &tag).await;
                tags.push((tag, digest));
            }
            let manifests = self.manifests(&name).await;
            catalog.push(Repository {
                name,
                tags,
                manifests,
            });
        }
        catalog
    }

    /// Records that `manifest` (with `descriptor`) refers to `subject`.
    pub(crate) async fn add_referrer(
        &self,
        repo: &str,
        subject: &str,
        manifest: &str,
        descriptor: &serde_json::Value,
    ) -> Result<()> {
        let path = self
            .repository(repo)
            .join("_referrers")
            .join(hex_of(subject))
            .join(hex_of(manifest));
        write_atomically(&path, descriptor.to_string().as_bytes())
            .await
            .map_err(io_error("record a referrer"))
    }

    /// Descriptors of the manifests that refer to `subject` and still exist.
    pub(crate) async fn referrers(&self, repo: &str, subject: &str) -> Vec<serde_json::Value> {
        let dir = self
            .repository(repo)
            .join("_referrers")
            .join(hex_of(subject));
        let mut found = Vec::new();
        for hex in list_dir(&dir).await {
            if self
                .manifest_type(repo, &format!("sha256:{hex}"))
                .await
                .is_none()
            {
                continue;
            }
            if let Ok(text) = tokio::fs::read_to_string(dir.join(&hex)).await {
                if let Ok(descriptor) = serde_json::from_str(&text) {
                    found.push(descriptor);
                }
            }
        }
        found
    }

    /// Upload ids with the time they were last written to.
    pub(crate) async fn upload_ages(&self) -> Vec<(String, Duration)> {
        let mut ages = Vec::new();
        for id in list_dir(&self.root.join("uploads")).await {
            let modified = tokio::fs::metadata(self.upload_dir(&id).join("data"))
                .await
                .and_then(|m| m.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            ages.push((id, modified.elapsed().unwrap_or_default()));
        }
        ages
    }

    /// Removes uploads nobody wrote to for `max_age` (killed clients).
    pub async fn remove_stale_uploads(&self, max_age: Duration) -> usize {
        let mut removed = 0;
        for (id, age) in self.upload_ages().await {
            if age > max_age {
                self.cancel(&id).await;
                removed += 1;
            }
        }
        removed
    }
}

/// The names in a directory, sorted; empty if it does not exist.
pub(crate) async fn list_dir(dir: &Path) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(entry)) = entries.next_entry().await {
            if let Some(name) = entry.file_name().to_str() {
                if !name.starts_with(".tmp-") {
                    names.push(name.to_string());
                }
            }
        }
    }
    names.sort();
    names
}

/// `length` bytes of the file at `path` from `start`, as a response body.
///
/// One blocking thread reads 1 MiB chunks ahead of the socket: far fewer
/// hand-offs than async file reads of small buffers.
pub(crate) fn file_body(path: PathBuf, start: u64, length: u64) -> Body {
    const CHUNK: usize = 1 << 20;
    let (sender, receiver) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        let opened = std::fs::File::open(&path).and_then(|mut file| {
            file.seek(std::io::SeekFrom::Start(start))?;
            Ok(file)
        });
        let file = match opened {
            Ok(file) => file,
            Err(error) => {
                let _ = sender.blocking_send(Err(error));
                return;
            }
        };
        let mut reader = file.take(length);
        loop {
            let mut buffer = vec![0; CHUNK];
            let read = match reader.read(&mut buffer) {
                Ok(0) => return,
                Ok(read) => read,
                Err(error) => {
                    let _ = sender.blocking_send(Err(error));
                    return;
                }
            };
            buffer.truncate(read);
            if sender.blocking_send(Ok(Bytes::from(buffer))).is_err() {
                return;
            }
        }
    });
    Body::from_stream(tokio_stream_from(receiver))
}

fn tokio_stream_from<T: Send + 'static>(
    mut receiver: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}
