//! The proxy's certificates: a map from name to rustls key, built aside
//! from `/paz/tls/certs/` and swapped whole (as the routing table is), and
//! the resolver that picks one by SNI. A name with none (or only an
//! expired one) gets a handshake failure, logged once per name, never
//! another name's certificate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use store::records::Certificate;
use tracing::warn;

/// A key to serve, and when its certificate expires (seconds since the epoch).
type Served = (Arc<CertifiedKey>, u64);

/// Every certificate the proxy can serve, by the name it is stored under.
#[derive(Debug, Default)]
pub(crate) struct Certs {
    exact: HashMap<String, Served>,
    /// `*.example.com` by `example.com`.
    wildcard: HashMap<String, Served>,
}

impl Certs {
    /// The map of the issued certificates among `records`; one that cannot
    /// be read is left out (and said), the others still serve.
    pub(crate) fn build<'a>(records: impl IntoIterator<Item = &'a Certificate>) -> Certs {
        let mut certs = Certs::default();
        for record in records {
            if !record.is_issued() {
                continue;
            }
            // The expiry as the certificate says it, whatever the record says.
            let read = tls::certified_key(&record.chain_pem, &record.key_pem)
                .and_then(|key| Ok((key, tls::leaf_of(&record.chain_pem)?.not_after)));
            let key = match read {
                Ok(served) => served,
                Err(error) => {
                    warn!(domain = %record.domain, %error, "a stored certificate cannot be served; left out");
                    continue;
                }
            };
            match record.domain.strip_prefix("*.") {
                Some(base) => certs.wildcard.insert(base.to_ascii_lowercase(), key),
                None => certs.exact.insert(record.domain.to_ascii_lowercase(), key),
            };
        }
        certs
    }

    /// The key for `host` (lowercase) whose certificate is valid at `now`:
    /// its own, else a wildcard over it.
    pub(crate) fn find(&self, host: &str, now: u64) -> Option<&Arc<CertifiedKey>> {
        fn valid(served: &Served, now: u64) -> Option<&Arc<CertifiedKey>> {
            (served.1 > now).then_some(&served.0)
        }
        self.exact
            .get(host)
            .and_then(|served| valid(served, now))
            .or_else(|| {
                let (_, parent) = host.split_once('.')?;
                self.wildcard
                    .get(parent)
                    .and_then(|served| valid(served, now))
            })
    }

    pub(crate) fn len(&self) -> usize {
        self.exact.len() + self.wildcard.len()
    }
}

/// Unknown names said at most this many times in a process's life, so that
/// a scan of random names cannot fill the log or the memory.
const MAX_LOGGED: usize = 1024;

/// Picks the certificate of the SNI name from the current map.
#[derive(Debug)]
pub(crate) struct Resolver {
    certs: Arc<ArcSwap<Certs>>,
    logged: Mutex<HashSet<String>>,
}

impl Resolver {
    pub(crate) fn new(certs: Arc<ArcSwap<Certs>>) -> Resolver {
        Resolver {
            certs,
            logged: Mutex::default(),
        }
    }

    fn refuse(&self, name: &str) {
        let mut logged = self.logged.lock().expect("not poisoned");
        if logged.len() < MAX_LOGGED && logged.insert(name.to_string()) {
            warn!(
                name,
                "TLS handshake refused: no certificate for this name (logged once per name)"
            );
        }
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else {
            self.refuse("(no SNI)");
            return None;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let found = self.certs.load().find(&name, support::now()).cloned();
        if found.is_none() {
            self.refuse(&name);
        }
        found
    }
}

/// The TLS settings of the HTTPS listener: TLS 1.2 and 1.3, HTTP/2 and
/// HTTP/1.1 by ALPN, session tickets so that a returning client resumes.
pub(crate) fn server_config(certs: Arc<ArcSwap<Certs>>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Resolver::new(certs)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(16 * 1024);
    if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
        config.ticketer = ticketer;
    }
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate for `domain` that expires at `not_after`, stored as
    /// issued (the record's own `not_after` left unset: the proxy reads the
    /// certificate's).
    fn record(domain: &str, not_after: u64) -> Certificate {
        let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1);
        params.not_after =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(not_after);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Certificate {
            chain_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            ..Certificate::pending(domain, 0)
        }
    }

    #[test]
    fn a_name_gets_its_own_valid_certificate_else_a_valid_wildcard_else_none() {
        let now = 1_000;
        let own = record("shop.example.com", now + 10);
        let wildcard = record("*.example.com", now + 20);
        let certs = Certs::build([&own, &wildcard]);
        let served = |host: &str, at: u64| certs.find(host, at).map(Arc::as_ptr);
        let own_key = certs.exact["shop.example.com"].0.clone();
        let wild_key = certs.wildcard["example.com"].0.clone();
        assert_eq!(served("shop.example.com", now), Some(Arc::as_ptr(&own_key)));
        assert_eq!(
            served("blog.example.com", now),
            Some(Arc::as_ptr(&wild_key))
        );
        // Its own expired: the wildcard, while that one is valid.
        assert_eq!(
            served("shop.example.com", now + 15),
            Some(Arc::as_ptr(&wild_key))
        );
        assert_eq!(served("shop.example.com", now + 25), None);
        assert_eq!(served("example.com", now), None, "a wildcard is one label");
        assert_eq!(served("a.shop.example.com", now), None);
        let pending = Certificate::pending("new.example.org", now);
        assert_eq!(Certs::build([&pending]).len(), 0, "nothing issued yet");
    }
}
