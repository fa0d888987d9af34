//! Image events: written to `/paz/images/events/` in etcd, where the deployer
//! watches for new images and the web UI lists recent pushes. The newest
//! [`KEEP`] are kept.

use store::records::ImageEvent;
use store::{Store, StoreError};

/// How many events stay in etcd.
pub const KEEP: usize = 200;

/// Records `event` (stamping its time) and trims the oldest beyond [`KEEP`].
pub async fn publish(store: &Store, mut event: ImageEvent) -> Result<(), StoreError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    event.at = now.as_secs();
    // Zero-padded nanoseconds sort in time order; the suffix keeps two events
    // of one nanosecond apart.
    let id = format!(
        "{:020}-{}",
        now.as_nanos(),
        hex::encode(rand::random::<[u8; 3]>())
    );
    store.put(&store.keys().image_event(&id)?, &event).await?;
    tracing::info!(repository = %event.repository, tag = ?event.tag, digest = ?event.digest, by = %event.by, source = ?event.source, "image event");
    let listing = store.list(&store.keys().image_events()).await?;
    let excess = listing.entries.len().saturating_sub(KEEP);
    for entry in listing.entries.iter().take(excess) {
        let id = store
            .keys()
            .image_events()
            .child_name(&entry.key)
            .to_string();
        store
            .transaction()
            .delete(&store.keys().image_event(&id)?)
            .delete(&store.keys().image_claim(&id)?)
            .commit()
            .await?;
    }
    Ok(())
}
