//! Paz's registry over real HTTP, test by test from the OCI distribution spec:
//! each endpoint, each error code, and the storage guarantees.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;
use reqwest::Method;

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

#[tokio::test]
async fn the_base_endpoint_challenges_anonymous_and_wrong_credentials() {
    let fixture = start_registry("reg-base").await;
    let anonymous = fixture.http.get(fixture.url("/v2/")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.headers()["WWW-Authenticate"],
        "Basic realm=\"paz\""
    );
    assert_eq!(
        anonymous.headers()["Docker-Distribution-API-Version"],
        "registry/2.0"
    );
    assert_eq!(error_code(anonymous).await, "UNAUTHORIZED");
    let wrong = fixture
        .http
        .get(fixture.url("/v2/"))
        .basic_auth("root", Some("nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let unknown = fixture
        .http
        .get(fixture.url("/v2/"))
        .basic_auth("ghost", Some("x"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 401);
    let ok = fixture
        .request(&fixture.admin, Method::GET, "/v2/")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    // A revoked token stops working without a restart.
    fixture
        .store
        .delete(&fixture.store.keys().token("root").unwrap())
        .await
        .unwrap();
    tests::eventually(
        "the revoked token to be refused (401)",
        Duration::from_secs(10),
        async || {
            let status = fixture
                .request(&fixture.admin, Method::GET, "/v2/")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            (status == 401).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_monolithic_upload_stores_a_blob_that_reads_back_whole_and_in_ranges() {
    let fixture = start_registry("reg-monolithic").await;
    let bytes = b"0123456789abcdef".to_vec();
    let digest = digest_of(&bytes);
    let started = fixture
        .request(&fixture.admin, Method::POST, "/v2/web/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 202);
    let location = started.headers()["Location"].to_str().unwrap().to_string();
    assert!(location.starts_with("/v2/web/blobs/uploads/"));
    assert!(started.headers().contains_key("Docker-Upload-UUID"));
    assert_eq!(started.headers()["Range"], "0-0");

    let done = fixture
        .request(
            &fixture.admin,
            Method::PUT,
            &format!("{location}?digest={digest}"),
        )
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);
    assert_eq!(
        done.headers()["Location"],
        format!("/v2/web/blobs/{digest}").as_str()
    );
    assert_eq!(done.headers()["Docker-Content-Digest"], digest.as_str());

    let head = fixture
        .request(
            &fixture.admin,
            Method::HEAD,
            &format!("/v2/web/blobs/{digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["Content-Length"], "16");
    assert_eq!(head.headers()["Docker-Content-Digest"], digest.as_str());
    let get = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/blobs/{digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(get.bytes().await.unwrap().as_ref(), bytes.as_slice());
    let part = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/blobs/{digest}"),
        )
        .header("Range", "bytes=2-5")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(part.headers()["Content-Range"], "bytes 2-5/16");
    assert_eq!(part.bytes().await.unwrap().as_ref(), b"2345");
    let beyond = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/blobs/{digest}"),
        )
        .header("Range", "bytes=20-30")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);

    // A single POST with ?digest= also works; another repository does not see the blob.
    let other = fixture.push_blob("web/other", b"single post").await;
    assert_eq!(
        fixture
            .request(
                &fixture.admin,
                Method::HEAD,
                &format!("/v2/web/blobs/{other}")
            )
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let missing = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/blobs/{other}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(error_code(missing).await, "BLOB_UNKNOWN");
}

#[tokio::test]
async fn chunked_uploads_accept_chunks_in_order_and_refuse_them_out_of_order() {
    let fixture = start_registry("reg-chunked").await;
    let whole: Vec<u8> = (0..30u8).collect();
    let digest = digest_of(&whole);
    let started = fixture
        .request(&fixture.admin, Method::POST, "/v2/web/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = started.headers()["Location"].to_str().unwrap().to_string();
    let patch = |range: &str, body: &[u8]| {
        fixture
            .request(&fixture.admin, Method::PATCH, &location)
            .header("Content-Range", range)
            .header("Content-Type", "application/octet-stream")
            .body(body.to_vec())
            .send()
    };
    let first = patch("0-9", &whole[0..10]).await.unwrap();
    assert_eq!(first.status(), 202);
    assert_eq!(first.headers()["Range"], "0-9");
    let skipped = patch("20-29", &whole[20..30]).await.unwrap();
    assert_eq!(skipped.status(), 416);
    assert_eq!(skipped.headers()["Range"], "0-9");
    let status = fixture
        .request(&fixture.admin, Method::GET, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(status.status(), 204);
    assert_eq!(status.headers()["Range"], "0-9");
    assert_eq!(patch("10-19", &whole[10..20]).await.unwrap().status(), 202);
    // A streamed chunk (no Content-Range) goes on the end.
    let streamed = fixture
        .request(&fixture.admin, Method::PATCH, &location)
        .body(reqwest::Body::wrap_stream(futures::stream::iter(vec![
            Ok::<_, std::io::Error>(whole[20..25].to_vec()),
            Ok(whole[25..30].to_vec()),
        ])))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 202);
    assert_eq!(streamed.headers()["Range"], "0-29");
    let done = fixture
        .request(
            &fixture.admin,
            Method::PUT,
            &format!("{location}?digest={digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 201);
    let get = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/blobs/{digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(get.bytes().await.unwrap().as_ref(), whole.as_slice());
}

#[tokio::test]
async fn a_wrong_digest_stores_nothing_and_cancelled_uploads_are_gone() {
    let fixture = start_registry("reg-wrong-digest").await;
    let claimed = digest_of(b"what the client claims");
    let started = fixture
        .request(&fixture.admin, Method::POST, "/v2/web/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = started.headers()["Location"].to_str().unwrap().to_string();
    let done = fixture
        .request(
            &fixture.admin,
            Method::PUT,
            &format!("{location}?digest={claimed}"),
        )
        .body("something else")
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 400);
    assert_eq!(error_code(done).await, "DIGEST_INVALID");
    for digest in [claimed, digest_of(b"something else")] {
        let head = fixture
            .request(
                &fixture.admin,
                Method::HEAD,
                &format!("/v2/web/blobs/{digest}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(head.status(), 404, "nothing is stored under either digest");
    }
    let gone = fixture
        .request(&fixture.admin, Method::GET, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
    assert_eq!(error_code(gone).await, "BLOB_UPLOAD_UNKNOWN");

    let started = fixture
        .request(&fixture.admin, Method::POST, "/v2/web/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = started.headers()["Location"].to_str().unwrap().to_string();
    assert_eq!(
        fixture
            .request(&fixture.admin, Method::DELETE, &location)
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        fixture
            .request(&fixture.admin, Method::GET, &location)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // An upload is only reachable through its own repository.
    let started = fixture
        .request(&fixture.admin, Method::POST, "/v2/web/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = started.headers()["Location"]
        .to_str()
        .unwrap()
        .replace("/v2/web/", "/v2/web/other/");
    assert_eq!(
        error_code(
            fixture
                .request(&fixture.admin, Method::GET, &location)
                .send()
                .await
                .unwrap()
        )
        .await,
        "BLOB_UPLOAD_UNKNOWN"
    );
    let bad = fixture
        .request(
            &fixture.admin,
            Method::PUT,
            "/v2/web/blobs/uploads/0123456789abcdef0123456789abcdef?digest=md5:abc",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(bad).await, "DIGEST_INVALID");
}

#[tokio::test]
async fn a_mount_links_a_known_blob_and_falls_back_to_an_upload() {
    let fixture = start_registry("reg-mount").await;
    let digest = fixture.push_blob("web/base", b"shared layer").await;
    let mounted = fixture
        .request(
            &fixture.admin,
            Method::POST,
            &format!("/v2/web/app/blobs/uploads/?mount={digest}&from=web/base"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mounted.status(), 201);
    assert_eq!(
        mounted.headers()["Location"],
        format!("/v2/web/app/blobs/{digest}").as_str()
    );
    assert_eq!(
        fixture
            .request(
                &fixture.admin,
                Method::HEAD,
                &format!("/v2/web/app/blobs/{digest}")
            )
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let unknown = digest_of(b"never pushed");
    let fallback = fixture
        .request(
            &fixture.admin,
            Method::POST,
            &format!("/v2/web/app/blobs/uploads/?mount={unknown}&from=web/base"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(fallback.status(), 202);
    assert!(fallback.headers()["Location"]
        .to_str()
        .unwrap()
        .starts_with("/v2/web/app/blobs/uploads/"));
}

#[tokio::test]
async fn manifests_are_stored_exactly_and_checked_against_their_blobs() {
    let fixture = start_registry("reg-manifests").await;
    let (bytes, digest) = fixture
        .push_image("web", "v1", &[b"layer one", b"layer two"])
        .await;
    for reference in ["v1", digest.as_str()] {
        let get = fixture
            .request(
                &fixture.admin,
                Method::GET,
                &format!("/v2/web/manifests/{reference}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(get.status(), 200);
        assert_eq!(get.headers()["Content-Type"], OCI_MANIFEST);
        assert_eq!(get.headers()["Docker-Content-Digest"], digest.as_str());
        assert_eq!(
            get.bytes().await.unwrap().as_ref(),
            bytes.as_slice(),
            "the exact bytes"
        );
    }
    let head = fixture
        .request(&fixture.admin, Method::HEAD, "/v2/web/manifests/v1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        head.headers()["Content-Length"],
        bytes.len().to_string().as_str()
    );
    let refused_type = fixture
        .request(&fixture.admin, Method::GET, "/v2/web/manifests/v1")
        .header(
            "Accept",
            "application/vnd.docker.distribution.manifest.v2+json",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(refused_type.status(), 404);
    assert_eq!(error_code(refused_type).await, "MANIFEST_UNKNOWN");

    let put = |reference: &str, media_type: &str, body: Vec<u8>| {
        fixture
            .request(
                &fixture.admin,
                Method::PUT,
                &format!("/v2/web/manifests/{reference}"),
            )
            .header("Content-Type", media_type)
            .body(body)
            .send()
    };
    let missing_blob = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(b"absent"), "size": 6},
        "layers": []
    }))
    .unwrap();
    assert_eq!(
        error_code(put("v2", OCI_MANIFEST, missing_blob).await.unwrap()).await,
        "MANIFEST_BLOB_UNKNOWN"
    );
    assert_eq!(
        error_code(
            put("v2", OCI_MANIFEST, b"{not json".to_vec())
                .await
                .unwrap()
        )
        .await,
        "MANIFEST_INVALID"
    );
    assert_eq!(
        error_code(put("v2", "text/plain", bytes.clone()).await.unwrap()).await,
        "MANIFEST_INVALID"
    );
    let wrong = digest_of(b"another manifest");
    assert_eq!(
        error_code(put(&wrong, OCI_MANIFEST, bytes.clone()).await.unwrap()).await,
        "DIGEST_INVALID"
    );
    let huge = put("v3", OCI_MANIFEST, vec![b' '; registry::MAX_MANIFEST + 1])
        .await
        .unwrap();
    assert_eq!(huge.status(), 413);
    assert_eq!(error_code(huge).await, "SIZE_INVALID");
    assert_eq!(
        error_code(put("-bad", OCI_MANIFEST, bytes.clone()).await.unwrap()).await,
        "MANIFEST_INVALID"
    );
    assert_eq!(
        fixture
            .request(&fixture.admin, Method::GET, "/v2/web/manifests/v2")
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "no failed put left a tag"
    );

    // An index over the image; one naming an unknown manifest is refused.
    let index = |child: &str| {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child, "size": bytes.len()}]
        }))
        .unwrap()
    };
    assert_eq!(
        put("multi", OCI_INDEX, index(&digest))
            .await
            .unwrap()
            .status(),
        201
    );
    assert_eq!(
        error_code(
            put("multi2", OCI_INDEX, index(&digest_of(b"nothing")))
                .await
                .unwrap()
        )
        .await,
        "MANIFEST_BLOB_UNKNOWN"
    );

    // Deleting a tag leaves the manifest; deleting the digest removes it.
    assert_eq!(
        fixture
            .request(&fixture.admin, Method::DELETE, "/v2/web/manifests/multi")
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        fixture
            .request(&fixture.admin, Method::GET, "/v2/web/manifests/multi")
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    assert_eq!(
        fixture
            .request(
                &fixture.admin,
                Method::DELETE,
                &format!("/v2/web/manifests/{digest}")
            )
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    let gone = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/manifests/{digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(gone).await, "MANIFEST_UNKNOWN");
    assert_eq!(
        fixture
            .request(&fixture.admin, Method::GET, "/v2/web/manifests/v1")
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "its tags go with it"
    );
}

#[tokio::test]
async fn tags_and_the_catalog_paginate_with_link_headers() {
    let fixture = start_registry("reg-tags").await;
    for tag in ["a", "b", "c"] {
        fixture.push_image("web", tag, &[tag.as_bytes()]).await;
    }
    fixture.push_image("web/worker", "x", &[b"w"]).await;
    fixture.push_image("api", "x", &[b"a"]).await;

    let page = fixture
        .request(&fixture.admin, Method::GET, "/v2/web/tags/list?n=2")
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["Link"],
        "</v2/web/tags/list?n=2&last=b>; rel=\"next\""
    );
    let body: serde_json::Value = page.json().await.unwrap();
    assert_eq!(body, serde_json::json!({"name": "web", "tags": ["a", "b"]}));
    let rest = fixture
        .request(&fixture.admin, Method::GET, "/v2/web/tags/list?n=2&last=b")
        .send()
        .await
        .unwrap();
    assert!(!rest.headers().contains_key("Link"));
    assert_eq!(
        rest.json::<serde_json::Value>().await.unwrap()["tags"],
        serde_json::json!(["c"])
    );
    let unknown = fixture
        .request(&fixture.admin, Method::GET, "/v2/nothing/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(unknown).await, "NAME_UNKNOWN");

    let catalog: serde_json::Value = fixture
        .request(&fixture.admin, Method::GET, "/v2/_catalog")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        catalog["repositories"],
        serde_json::json!(["api", "web", "web/worker"])
    );
    let page = fixture
        .request(&fixture.admin, Method::GET, "/v2/_catalog?n=1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        page.headers()["Link"],
        "</v2/_catalog?n=1&last=api>; rel=\"next\""
    );
    // A deployer of web sees web's repositories only.
    let mine: serde_json::Value = fixture
        .request(&fixture.deployer, Method::GET, "/v2/_catalog")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        mine["repositories"],
        serde_json::json!(["web", "web/worker"])
    );
}

#[tokio::test]
async fn referrers_list_the_manifests_whose_subject_is_an_image() {
    let fixture = start_registry("reg-referrers").await;
    let (image, image_digest) = fixture.push_image("web", "v1", &[b"app"]).await;
    let empty = fixture.push_blob("web", b"{}").await;
    let signature = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "artifactType": "application/vnd.example.signature",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": 2},
        "layers": [],
        "subject": {"mediaType": OCI_MANIFEST, "digest": image_digest, "size": image.len()},
        "annotations": {"signed-by": "test"}
    }))
    .unwrap();
    let put = fixture
        .request(
            &fixture.admin,
            Method::PUT,
            &format!("/v2/web/manifests/{}", digest_of(&signature)),
        )
        .header("Content-Type", OCI_MANIFEST)
        .body(signature.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(put.headers()["OCI-Subject"], image_digest.as_str());

    let listed = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/referrers/{image_digest}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(listed.headers()["Content-Type"], OCI_INDEX);
    let index: serde_json::Value = listed.json().await.unwrap();
    assert_eq!(
        index["manifests"][0]["digest"],
        digest_of(&signature).as_str()
    );
    assert_eq!(
        index["manifests"][0]["artifactType"],
        "application/vnd.example.signature"
    );
    assert_eq!(index["manifests"][0]["annotations"]["signed-by"], "test");
    let filtered = fixture
        .request(
            &fixture.admin,
            Method::GET,
            &format!("/v2/web/referrers/{image_digest}?artifactType=application/vnd.other"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(filtered.headers()["OCI-Filters-Applied"], "artifactType");
    assert_eq!(
        filtered.json::<serde_json::Value>().await.unwrap()["manifests"],
        serde_json::json!([])
    );
}

#[tokio::test]
async fn names_and_rights_are_checked() {
    let fixture = start_registry("reg-rights").await;
    for path in [
        "/v2/Web/tags/list",
        "/v2/web/a/b/tags/list",
        "/v2/web/a..b/tags/list",
        "/v2/1web/tags/list",
    ] {
        let response = fixture
            .request(&fixture.admin, Method::GET, path)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{path}");
        assert_eq!(error_code(response).await, "NAME_INVALID", "{path}");
    }
    fixture.push_image("api", "v1", &[b"api"]).await;
    let denied = fixture
        .request(&fixture.deployer, Method::POST, "/v2/api/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 403);
    assert_eq!(error_code(denied).await, "DENIED");
    assert_eq!(
        fixture
            .request(&fixture.deployer, Method::GET, "/v2/api/manifests/v1")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        fixture
            .request(&fixture.deployer, Method::POST, "/v2/web/blobs/uploads/")
            .send()
            .await
            .unwrap()
            .status(),
        202
    );
    assert_eq!(
        fixture
            .request(&fixture.machine, Method::GET, "/v2/api/manifests/v1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let machine_push = fixture
        .request(&fixture.machine, Method::POST, "/v2/web/blobs/uploads/")
        .send()
        .await
        .unwrap();
    assert_eq!(machine_push.status(), 403);
    let unsupported = fixture
        .request(&fixture.admin, Method::POST, "/v2/web/tags/list")
        .send()
        .await
        .unwrap();
    assert_eq!(error_code(unsupported).await, "UNSUPPORTED");
}

#[tokio::test]
async fn a_client_killed_mid_upload_leaves_nothing_visible() {
    let fixture = start_registry("reg-killed").await;
    let started = fixture
        .request(&fixture.admin, Method::POST, "/v2/web/blobs/uploads/")
        .send()
        .await
        .unwrap();
    let location = started.headers()["Location"].to_str().unwrap().to_string();
    let auth = base64_basic(&fixture.admin);
    // Promise a megabyte, send a little, and vanish.
    let mut socket = std::net::TcpStream::connect(fixture.addr).unwrap();
    write!(
        socket,
        "PATCH {location} HTTP/1.1\r\nHost: {}\r\nAuthorization: Basic {auth}\r\nContent-Length: 1048576\r\n\r\n",
        fixture.addr
    )
    .unwrap();
    socket.write_all(&[7u8; 1000]).unwrap();
    drop(socket);
    // Give the server the time to see the client go: the chunk must not be kept.
    tokio::time::sleep(Duration::from_millis(500)).await;

    let status = fixture
        .request(&fixture.admin, Method::GET, &location)
        .send()
        .await
        .unwrap();
    assert_eq!(
        status.headers()["Range"],
        "0-0",
        "the broken chunk was not kept"
    );
    let blob = digest_of(&[7u8; 1000]);
    assert_eq!(
        fixture
            .request(
                &fixture.admin,
                Method::HEAD,
                &format!("/v2/web/blobs/{blob}")
            )
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // The abandoned upload is removed by the sweep.
    let storage = registry::Storage::new(fixture.data.path().join("registry"));
    assert_eq!(storage.remove_stale_uploads(Duration::ZERO).await, 1);
    assert_eq!(
        fixture
            .request(&fixture.admin, Method::GET, &location)
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

fn base64_basic(who: &Credentials) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", who.name, who.secret))
}

#[tokio::test]
async fn a_tagged_push_emits_an_image_event() {
    let fixture = start_registry("reg-events").await;
    let (_, digest) = fixture.push_image("web", "v7", &[b"x"]).await;
    let events = fixture
        .store
        .list(&fixture.store.keys().image_events())
        .await
        .unwrap();
    assert_eq!(events.entries.len(), 1);
    let event = &events.entries[0].value;
    assert_eq!(event.repository, "web");
    assert_eq!(event.tag.as_deref(), Some("v7"));
    assert_eq!(event.digest.as_deref(), Some(digest.as_str()));
    assert_eq!(event.media_type.as_deref(), Some(OCI_MANIFEST));
    assert_eq!(event.by, "root");
    assert_eq!(event.source, store::records::ImageSource::Push);
    // A push by digest only is not a new tag: no event.
    let (bytes, _) = fixture.push_image("web", "tmp", &[b"y"]).await;
    fixture
        .put_manifest("web", &digest_of(&bytes), OCI_MANIFEST, &bytes)
        .await;
    assert_eq!(
        fixture
            .store
            .list(&fixture.store.keys().image_events())
            .await
            .unwrap()
            .entries
            .len(),
        2
    );
}

#[tokio::test]
async fn an_app_destroyed_while_the_registry_is_down_loses_its_repositories_at_its_start() {
    let mut fixture = start_registry("reg-forget").await;
    let store = fixture.store.clone();
    let create = async |name: &str| {
        let app = store::AppName::new(name).unwrap();
        let record = store::records::App::new(app.clone(), 1_796_119_200);
        store
            .create(&store.keys().app(&app), &record)
            .await
            .unwrap();
    };
    for app in ["web", "old", "again"] {
        create(app).await;
        fixture.push_image(app, "v1", &[app.as_bytes()]).await;
    }
    fixture.push_image("old/api", "v1", &[b"api"]).await;
    // An admin's repository of no app (a base image) is nobody's to forget.
    fixture.push_image("base", "v1", &[b"base"]).await;
    fixture.stop();
    // While it is down: `old` is destroyed, `again` destroyed and made anew.
    for app in ["old", "again"] {
        let key = store.keys().app(&store::AppName::new(app).unwrap());
        assert!(store.delete(&key).await.unwrap());
    }
    create("again").await;
    fixture.start().await;
    let status = async |fixture: &RegistryFixture, repo: &str| {
        fixture
            .request(
                &fixture.admin,
                reqwest::Method::GET,
                &format!("/v2/{repo}/tags/list"),
            )
            .send()
            .await
            .unwrap()
            .status()
    };
    tests::eventually(
        "the destroyed apps' repositories to go",
        Duration::from_secs(10),
        async || {
            let (old, api, again) = (
                status(&fixture, "old").await,
                status(&fixture, "old/api").await,
                status(&fixture, "again").await,
            );
            (old == 404 && api == 404 && again == 404).then_some(())
        },
    )
    .await;
    assert_eq!(
        status(&fixture, "web").await,
        200,
        "a live app keeps its repository"
    );
    assert_eq!(
        status(&fixture, "base").await,
        200,
        "a repository of no app stays"
    );
}

#[tokio::test]
async fn gc_removes_what_no_tag_or_release_refers_to() {
    let fixture = start_registry("reg-gc").await;
    let (_, tagged) = fixture.push_image("web", "live", &[b"kept layer"]).await;
    let (_, released) = fixture.push_image("web", "old", &[b"released layer"]).await;
    let (_, garbage) = fixture.push_image("web", "gone", &[b"garbage layer"]).await;
    for tag in ["old", "gone"] {
        fixture
            .request(
                &fixture.admin,
                Method::DELETE,
                &format!("/v2/web/manifests/{tag}"),
            )
            .send()
            .await
            .unwrap();
    }
    let app = store::AppName::new("web").unwrap();
    let release = release_of(&format!("127.0.0.1:5000/web@{released}"));
    fixture
        .store
        .put(&fixture.store.keys().release(&app, 1), &release)
        .await
        .unwrap();
    fixture
        .store
        .put(
            &fixture.store.keys().app(&app),
            &store::records::App::new(app.clone(), 1),
        )
        .await
        .unwrap();

    let storage = registry::Storage::new(fixture.data.path().join("registry"));
    let dry = registry::collect(&storage, &fixture.store, true, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(dry.manifests, [format!("web@{garbage}")]);
    // The manifest and its layer; its config is the same blob the kept images use.
    let mut expected = vec![garbage.clone(), digest_of(b"garbage layer")];
    expected.sort();
    let mut removed = dry.blobs.clone();
    removed.sort();
    assert_eq!(removed, expected);
    assert!(
        fixture
            .request(
                &fixture.admin,
                Method::GET,
                &format!("/v2/web/manifests/{garbage}")
            )
            .send()
            .await
            .unwrap()
            .status()
            .is_success(),
        "a dry run removes nothing"
    );

    let done = registry::collect(&storage, &fixture.store, false, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(done, dry);
    assert_eq!(
        fixture
            .request(
                &fixture.admin,
                Method::GET,
                &format!("/v2/web/manifests/{garbage}")
            )
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    for kept in [&tagged, &released] {
        let response = fixture
            .request(
                &fixture.admin,
                Method::GET,
                &format!("/v2/web/manifests/{kept}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let layer = digest_of(b"released layer");
    assert_eq!(
        fixture
            .request(
                &fixture.admin,
                Method::GET,
                &format!("/v2/web/blobs/{layer}")
            )
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Young content is left alone whatever refers to it.
    let (_, fresh) = fixture.push_image("web", "fresh", &[b"fresh"]).await;
    fixture
        .request(&fixture.admin, Method::DELETE, "/v2/web/manifests/fresh")
        .send()
        .await
        .unwrap();
    let careful = registry::collect(&storage, &fixture.store, false, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        careful.manifests.is_empty() && careful.blobs.is_empty(),
        "{careful:?}"
    );
    assert_eq!(
        fixture
            .request(
                &fixture.admin,
                Method::GET,
                &format!("/v2/web/manifests/{fresh}")
            )
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn concurrent_pushes_of_one_blob_both_succeed_and_store_it_once() {
    let fixture = start_registry("reg-concurrent").await;
    let bytes = vec![42u8; 3 * 1024 * 1024];
    let digest = digest_of(&bytes);
    let push = |repo: &'static str| {
        let request = fixture
            .request(
                &fixture.admin,
                Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .body(bytes.clone());
        async move { request.send().await.unwrap().status() }
    };
    let (first, second, third) = tokio::join!(push("web"), push("web"), push("web/other"));
    assert_eq!(
        (first.as_u16(), second.as_u16(), third.as_u16()),
        (201, 201, 201)
    );
    for repo in ["web", "web/other"] {
        let body = fixture
            .request(
                &fixture.admin,
                Method::GET,
                &format!("/v2/{repo}/blobs/{digest}"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(body.bytes().await.unwrap().len(), bytes.len());
    }
    let blobs = fixture.data.path().join("registry/blobs/sha256");
    let stored: usize = std::fs::read_dir(&blobs)
        .unwrap()
        .map(|dir| std::fs::read_dir(dir.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(stored, 1, "one copy of the content");
    assert!(
        std::fs::read_dir(fixture.data.path().join("registry/uploads"))
            .unwrap()
            .next()
            .is_none(),
        "no upload left behind"
    );
}

#[tokio::test]
async fn the_manifest_of_a_release_cannot_be_deleted_while_the_release_exists() {
    let fixture = start_registry("reg-released-delete").await;
    let (_, digest) = fixture.push_image("web", "v1", &[b"serving layer"]).await;
    let app = store::AppName::new("web").unwrap();
    fixture
        .store
        .put(
            &fixture.store.keys().app(&app),
            &store::records::App::new(app.clone(), 1),
        )
        .await
        .unwrap();
    let release = release_of(&format!("127.0.0.1:5000/web@{digest}"));
    let release_key = fixture.store.keys().release(&app, 1);
    fixture.store.put(&release_key, &release).await.unwrap();
    let path = format!("/v2/web/manifests/{digest}");
    let delete = |who| fixture.request(who, Method::DELETE, &path).send();
    for who in [&fixture.deployer, &fixture.admin] {
        let response = delete(who).await.unwrap();
        assert_eq!(response.status(), 403);
        let body = response.text().await.unwrap();
        assert!(
            body.contains("is the image of release v1 of app web"),
            "{body}"
        );
    }
    let kept = fixture
        .request(&fixture.admin, Method::GET, &path)
        .send()
        .await
        .unwrap();
    assert!(kept.status().is_success(), "the manifest is still there");
    // Without the release, it may go.
    fixture.store.delete(&release_key).await.unwrap();
    assert_eq!(delete(&fixture.deployer).await.unwrap().status(), 202);
}

#[tokio::test]
async fn uploads_beyond_the_upload_and_repository_limits_are_refused_and_store_nothing() {
    let fixture = common::start_registry_with(
        "reg-limits",
        registry::Limits {
            upload: 4096,
            repository: 6000,
        },
    )
    .await;
    let upload = |bytes: Vec<u8>| {
        let digest = digest_of(&bytes);
        let request = fixture
            .request(
                &fixture.deployer,
                Method::POST,
                &format!("/v2/web/blobs/uploads/?digest={digest}"),
            )
            .body(bytes);
        async move {
            let response = request.send().await.unwrap();
            (response.status(), response.text().await.unwrap(), digest)
        }
    };
    // One blob over the upload limit.
    let (status, body, digest) = upload(vec![b'a'; 5000]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("a blob may hold at most"), "{body}");
    let head = |digest: String| {
        fixture
            .request(
                &fixture.admin,
                Method::HEAD,
                &format!("/v2/web/blobs/{digest}"),
            )
            .send()
    };
    assert_eq!(head(digest).await.unwrap().status(), 404);
    // Blobs within it, until the repository is full.
    let (status, body, _) = upload(vec![b'b'; 4000]).await;
    assert_eq!(status, 201, "{body}");
    let (status, body, digest) = upload(vec![b'c'; 4000]).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("repository web may hold at most"), "{body}");
    assert_eq!(head(digest).await.unwrap().status(), 404);
}

/// Release v1 of `web`, serving `image`.
fn release_of(image: &str) -> store::records::Release {
    store::records::Release {
        n: 1,
        image: image.to_string(),
        git_sha: None,
        env: Default::default(),
        created_at: 1,
        by: "test".into(),
        cause: store::records::ReleaseCause::Image,
        status: store::records::ReleaseStatus::Active,
        processes: Default::default(),
        release_command: None,
        source: None,
        exposed_ports: Vec::new(),
        resources: Default::default(),
        cron: Vec::new(),
    }
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_and_one_that_asks_is_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let fixture = start_registry("reg-idle").await;
    let mut idle = tokio::net::TcpStream::connect(fixture.addr).await.unwrap();
    let mut asking = tokio::net::TcpStream::connect(fixture.addr).await.unwrap();
    asking
        .write_all(b"GET /v2/ HTTP/1.1\r\nHost: registry\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    asking.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    // The idle one is closed after the first-byte deadline (10 s), unread.
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(20), idle.read(&mut byte))
        .await
        .expect("an idle connection is closed");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
}
