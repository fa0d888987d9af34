//! Request paths of the distribution API: which endpoint, which repository,
//! which tag or digest, each validated per the spec (and Paz's `<app>` and
//! `<app>/<name>` repository forms).

use crate::error::{RegistryError, Result};

/// A manifest reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reference {
    Tag(String),
    Digest(String),
}

impl Reference {
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Reference::Tag(text) | Reference::Digest(text) => text,
        }
    }
}

/// An endpoint under `/v2/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    Base,
    Catalog,
    Tags { name: String },
    Manifest { name: String, reference: Reference },
    Blob { name: String, digest: String },
    UploadStart { name: String },
    Upload { name: String, id: String },
    Referrers { name: String, digest: String },
}

/// Parses a request path (`/v2/...`).
pub(crate) fn parse_path(path: &str) -> Result<Route> {
    let Some(rest) = path.strip_prefix("/v2/") else {
        return if path == "/v2" {
            Ok(Route::Base)
        } else {
            Err(RegistryError::not_found())
        };
    };
    if rest.is_empty() {
        return Ok(Route::Base);
    }
    if rest == "_catalog" {
        return Ok(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Ok(Route::Tags {
            name: check_name(name)?,
        });
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Ok(Route::UploadStart {
            name: check_name(name)?,
        });
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        let id = check_upload_id(id)?;
        return Ok(Route::Upload {
            name: check_name(name)?,
            id,
        });
    }
    if let Some((name, digest)) = rest.rsplit_once("/blobs/") {
        return Ok(Route::Blob {
            name: check_name(name)?,
            digest: check_digest(digest)?,
        });
    }
    if let Some((name, reference)) = rest.rsplit_once("/manifests/") {
        let reference = if reference.contains(':') {
            Reference::Digest(check_digest(reference)?)
        } else {
            Reference::Tag(check_tag(reference)?)
        };
        return Ok(Route::Manifest {
            name: check_name(name)?,
            reference,
        });
    }
    if let Some((name, digest)) = rest.rsplit_once("/referrers/") {
        return Ok(Route::Referrers {
            name: check_name(name)?,
            digest: check_digest(digest)?,
        });
    }
    Err(RegistryError::not_found())
}

/// `<app>` or `<app>/<name>`, each component per the spec's grammar.
pub(crate) fn check_name(name: &str) -> Result<String> {
    let refuse = |why: &str| {
        RegistryError::name_invalid(format!(
            "repository name `{name}` is invalid: {why}; use APP or APP/NAME, lowercase letters, digits and separators (. _ -)"
        ))
    };
    let components: Vec<&str> = name.split('/').collect();
    if components.len() > 2 {
        return Err(refuse("it has more than two components"));
    }
    if store::AppName::new(components[0]).is_err() {
        return Err(refuse("the first component must be an app name"));
    }
    if !components.iter().all(|component| spec_component(component)) {
        return Err(refuse("a component breaks the spec's grammar"));
    }
    Ok(name.to_string())
}

/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`
fn spec_component(component: &str) -> bool {
    let bytes = component.as_bytes();
    if bytes.is_empty() {
        return false;
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alnum(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let separator_start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let separator = &component[separator_start..i];
        let valid = separator == "."
            || separator == "_"
            || separator == "__"
            || separator.bytes().all(|b| b == b'-');
        if !valid || i == bytes.len() {
            return false;
        }
    }
}

/// `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`
pub(crate) fn check_tag(tag: &str) -> Result<String> {
    let mut chars = tag.chars();
    let valid = tag.len() <= 128
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(tag.to_string())
    } else {
        Err(RegistryError::manifest_invalid(format!(
            "tag `{tag}` is invalid: use up to 128 letters, digits, _ . -, not starting with . or -"
        )))
    }
}

/// `sha256:<64 lowercase hex>`; other algorithms are not supported.
pub(crate) fn check_digest(digest: &str) -> Result<String> {
    match digest.split_once(':') {
        Some(("sha256", hex))
            if hex.len() == 64
                && hex
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) =>
        {
            Ok(digest.to_string())
        }
        Some(("sha256", _)) => Err(RegistryError::digest_invalid(format!(
            "digest `{digest}` is invalid: sha256 digests have 64 lowercase hex digits"
        ))),
        _ => Err(RegistryError::digest_invalid(format!(
            "digest `{digest}` is not supported: this registry uses sha256:<hex>"
        ))),
    }
}

fn check_upload_id(id: &str) -> Result<String> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_string())
    } else {
        Err(RegistryError::upload_unknown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_their_endpoint() {
        let digest = format!("sha256:{}", "a".repeat(64));
        assert_eq!(parse_path("/v2/").unwrap(), Route::Base);
        assert_eq!(parse_path("/v2/_catalog").unwrap(), Route::Catalog);
        assert_eq!(
            parse_path("/v2/web/tags/list").unwrap(),
            Route::Tags { name: "web".into() }
        );
        assert_eq!(
            parse_path("/v2/web/worker/manifests/v1.2").unwrap(),
            Route::Manifest {
                name: "web/worker".into(),
                reference: Reference::Tag("v1.2".into())
            }
        );
        assert_eq!(
            parse_path(&format!("/v2/web/manifests/{digest}")).unwrap(),
            Route::Manifest {
                name: "web".into(),
                reference: Reference::Digest(digest.clone())
            }
        );
        assert_eq!(
            parse_path("/v2/web/blobs/uploads/").unwrap(),
            Route::UploadStart { name: "web".into() }
        );
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(
            parse_path(&format!("/v2/web/blobs/uploads/{id}")).unwrap(),
            Route::Upload {
                name: "web".into(),
                id: id.into()
            }
        );
        assert_eq!(
            parse_path(&format!("/v2/web/referrers/{digest}")).unwrap(),
            Route::Referrers {
                name: "web".into(),
                digest
            }
        );
    }

    #[test]
    fn bad_names_tags_and_digests_are_refused_with_the_spec_code() {
        for name in [
            "Web", "web/a/b", "1web", "web/-x", "web/x-", "web/a..b", "web/", "../etc",
        ] {
            let error = check_name(name).unwrap_err();
            assert_eq!(error.code, "NAME_INVALID", "{name}");
        }
        for name in ["web", "web/worker", "web/a.b", "web/a__b", "web/a---b"] {
            assert!(check_name(name).is_ok(), "{name}");
        }
        assert_eq!(check_tag(".hidden").unwrap_err().code, "MANIFEST_INVALID");
        assert_eq!(
            check_tag(&"a".repeat(129)).unwrap_err().code,
            "MANIFEST_INVALID"
        );
        assert_eq!(
            check_digest("sha256:abc").unwrap_err().code,
            "DIGEST_INVALID"
        );
        assert_eq!(
            check_digest(&format!("sha512:{}", "a".repeat(128)))
                .unwrap_err()
                .code,
            "DIGEST_INVALID"
        );
        assert_eq!(
            check_digest(&format!("sha256:{}", "A".repeat(64)))
                .unwrap_err()
                .code,
            "DIGEST_INVALID"
        );
        assert_eq!(
            parse_path("/v2/web/blobs/uploads/not-an-id")
                .unwrap_err()
                .code,
            "BLOB_UPLOAD_UNKNOWN"
        );
        assert_eq!(parse_path("/v3/web").unwrap_err().code, "NOT_FOUND");
    }
}
