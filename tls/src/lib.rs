//! Certificates as Paz keeps them: a PEM bundle (chain and key) checked
//! before it is stored, the facts `certs:list` shows, and the
//! [`CertifiedKey`] the proxy hands rustls for a name.
//!
//! Every check that can refuse a bundle is here, so the verbs (which store
//! one) and the proxy (which serves one) agree on what a good one is.

#![forbid(unsafe_code)]

use std::sync::Arc;

use base64::Engine;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a bundle or certificate is refused; each says what to send instead.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TlsError {
    #[error("the input is not PEM ({0}): send the certificate chain and the private key as PEM")]
    Pem(String),
    #[error("no certificate in the PEM: send the chain (leaf first), then the private key")]
    NoCertificate,
    #[error("no private key in the PEM: send it after the chain (BEGIN PRIVATE KEY, BEGIN EC PRIVATE KEY or BEGIN RSA PRIVATE KEY)")]
    NoKey,
    #[error("the PEM has more than one private key: send only the leaf's")]
    TwoKeys,
    #[error("certificate {index} of the chain cannot be read: {reason}")]
    Unreadable { index: usize, reason: String },
    #[error("certificate {index} of the chain expired at {not_after}: renew it, or send a chain that is valid now")]
    Expired { index: usize, not_after: String },
    #[error("certificate {index} of the chain is not valid before {not_before}")]
    NotYetValid { index: usize, not_before: String },
    #[error("the certificate is for {names}, not {domain}")]
    OtherName { domain: String, names: String },
    #[error(
        "the private key does not match the certificate: send the key the leaf was issued for"
    )]
    KeyMismatch,
    #[error("the private key cannot be used: {0}")]
    BadKey(String),
}

/// What a leaf certificate says of itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The DNS names it covers (its subjectAltNames, else its common name).
    pub names: Vec<String>,
    /// Its validity, seconds since the Unix epoch.
    pub not_before: u64,
    pub not_after: u64,
    /// Its issuer's common name, else the whole issuer name.
    pub issuer: String,
}

/// A checked bundle, re-encoded: the chain and the key as PEM, and the leaf's facts.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub chain_pem: String,
    pub key_pem: String,
    pub leaf: Leaf,
}

/// Checks `pem` (a chain, leaf first, and its private key, in any order)
/// as a certificate for `domain` at `now` (seconds since the Unix epoch):
/// every certificate readable and valid now, the leaf for `domain` (or a
/// wildcard over it), one private key that matches the leaf.
pub fn check_bundle(domain: &str, pem: &[u8], now: u64) -> Result<Bundle, TlsError> {
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = section.map_err(|error| TlsError::Pem(error.to_string()))?;
        match kind {
            SectionKind::Certificate => chain.push(CertificateDer::from(der)),
            SectionKind::PrivateKey | SectionKind::EcPrivateKey | SectionKind::RsaPrivateKey => {
                if key.is_some() {
                    return Err(TlsError::TwoKeys);
                }
                key = PrivateKeyDer::from_pem(kind, der);
            }
            _ => {}
        }
    }
    if chain.is_empty() {
        return Err(if key.is_none() && !contains_pem(pem) {
            TlsError::Pem("no BEGIN line".into())
        } else {
            TlsError::NoCertificate
        });
    }
    let key = key.ok_or(TlsError::NoKey)?;
    let mut leaf = None;
    for (index, der) in chain.iter().enumerate() {
        let facts = read(der).map_err(|reason| TlsError::Unreadable {
            index: index + 1,
            reason,
        })?;
        if facts.not_after <= now {
            return Err(TlsError::Expired {
                index: index + 1,
                not_after: utc(facts.not_after),
            });
        }
        // A minute's leeway for clocks a little apart.
        if facts.not_before > now + 60 {
            return Err(TlsError::NotYetValid {
                index: index + 1,
                not_before: utc(facts.not_before),
            });
        }
        leaf.get_or_insert(facts);
    }
    let leaf = leaf.expect("the chain has a certificate");
    if !leaf.names.iter().any(|name| covers(name, domain)) {
        return Err(TlsError::OtherName {
            domain: domain.to_string(),
            names: leaf.names.join(", "),
        });
    }
    let key_pem = to_pem(key_label(&key), key.secret_der());
    certified(chain.clone(), key)?;
    let chain_pem = chain.iter().map(|der| to_pem("CERTIFICATE", der)).collect();
    Ok(Bundle {
        chain_pem,
        key_pem,
        leaf,
    })
}

/// The facts of the leaf (the first certificate) of a PEM chain.
pub fn leaf_of(chain_pem: &str) -> Result<Leaf, TlsError> {
    let der = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or(TlsError::NoCertificate)?
        .map_err(|error| TlsError::Pem(error.to_string()))?;
    read(&der).map_err(|reason| TlsError::Unreadable { index: 1, reason })
}

/// The key rustls serves for a stored chain and key.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| TlsError::Pem(error.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|_| TlsError::NoKey)?;
    certified(chain, key).map(Arc::new)
}

fn certified(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<CertifiedKey, TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    CertifiedKey::from_der(chain, key, &provider).map_err(|error| match error {
        rustls::Error::InconsistentKeys(_) => TlsError::KeyMismatch,
        other => TlsError::BadKey(other.to_string()),
    })
}

/// Whether the certificate name `pattern` (a name, or `*.` and a name)
/// covers `host`: a wildcard stands for exactly one label (RFC 6125 §6.4.3).
pub fn covers(pattern: &str, host: &str) -> bool {
    let (pattern, host) = (pattern.to_ascii_lowercase(), host.to_ascii_lowercase());
    match pattern.strip_prefix("*.") {
        Some(base) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == base),
        None => pattern == host,
    }
}

fn contains_pem(pem: &[u8]) -> bool {
    pem.windows(11).any(|window| window == b"-----BEGIN ")
}

fn key_label(key: &PrivateKeyDer<'_>) -> &'static str {
    match key {
        PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
        PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
        _ => "PRIVATE KEY",
    }
}

/// DER as PEM, 64 characters a line.
fn to_pem(label: &str, der: &[u8]) -> String {
    let text = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = format!("-----BEGIN {label}-----\n");
    for line in text.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        pem.push('\n');
    }
    pem.push_str(&format!("-----END {label}-----\n"));
    pem
}

fn read(der: &[u8]) -> Result<Leaf, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|error| error.to_string())?;
    let seconds = |time: x509_parser::time::ASN1Time| time.timestamp().max(0) as u64;
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
            .collect(),
        Ok(None) => Vec::new(),
        Err(error) => return Err(error.to_string()),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_string),
        );
    }
    let issuer = cert
        .issuer()
        .iter_common_name()
        .find_map(|cn| cn.as_str().ok())
        .map_or_else(|| cert.issuer().to_string(), str::to_string);
    Ok(Leaf {
        names,
        not_before: seconds(cert.validity().not_before),
        not_after: seconds(cert.validity().not_after),
        issuer,
    })
}

/// Seconds since the Unix epoch as RFC 3339 UTC.
fn utc(seconds: u64) -> String {
    let time = x509_parser::time::ASN1Time::from_timestamp(seconds as i64);
    time.map_or_else(|_| seconds.to_string(), |time| time.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    /// A self-signed certificate for `names`, valid `from..until`, and its key.
    fn made(names: &[&str], from: u64, until: u64) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.not_before = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(from);
        params.not_after = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(until);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn a_good_bundle_is_read_in_either_order() {
        let (cert, key) = made(&["shop.example.com"], NOW - 10, NOW + 86400);
        for pem in [format!("{cert}{key}"), format!("{key}\n{cert}")] {
            let bundle = check_bundle("shop.example.com", pem.as_bytes(), NOW).unwrap();
            assert_eq!(bundle.leaf.names, ["shop.example.com"]);
            assert_eq!(bundle.leaf.not_after, NOW + 86400);
            assert!(certified_key(&bundle.chain_pem, &bundle.key_pem).is_ok());
            assert_eq!(leaf_of(&bundle.chain_pem).unwrap(), bundle.leaf);
        }
    }

    #[test]
    fn bad_bundles_are_refused_with_their_reason() {
        let (cert, key) = made(&["shop.example.com"], NOW - 10, NOW + 86400);
        let (_, other_key) = made(&["shop.example.com"], NOW - 10, NOW + 86400);
        let (old, old_key) = made(&["shop.example.com"], NOW - 86400, NOW - 1);
        let check = |domain: &str, pem: String| check_bundle(domain, pem.as_bytes(), NOW);
        assert_eq!(
            check("shop.example.com", format!("{cert}{other_key}")).unwrap_err(),
            TlsError::KeyMismatch
        );
        assert!(matches!(
            check("shop.example.com", format!("{old}{old_key}")).unwrap_err(),
            TlsError::Expired { index: 1, .. }
        ));
        assert!(matches!(
            check("shop.example.com", "garbage".into()).unwrap_err(),
            TlsError::Pem(_)
        ));
        let mangled = cert.replace('A', "*");
        assert!(check("shop.example.com", format!("{mangled}{key}")).is_err());
        assert_eq!(
            check("shop.example.com", cert.clone()).unwrap_err(),
            TlsError::NoKey
        );
        assert_eq!(
            check("shop.example.com", key.clone()).unwrap_err(),
            TlsError::NoCertificate
        );
        assert_eq!(
            check("shop.example.com", format!("{cert}{key}{key}")).unwrap_err(),
            TlsError::TwoKeys
        );
        assert!(matches!(
            check("other.example.com", format!("{cert}{key}")).unwrap_err(),
            TlsError::OtherName { .. }
        ));
    }

    #[test]
    fn a_wildcard_covers_one_label() {
        assert!(covers("*.example.com", "shop.example.com"));
        assert!(covers("*.Example.com", "SHOP.example.com"));
        assert!(!covers("*.example.com", "example.com"));
        assert!(!covers("*.example.com", "a.shop.example.com"));
        assert!(covers("shop.example.com", "shop.example.com"));
        assert!(!covers("shop.example.com", "www.shop.example.com"));
        let (cert, key) = made(&["*.example.com"], NOW - 10, NOW + 86400);
        assert!(check_bundle("*.example.com", format!("{cert}{key}").as_bytes(), NOW).is_ok());
    }
}
