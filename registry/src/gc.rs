//! Garbage collection (`paz registry gc`): removes manifests and blobs that no
//! tag, no release in `/paz/apps/*/releases` and no upload in progress refers
//! to. Safe while the registry serves: nothing younger than `min_age` is
//! touched, so a blob pushed just before its manifest stays.

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use store::Store;

use crate::storage::{list_dir, Storage};

/// What a collection removed (or, in a dry run, would remove).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// `repository@digest` of each untagged, unreleased manifest.
    pub manifests: Vec<String>,
    pub blobs: Vec<String>,
    pub bytes: u64,
    pub uploads: usize,
}

fn age(path: &std::path::Path) -> Duration {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .unwrap_or_default()
}

/// The repository part of a release's image (`host:port/web@sha256:..` -> `web`).
fn release_repository(image: &str) -> Option<(String, String)> {
    let parsed = store::images::Reference::parse(image);
    Some((parsed.path().to_string(), parsed.digest?.to_string()))
}

/// The first release (app, number) whose image is `repository@digest`.
pub(crate) async fn release_of(
    store: &Store,
    repository: &str,
    digest: &str,
) -> Result<Option<(store::AppName, u64)>, store::StoreError> {
    let apps = store.list(&store.keys().apps()).await?;
    for app in &apps.entries {
        let releases = store.list(&store.keys().releases(&app.value.name)).await?;
        for release in releases.entries {
            if release_repository(&release.value.image)
                .is_some_and(|(name, pinned)| name == repository && pinned == digest)
            {
                return Ok(Some((app.value.name.clone(), release.value.n)));
            }
        }
    }
    Ok(None)
}

/// Runs a collection; with `dry_run` it only reports.
pub async fn collect(
    storage: &Storage,
    store: &Store,
    dry_run: bool,
    min_age: Duration,
) -> Result<GcReport, store::StoreError> {
    // Roots: every tag, and every release's image.
    let mut roots: BTreeSet<(String, String)> = BTreeSet::new();
    for repository in storage.repositories().await {
        for tag in storage.tags(&repository).await {
            if let Some(digest) = storage.tag_digest(&repository, &tag).await {
                roots.insert((repository.clone(), digest));
            }
        }
    }
    let apps = store.list(&store.keys().apps()).await?;
    for app in &apps.entries {
        let releases = store.list(&store.keys().releases(&app.value.name)).await?;
        for release in releases.entries {
            if let Some(root) = release_repository(&release.value.image) {
                roots.insert(root);
            }
        }
    }

    // Mark: manifests reachable from the roots (index children, referrers), and their blobs.
    let mut kept_manifests: HashSet<(String, String)> = HashSet::new();
    let mut kept_blobs: HashSet<String> = HashSet::new();
    let mut pending: Vec<(String, String)> = roots.into_iter().collect();
    while let Some((repository, digest)) = pending.pop() {
        if !kept_manifests.insert((repository.clone(), digest.clone())) {
            continue;
        }
        kept_blobs.insert(digest.clone());
        for referrer in storage.referrers(&repository, &digest).await {
            if let Some(child) = referrer.get("digest").and_then(Value::as_str) {
                pending.push((repository.clone(), child.to_string()));
            }
        }
        let Ok(bytes) = storage.read_blob(&digest).await else {
            continue;
        };
        let Ok(manifest) = serde_json::from_slice::<Value>(&bytes) else {
            continue;
        };
        for child in manifest
            .get("manifests")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(child) = child.get("digest").and_then(Value::as_str) {
                pending.push((repository.clone(), child.to_string()));
            }
        }
        let config = manifest.get("config").into_iter();
        let layers = manifest
            .get("layers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten();
        for blob in config.chain(layers) {
            if let Some(blob) = blob.get("digest").and_then(Value::as_str) {
                kept_blobs.insert(blob.to_string());
            }
        }
    }

    // Sweep: manifests and blob links of each repository, then the blobs themselves.
    let mut report = GcReport::default();
    let repositories_dir = storage.root().join("repositories");
    for repository in storage.repositories().await {
        let dir = repositories_dir.join(&repository);
        for digest in storage.manifests(&repository).await {
            let path = dir
                .join("_manifests/revisions")
                .join(digest.trim_start_matches("sha256:"));
            if kept_manifests.contains(&(repository.clone(), digest.clone()))
                || age(&path) < min_age
            {
                continue;
            }
            report.manifests.push(format!("{repository}@{digest}"));
            if !dry_run {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
        for hex in list_dir(&dir.join("_layers")).await {
            let path = dir.join("_layers").join(&hex);
            if !kept_blobs.contains(&format!("sha256:{hex}")) && age(&path) >= min_age && !dry_run {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
    }
    let blobs_dir = storage.root().join("blobs/sha256");
    for prefix in list_dir(&blobs_dir).await {
        for hex in list_dir(&blobs_dir.join(&prefix)).await {
            let digest = format!("sha256:{hex}");
            let path = blobs_dir.join(&prefix).join(&hex);
            if kept_blobs.contains(&digest) || age(&path) < min_age {
                continue;
            }
            report.bytes += std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            report.blobs.push(digest);
            if !dry_run {
                let _ = tokio::fs::remove_file(&path).await;
            }
        }
    }
    // Uploads a client abandoned a day ago are not in progress.
    let stale = Duration::from_secs(24 * 3600).max(min_age);
    for (id, upload_age) in storage.upload_ages().await {
        if upload_age > stale {
            report.uploads += 1;
            if !dry_run {
                storage.cancel(&id).await;
            }
        }
    }
    Ok(report)
}
