//! The tokens as etcd has them, kept current in memory by a watch, for the
//! front doors that check a token on every request (the registry, the API):
//! a revoked token fails at once, a new one works at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use tokio::task::JoinHandle;

use crate::records::Token;
use crate::{Store, WatchEvent};

/// The tokens by name; dropping it stops its watch.
#[derive(Debug)]
pub struct TokenCache {
    inner: Arc<Inner>,
    watch: JoinHandle<()>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    by_name: RwLock<HashMap<String, Token>>,
    /// False until the first snapshot: until then each lookup asks etcd.
    ready: AtomicBool,
}

impl Drop for TokenCache {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

impl TokenCache {
    /// Starts the watch that keeps the tokens current (inside a tokio runtime).
    pub fn watch(store: Store) -> TokenCache {
        let inner = Arc::new(Inner {
            store,
            by_name: RwLock::new(HashMap::new()),
            ready: AtomicBool::new(false),
        });
        let watched = inner.clone();
        let watch = tokio::spawn(async move {
            let prefix = watched.store.keys().tokens();
            let mut watch = watched.store.watch(&prefix);
            while let Some(event) = watch.next_event().await {
                let mut map = watched.by_name.write().unwrap_or_else(|p| p.into_inner());
                match event {
                    WatchEvent::Snapshot { entries, .. } => {
                        *map = entries
                            .into_iter()
                            .map(|e| (e.value.name.clone(), e.value))
                            .collect();
                        watched.ready.store(true, Ordering::Release);
                    }
                    WatchEvent::Put { value, .. } => {
                        map.insert(value.name.clone(), value);
                    }
                    WatchEvent::Delete { key, .. } | WatchEvent::Invalid { key, .. } => {
                        map.remove(prefix.child_name(&key));
                    }
                }
            }
        });
        TokenCache { inner, watch }
    }

    fn ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    /// Every token.
    pub async fn all(&self) -> Vec<Token> {
        if !self.ready() {
            return self.listed().await.unwrap_or_default();
        }
        let map = self.inner.by_name.read().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    /// The token called `name`, if its secret is `secret`; etcd is asked
    /// again when the watch may not have caught up (a token just made, a
    /// secret just rotated).
    pub async fn check(&self, name: &str, secret: &str) -> Option<Token> {
        if self.ready() {
            let map = self.inner.by_name.read().unwrap_or_else(|p| p.into_inner());
            if let Some(token) = map.get(name).filter(|t| t.secret_matches(secret)) {
                return Some(token.clone());
            }
        }
        self.fresh(name).await.filter(|t| t.secret_matches(secret))
    }

    /// The token whose secret is `secret` (a bearer secret names no token).
    /// Every token is compared, so the time taken says nothing about which
    /// matched; the match is read again from etcd, so a token revoked a
    /// moment ago, before the watch heard of it, fails too.
    /// A token made a moment ago is looked for in etcd when the cache lacks
    /// it. An error: etcd did not answer (the caller cannot be told apart).
    pub async fn by_secret(&self, secret: &str) -> crate::Result<Option<Token>> {
        if !Token::is_secret_form(secret) {
            return Ok(None);
        }
        let matching = |tokens: Vec<Token>| {
            let mut found = None;
            for token in tokens {
                if token.secret_matches(secret) {
                    found = Some(token);
                }
            }
            found
        };
        let found = match matching(self.all().await) {
            Some(token) => token,
            None => match matching(self.listed().await?) {
                Some(token) => token,
                None => return Ok(None),
            },
        };
        let store = &self.inner.store;
        let key = store.keys().token(&found.name)?;
        Ok(store
            .get(&key)
            .await?
            .map(|token| token.value)
            .filter(|token| token.secret_matches(secret)))
    }

    /// Every token as etcd has it now.
    async fn listed(&self) -> crate::Result<Vec<Token>> {
        let store = &self.inner.store;
        let listing = store.list(&store.keys().tokens()).await?;
        Ok(listing.entries.into_iter().map(|e| e.value).collect())
    }

    /// The token as etcd has it now.
    async fn fresh(&self, name: &str) -> Option<Token> {
        let store = &self.inner.store;
        let key = store.keys().token(name).ok()?;
        store.get(&key).await.ok().flatten().map(|v| v.value)
    }
}
