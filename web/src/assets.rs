//! The files the pages load: our one style sheet, and htmx with its SSE
//! extension vendored from npm (`assets/VENDORED` has their versions and
//! sha256), all embedded in the binary, so nothing comes from another site.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// Each file: its name under `/static/`, its type and its bytes.
const FILES: &[(&str, &str, &[u8])] = &[
    (
        "paz.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/paz.css"),
    ),
    (
        "htmx.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/htmx.min.js"),
    ),
    (
        "sse.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../assets/sse.min.js"),
    ),
];

/// A version tag for the files' URLs, so that a new binary's files are
/// fetched again while each is cached for a long time.
pub(crate) fn version() -> &'static str {
    static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        use sha2::Digest;
        let mut hash = sha2::Sha256::new();
        for (_, _, bytes) in FILES {
            hash.update(bytes);
        }
        hex::encode(&hash.finalize()[..6])
    });
    &VERSION
}

/// `GET /static/{file}`.
pub(crate) async fn file(Path(name): Path<String>) -> Response {
    match FILES.iter().find(|(file, _, _)| *file == name) {
        Some((_, kind, bytes)) => (
            [
                (header::CONTENT_TYPE, *kind),
                (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
            ],
            *bytes,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    /// What is embedded is what `VENDORED` says was vendored.
    #[test]
    fn the_vendored_files_are_the_pinned_ones() {
        let listed = include_str!("../assets/VENDORED");
        let mut checked = 0;
        for line in listed
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let [name, _package, sha256] = fields[..] else {
                panic!("VENDORED: `{line}` is not `file package@version sha256`");
            };
            let (_, _, bytes) = super::FILES
                .iter()
                .find(|(file, _, _)| *file == name)
                .unwrap_or_else(|| panic!("{name} is listed but not embedded"));
            assert_eq!(hex::encode(sha2::Sha256::digest(bytes)), sha256, "{name}");
            checked += 1;
        }
        assert_eq!(checked, 2, "htmx and its SSE extension");
    }
}
