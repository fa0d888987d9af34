//! The distribution API endpoints under `/v2/`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use store::records::{ImageEvent, ImageSource};

use crate::auth::{self, Principal};
use crate::error::{RegistryError, Result};
use crate::names::{self, Reference, Route};
use crate::storage::file_body;
use crate::AppState;

/// The largest manifest accepted.
pub const MAX_MANIFEST: usize = 4 * 1024 * 1024;

const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

fn is_index(media_type: &str) -> bool {
    media_type.ends_with("index.v1+json") || media_type.ends_with("manifest.list.v2+json")
}

pub(crate) async fn dispatch(State(state): State<Arc<AppState>>, request: Request) -> Response {
    match handle(&state, request).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    }
}

fn query(request: &Request) -> HashMap<String, String> {
    request
        .uri()
        .query()
        .map(|query| {
            query
                .split('&')
                .filter_map(|pair| {
                    let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                    Some((percent_decode(key)?, percent_decode(value)?))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(state: &AppState, request: Request) -> Result<Response> {
    let route = names::parse_path(request.uri().path())?;
    let who = auth::basic(&state.tokens, request.headers()).await?;
    let query = query(&request);
    let method = request.method().clone();
    let head = method == Method::HEAD;
    match (method, route) {
        (Method::GET | Method::HEAD, Route::Base) => {
            Ok((StatusCode::OK, axum::Json(json!({}))).into_response())
        }
        (Method::GET, Route::Catalog) => catalog(state, &who, &query).await,
        (Method::GET, Route::Tags { name }) => {
            who.require_pull(&name)?;
            tags(state, &name, &query).await
        }
        (Method::GET | Method::HEAD, Route::Manifest { name, reference }) => {
            who.require_pull(&name)?;
            get_manifest(state, &name, &reference, request.headers(), head).await
        }
        (Method::PUT, Route::Manifest { name, reference }) => {
            who.require_push(&name)?;
            put_manifest(state, &who, &name, &reference, request).await
        }
        (Method::DELETE, Route::Manifest { name, reference }) => {
            who.require_push(&name)?;
            delete_manifest(state, &name, &reference).await
        }
        (Method::GET | Method::HEAD, Route::Blob { name, digest }) => {
            who.require_pull(&name)?;
            get_blob(state, &name, &digest, request.headers(), head).await
        }
        (Method::DELETE, Route::Blob { name, digest }) => {
            who.require_push(&name)?;
            if state.storage.unlink_blob(&name, &digest).await? {
                Ok(StatusCode::ACCEPTED.into_response())
            } else {
                Err(RegistryError::blob_unknown(&digest))
            }
        }
        (Method::POST, Route::UploadStart { name }) => {
            who.require_push(&name)?;
            start_upload(state, &who, &name, &query, request).await
        }
        (Method::PATCH, Route::Upload { name, id }) => {
            who.require_push(&name)?;
            patch_upload(state, &name, &id, request).await
        }
        (Method::PUT, Route::Upload { name, id }) => {
            who.require_push(&name)?;
            put_upload(state, &name, &id, &query, request).await
        }
        (Method::GET, Route::Upload { name, id }) => {
            who.require_push(&name)?;
            let upload = state.storage.upload(&name, &id).await?;
            let size = upload.lock().await.size;
            Ok(upload_response(StatusCode::NO_CONTENT, &name, &id, size))
        }
        (Method::DELETE, Route::Upload { name, id }) => {
            who.require_push(&name)?;
            state.storage.upload(&name, &id).await?;
            state.storage.cancel(&id).await;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        (Method::GET, Route::Referrers { name, digest }) => {
            who.require_pull(&name)?;
            referrers(state, &name, &digest, &query).await
        }
        (method, _) => Err(RegistryError::unsupported(format!(
            "{method} is not supported on this endpoint"
        ))),
    }
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// `n` and `last` of a paginated list, and the `Link` to the next page.
fn paginate(
    items: Vec<String>,
    query: &HashMap<String, String>,
    path: &str,
) -> Result<(Vec<String>, Option<String>)> {
    let n = match query.get("n") {
        Some(n) => Some(
            n.parse::<usize>()
                .map_err(|_| RegistryError::size_invalid(format!("n={n} is not a number")))?,
        ),
        None => None,
    };
    let mut items: Vec<String> = match query.get("last") {
        Some(last) => items.into_iter().filter(|item| item > last).collect(),
        None => items,
    };
    let mut link = None;
    if let Some(n) = n {
        if items.len() > n {
            items.truncate(n);
            if let Some(last) = items.last() {
                link = Some(format!("<{path}?n={n}&last={last}>; rel=\"next\""));
            }
        }
    }
    Ok((items, link))
}

async fn catalog(
    state: &AppState,
    who: &Principal,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let names: Vec<String> = state
        .storage
        .repositories()
        .await
        .into_iter()
        .filter(|name| who.may_pull(name))
        .collect();
    let (names, link) = paginate(names, query, "/v2/_catalog")?;
    let mut response = axum::Json(json!({ "repositories": names })).into_response();
    if let Some(link) = link {
        response
            .headers_mut()
            .insert(header::LINK, header_value(&link));
    }
    Ok(response)
}

async fn tags(state: &AppState, name: &str, query: &HashMap<String, String>) -> Result<Response> {
    if !state.storage.repository_exists(name) {
        return Err(RegistryError::name_unknown(name));
    }
    let tags = state.storage.tags(name).await;
    let (tags, link) = paginate(tags, query, &format!("/v2/{name}/tags/list"))?;
    let mut response = axum::Json(json!({ "name": name, "tags": tags })).into_response();
    if let Some(link) = link {
        response
            .headers_mut()
            .insert(header::LINK, header_value(&link));
    }
    Ok(response)
}

/// The digest a reference names in `name`, if the repository holds it.
async fn resolve(state: &AppState, name: &str, reference: &Reference) -> Result<(String, String)> {
    let digest = match reference {
        Reference::Digest(digest) => digest.clone(),
        Reference::Tag(tag) => state
            .storage
            .tag_digest(name, tag)
            .await
            .ok_or_else(|| RegistryError::manifest_unknown(tag))?,
    };
    let media_type = state
        .storage
        .manifest_type(name, &digest)
        .await
        .ok_or_else(|| RegistryError::manifest_unknown(reference.as_str()))?;
    Ok((digest, media_type))
}

async fn get_manifest(
    state: &AppState,
    name: &str,
    reference: &Reference,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    let (digest, media_type) = resolve(state, name, reference).await?;
    // Content negotiation: a client that lists types gets one of them or nothing.
    let accepted: Vec<String> = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|part| part.split(';').next().unwrap_or("").trim().to_string())
        .filter(|part| !part.is_empty())
        .collect();
    if !accepted.is_empty() && !accepted.iter().any(|a| a == &media_type || a == "*/*") {
        return Err(RegistryError::manifest_unknown(&format!(
            "{} as any of {} (it is a {media_type})",
            reference.as_str(),
            accepted.join(", ")
        )));
    }
    let bytes = state.storage.read_blob(&digest).await?;
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, media_type)
        .header(header::CONTENT_LENGTH, bytes.len())
        .header("Docker-Content-Digest", &digest);
    if let Reference::Tag(_) = reference {
        response = response.header(header::ETAG, format!("\"{digest}\""));
    }
    let body = if head {
        Body::empty()
    } else {
        Body::from(bytes)
    };
    response
        .body(body)
        .map_err(|error| RegistryError::internal("build a response", error))
}

/// The digests a manifest refers to, and its subject, after checking its shape.
fn references(
    media_type: &str,
    manifest: &Value,
) -> Result<(Vec<String>, Vec<String>, Option<String>)> {
    let digest_of = |value: &Value, what: &str| -> Result<String> {
        let digest = value
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| RegistryError::manifest_invalid(format!("{what} has no digest")))?;
        names::check_digest(digest).map_err(|_| {
            RegistryError::manifest_invalid(format!("{what} has an invalid digest {digest}"))
        })
    };
    let subject = match manifest.get("subject") {
        Some(subject) => Some(digest_of(subject, "the subject")?),
        None => None,
    };
    if is_index(media_type) {
        let manifests = manifest
            .get("manifests")
            .and_then(Value::as_array)
            .ok_or_else(|| RegistryError::manifest_invalid("an index needs a manifests list"))?;
        let digests = manifests
            .iter()
            .map(|m| digest_of(m, "a manifest entry"))
            .collect::<Result<_>>()?;
        return Ok((Vec::new(), digests, subject));
    }
    let config = manifest
        .get("config")
        .ok_or_else(|| RegistryError::manifest_invalid("an image manifest needs a config"))?;
    let mut blobs = vec![digest_of(config, "the config")?];
    let layers = manifest
        .get("layers")
        .and_then(Value::as_array)
        .ok_or_else(|| RegistryError::manifest_invalid("an image manifest needs a layers list"))?;
    for layer in layers {
        let foreign = layer
            .get("mediaType")
            .and_then(Value::as_str)
            .is_some_and(|t| t.contains("foreign") || t.contains("nondistributable"));
        let digest = digest_of(layer, "a layer")?;
        if !foreign {
            blobs.push(digest);
        }
    }
    Ok((blobs, Vec::new(), subject))
}

async fn put_manifest(
    state: &AppState,
    who: &Principal,
    name: &str,
    reference: &Reference,
    request: Request,
) -> Result<Response> {
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or("").trim().to_string());
    let bytes = axum::body::to_bytes(request.into_body(), MAX_MANIFEST + 1)
        .await
        .map_err(|_| {
            RegistryError::too_large(format!("a manifest may be at most {MAX_MANIFEST} bytes"))
        })?;
    if bytes.len() > MAX_MANIFEST {
        return Err(RegistryError::too_large(format!(
            "a manifest may be at most {MAX_MANIFEST} bytes"
        )));
    }
    let manifest: Value = serde_json::from_slice(&bytes).map_err(|error| {
        RegistryError::manifest_invalid(format!("the manifest is not JSON: {error}"))
    })?;
    let declared = manifest
        .get("mediaType")
        .and_then(Value::as_str)
        .map(str::to_string);
    let media_type = content_type
        .filter(|t| !t.is_empty())
        .or(declared.clone())
        .ok_or_else(|| {
            RegistryError::manifest_invalid("give the manifest's media type in Content-Type")
        })?;
    if !MANIFEST_TYPES.contains(&media_type.as_str()) {
        return Err(RegistryError::manifest_invalid(format!(
            "media type {media_type} is not a manifest this registry stores: use one of {}",
            MANIFEST_TYPES.join(", ")
        )));
    }
    if let Some(declared) = declared {
        if declared != media_type {
            return Err(RegistryError::manifest_invalid(format!(
                "Content-Type {media_type} does not match the manifest's mediaType {declared}"
            )));
        }
    }
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if let Reference::Digest(given) = reference {
        if given != &digest {
            return Err(RegistryError::digest_invalid(format!(
                "the manifest's digest is {digest}, not {given}"
            )));
        }
    }
    let (blobs, children, subject) = references(&media_type, &manifest)?;
    for blob in &blobs {
        if state.storage.blob_size(name, blob).await.is_none() {
            return Err(RegistryError::manifest_blob_unknown(blob));
        }
    }
    for child in &children {
        if state.storage.manifest_type(name, child).await.is_none() {
            return Err(RegistryError::manifest_blob_unknown(child));
        }
    }
    let tag = match reference {
        Reference::Tag(tag) => Some(tag.as_str()),
        Reference::Digest(_) => None,
    };
    state.storage.put_bytes(&digest, &bytes).await?;
    state
        .storage
        .link_manifest(name, &digest, &media_type, tag)
        .await?;
    crate::mark_owner(state, name).await;
    let mut response = Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/manifests/{digest}"))
        .header("Docker-Content-Digest", &digest);
    if let Some(subject) = &subject {
        let mut descriptor =
            json!({"mediaType": media_type, "digest": digest, "size": bytes.len()});
        let artifact_type = manifest
            .get("artifactType")
            .and_then(Value::as_str)
            .or_else(|| {
                manifest
                    .pointer("/config/mediaType")
                    .and_then(Value::as_str)
            });
        if let Some(artifact_type) = artifact_type {
            descriptor["artifactType"] = json!(artifact_type);
        }
        if let Some(annotations) = manifest.get("annotations") {
            descriptor["annotations"] = annotations.clone();
        }
        state
            .storage
            .add_referrer(name, subject, &digest, &descriptor)
            .await?;
        response = response.header("OCI-Subject", subject);
    }
    if let Some(tag) = tag {
        crate::events::publish(
            &state.store,
            ImageEvent {
                repository: name.to_string(),
                tag: Some(tag.to_string()),
                digest: Some(digest.clone()),
                media_type: Some(media_type.clone()),
                app: None,
                by: who.name.clone(),
                source: ImageSource::Push,
                at: 0,
            },
        )
        .await
        .map_err(|error| {
            RegistryError::internal(
                "announce the push (the manifest is stored: push again)",
                error,
            )
        })?;
    }
    response
        .body(Body::empty())
        .map_err(|error| RegistryError::internal("build a response", error))
}

async fn delete_manifest(state: &AppState, name: &str, reference: &Reference) -> Result<Response> {
    let deleted = match reference {
        Reference::Tag(tag) => state.storage.delete_tag(name, tag).await,
        Reference::Digest(digest) => {
            // A release runs these bits (and a rollback may again): they stay.
            let released = crate::gc::release_of(&state.store, name, digest)
                .await
                .map_err(|error| RegistryError::internal("read the releases", error))?;
            if let Some((app, n)) = released {
                return Err(RegistryError::denied(format!(
                    "manifest {digest} is the image of release v{n} of app {app}: a release's image is kept while the release exists"
                )));
            }
            state.storage.delete_manifest(name, digest).await?
        }
    };
    if deleted {
        Ok(StatusCode::ACCEPTED.into_response())
    } else {
        Err(RegistryError::manifest_unknown(reference.as_str()))
    }
}

/// `bytes=START-END` or `bytes=START-` of a blob of `size` bytes.
fn parse_range(text: &str, size: u64) -> Option<(u64, u64)> {
    let (start, end) = text.strip_prefix("bytes=")?.split_once('-')?;
    let start: u64 = start.parse().ok()?;
    let end: u64 = if end.is_empty() {
        size.checked_sub(1)?
    } else {
        end.parse::<u64>().ok()?.min(size.checked_sub(1)?)
    };
    (start <= end).then_some((start, end))
}

async fn get_blob(
    state: &AppState,
    name: &str,
    digest: &str,
    headers: &HeaderMap,
    head: bool,
) -> Result<Response> {
    let size = state
        .storage
        .blob_size(name, digest)
        .await
        .ok_or_else(|| RegistryError::blob_unknown(digest))?;
    let range = headers.get(header::RANGE).and_then(|v| v.to_str().ok());
    let (status, start, length) = match range {
        None => (StatusCode::OK, 0, size),
        Some(text) => match parse_range(text, size) {
            Some((start, end)) => (StatusCode::PARTIAL_CONTENT, start, end - start + 1),
            None => {
                return Response::builder()
                    .status(StatusCode::RANGE_NOT_SATISFIABLE)
                    .header(header::CONTENT_RANGE, format!("bytes */{size}"))
                    .body(Body::empty())
                    .map_err(|error| RegistryError::internal("build a response", error))
            }
        },
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, length)
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(header::ACCEPT_RANGES, "bytes")
        .header("Docker-Content-Digest", digest);
    if status == StatusCode::PARTIAL_CONTENT {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {start}-{}/{size}", start + length - 1),
        );
    }
    let body = if head {
        Body::empty()
    } else {
        file_body(state.storage.blob_path(digest), start, length)
    };
    response
        .body(body)
        .map_err(|error| RegistryError::internal("build a response", error))
}

fn upload_response(status: StatusCode, name: &str, id: &str, size: u64) -> Response {
    let range = if size == 0 {
        "0-0".to_string()
    } else {
        format!("0-{}", size - 1)
    };
    Response::builder()
        .status(status)
        .header(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
        .header(header::RANGE, range)
        .header(header::CONTENT_LENGTH, 0)
        .header("Docker-Upload-UUID", id)
        .body(Body::empty())
        .unwrap_or_default()
}

fn blob_created(name: &str, digest: &str) -> Response {
    Response::builder()
        .status(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{digest}"))
        .header(header::CONTENT_LENGTH, 0)
        .header("Docker-Content-Digest", digest)
        .body(Body::empty())
        .unwrap_or_default()
}

async fn start_upload(
    state: &AppState,
    who: &Principal,
    name: &str,
    query: &HashMap<String, String>,
    request: Request,
) -> Result<Response> {
    if let Some(mount) = query.get("mount") {
        let digest = names::check_digest(mount)?;
        if let Some(from) = query.get("from") {
            let from = names::check_name(from)?;
            // A mount the caller may not read, or of a blob that is not there,
            // becomes an ordinary upload, as the spec says.
            if who.may_pull(&from) && state.storage.blob_size(&from, &digest).await.is_some() {
                state.storage.link_blob(name, &digest).await?;
                return Ok(blob_created(name, &digest));
            }
        }
    }
    let id = state.storage.start_upload(name).await?;
    if let Some(digest) = query.get("digest") {
        // The whole blob in one POST.
        let digest = match names::check_digest(digest) {
            Ok(digest) => digest,
            Err(error) => {
                state.storage.cancel(&id).await;
                return Err(error);
            }
        };
        let upload = state.storage.upload(name, &id).await?;
        let mut upload = upload.lock().await;
        if let Err(error) = state
            .storage
            .append(&id, &mut upload, request.into_body())
            .await
        {
            state.storage.cancel(&id).await;
            return Err(error);
        }
        state.storage.finish(name, &id, &upload, &digest).await?;
        return Ok(blob_created(name, &digest));
    }
    Ok(upload_response(StatusCode::ACCEPTED, name, &id, 0))
}

/// `Content-Range: START-END`: the chunk must start where the upload ends.
fn check_chunk_start(headers: &HeaderMap, size: u64) -> Result<()> {
    let Some(range) = headers
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(());
    };
    let range = range
        .trim_start_matches("bytes ")
        .trim_start_matches("bytes=");
    let start = range
        .split('-')
        .next()
        .and_then(|start| start.trim().parse::<u64>().ok())
        .ok_or_else(|| {
            RegistryError::upload_invalid(format!("Content-Range `{range}` is not START-END"))
        })?;
    if start != size {
        return Err(RegistryError::range_invalid(format!(
            "this chunk starts at {start}, but the upload has {size} bytes: send the chunk that starts at {size}"
        )));
    }
    Ok(())
}

async fn patch_upload(
    state: &AppState,
    name: &str,
    id: &str,
    request: Request,
) -> Result<Response> {
    let upload = state.storage.upload(name, id).await?;
    let mut upload = upload.lock().await;
    if let Err(error) = check_chunk_start(request.headers(), upload.size) {
        if error.status == StatusCode::RANGE_NOT_SATISFIABLE {
            let mut response = error.into_response();
            let range = if upload.size == 0 {
                "0-0".to_string()
            } else {
                format!("0-{}", upload.size - 1)
            };
            response
                .headers_mut()
                .insert(header::RANGE, header_value(&range));
            response.headers_mut().insert(
                header::LOCATION,
                header_value(&format!("/v2/{name}/blobs/uploads/{id}")),
            );
            return Ok(response);
        }
        return Err(error);
    }
    let before = upload.size;
    if let Err(error) = state
        .storage
        .append(id, &mut upload, request.into_body())
        .await
    {
        state.storage.truncate(id, before).await;
        return Err(error);
    }
    Ok(upload_response(StatusCode::ACCEPTED, name, id, upload.size))
}

async fn put_upload(
    state: &AppState,
    name: &str,
    id: &str,
    query: &HashMap<String, String>,
    request: Request,
) -> Result<Response> {
    let digest = query
        .get("digest")
        .ok_or_else(|| RegistryError::digest_invalid("finish an upload with ?digest=sha256:..."))?;
    let digest = names::check_digest(digest)?;
    let upload = state.storage.upload(name, id).await?;
    let mut upload = upload.lock().await;
    check_chunk_start(request.headers(), upload.size)?;
    let before = upload.size;
    if let Err(error) = state
        .storage
        .append(id, &mut upload, request.into_body())
        .await
    {
        state.storage.truncate(id, before).await;
        return Err(error);
    }
    state.storage.finish(name, id, &upload, &digest).await?;
    Ok(blob_created(name, &digest))
}

async fn referrers(
    state: &AppState,
    name: &str,
    digest: &str,
    query: &HashMap<String, String>,
) -> Result<Response> {
    let mut descriptors = state.storage.referrers(name, digest).await;
    let filter = query.get("artifactType");
    if let Some(artifact_type) = filter {
        descriptors.retain(|d| {
            d.get("artifactType").and_then(Value::as_str) == Some(artifact_type.as_str())
        });
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": descriptors,
    });
    let mut response = Response::builder().status(StatusCode::OK).header(
        header::CONTENT_TYPE,
        "application/vnd.oci.image.index.v1+json",
    );
    if filter.is_some() {
        response = response.header("OCI-Filters-Applied", "artifactType");
    }
    response
        .body(Body::from(index.to_string()))
        .map_err(|error| RegistryError::internal("build a response", error))
}
