//! The inbound image webhooks: each form accepted with valid auth and turned
//! into an image event; refused with a 4xx JSON reason, and no event, otherwise.

mod common;

use common::*;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::json;
use sha2::Sha256;

async fn fixture(test_name: &str) -> RegistryFixture {
    let fixture = start_registry(test_name).await;
    let web = store::AppName::new("web").unwrap();
    let mut app = store::records::App::new(web.clone(), 1);
    app.deploy.image_repo = Some("acme/web".to_string());
    fixture
        .store
        .put(&fixture.store.keys().app(&web), &app)
        .await
        .unwrap();
    fixture
}

async fn events(fixture: &RegistryFixture) -> Vec<store::records::ImageEvent> {
    let listing = fixture
        .store
        .list(&fixture.store.keys().image_events())
        .await
        .unwrap();
    listing.entries.into_iter().map(|e| e.value).collect()
}

/// Posts `body` to `path`; returns the status and the JSON reason.
async fn post(
    fixture: &RegistryFixture,
    path: &str,
    bearer: Option<&str>,
    headers: &[(&str, String)],
    body: &[u8],
) -> (StatusCode, serde_json::Value) {
    let mut request = fixture.http.post(fixture.url(path)).body(body.to_vec());
    if let Some(secret) = bearer {
        request = request.bearer_auth(secret);
    }
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(json!(null)))
}

#[tokio::test]
async fn the_deploy_hook_takes_an_app_and_an_image() {
    let fixture = fixture("hook-deploy").await;
    let digest = digest_of(b"image");
    let body = json!({"app": "web", "image": format!("ghcr.io/acme/web:v3@{digest}")}).to_string();
    let (status, _) = post(
        &fixture,
        "/hooks/deploy",
        Some(&fixture.deployer.secret),
        &[],
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 202);
    let recorded = events(&fixture).await;
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].app.as_ref().map(|a| a.as_str()), Some("web"));
    assert_eq!(recorded[0].repository, "ghcr.io/acme/web");
    assert_eq!(recorded[0].tag.as_deref(), Some("v3"));
    assert_eq!(recorded[0].digest.as_deref(), Some(digest.as_str()));
    assert_eq!(recorded[0].by, "dev");
    assert_eq!(recorded[0].source, store::records::ImageSource::Deploy);

    for (bearer, body, expected, reason) in [
        (None, body.clone(), 401, "authenticate with"),
        (Some("paz_wrong"), body.clone(), 401, "unknown token"),
        (
            Some(fixture.machine.secret.as_str()),
            body.clone(),
            403,
            "may not deploy app `web`",
        ),
        (
            Some(fixture.admin.secret.as_str()),
            json!({"app": "nope", "image": "x"}).to_string(),
            404,
            "app `nope` does not exist",
        ),
        (
            Some(fixture.admin.secret.as_str()),
            "{not json".to_string(),
            400,
            "the body is not JSON",
        ),
        (
            Some(fixture.admin.secret.as_str()),
            json!({"app": "web"}).to_string(),
            400,
            "image is missing",
        ),
        (
            Some(fixture.admin.secret.as_str()),
            json!({"app": "Web!", "image": "x"}).to_string(),
            400,
            "app name `Web!` is invalid",
        ),
        (
            Some(fixture.admin.secret.as_str()),
            json!({"app": "web", "image": "x@sha256:short"}).to_string(),
            400,
            "is invalid",
        ),
        // Would have become a `docker run` flag in the unit's ExecStart.
        (
            Some(fixture.admin.secret.as_str()),
            json!({"app": "web", "image": "--volume=/:/host:ro"}).to_string(),
            400,
            "`--volume=/:/host:ro` is not an image reference",
        ),
        (
            Some(fixture.admin.secret.as_str()),
            json!({"app": "web", "image": "web\u{7}:v1"}).to_string(),
            400,
            "is not an image reference",
        ),
    ] {
        let (status, reply) = post(&fixture, "/hooks/deploy", bearer, &[], body.as_bytes()).await;
        assert_eq!(status.as_u16(), expected, "{body}: {reply}");
        assert!(
            reply["error"].as_str().unwrap().contains(reason),
            "{body}: {reply}"
        );
    }
    assert_eq!(
        events(&fixture).await.len(),
        1,
        "refused hooks record nothing"
    );
}

#[tokio::test]
async fn the_docker_hub_hook_takes_a_token_in_the_query() {
    let fixture = fixture("hook-dockerhub").await;
    let payload = json!({
        "callback_url": "https://registry.hub.docker.com/u/acme/web/hook/x/",
        "push_data": {"pushed_at": 1417566161, "pusher": "acme", "tag": "latest"},
        "repository": {"name": "web", "namespace": "acme", "repo_name": "acme/web", "status": "Active"}
    })
    .to_string();
    let path = format!("/hooks/dockerhub?token={}", fixture.admin.secret);
    let (status, _) = post(&fixture, &path, None, &[], payload.as_bytes()).await;
    assert_eq!(status, 202);
    let recorded = events(&fixture).await;
    assert_eq!(
        (recorded[0].repository.as_str(), recorded[0].tag.as_deref()),
        ("acme/web", Some("latest"))
    );
    assert_eq!(recorded[0].source, store::records::ImageSource::Dockerhub);

    let unfollowed = payload.replace("acme/web", "acme/other");
    let (status, reply) = post(&fixture, &path, None, &[], unfollowed.as_bytes()).await;
    assert_eq!(status, 404);
    assert_eq!(
        reply["error"],
        "no app follows repository acme/other: run deploy:follow APP acme/other"
    );
    let (status, _) = post(
        &fixture,
        "/hooks/dockerhub?token=paz_nope",
        None,
        &[],
        payload.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, reply) = post(&fixture, &path, None, &[], b"{\"repository\": {}}").await;
    assert_eq!(status, 400);
    assert!(reply["error"]
        .as_str()
        .unwrap()
        .contains("repository.repo_name is missing"));
    assert_eq!(events(&fixture).await.len(), 1);
}

#[tokio::test]
async fn the_registry_hook_takes_a_signed_notification_envelope() {
    let fixture = fixture("hook-registry").await;
    let digest = digest_of(b"manifest");
    let envelope = json!({"events": [
        {"action": "push", "target": {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(b"layer"), "repository": "acme/web"}},
        {"action": "pull", "target": {"repository": "acme/web", "tag": "v1"}},
        {"action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "repository": "acme/web", "tag": "v1"}}
    ]})
    .to_string();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let sign_at = |key: &str, body: &[u8], at: u64| {
        let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("{at}.").as_bytes());
        mac.update(body);
        format!("t={at},v1={}", hex::encode(mac.finalize().into_bytes()))
    };
    let sign = |key: &str, body: &[u8]| sign_at(key, body, now());
    // The key is the token's own signing secret, shown once when it was made.
    let key = fixture.deployer.signing.clone();
    let content_type = (
        "Content-Type",
        "application/vnd.docker.distribution.events.v2+json".to_string(),
    );
    let signed = [
        ("X-Paz-Signature", sign(&key, envelope.as_bytes())),
        content_type.clone(),
    ];
    let (status, reply) = post(
        &fixture,
        "/hooks/registry",
        None,
        &signed,
        envelope.as_bytes(),
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    let recorded = events(&fixture).await;
    assert_eq!(
        recorded.len(),
        1,
        "only the tagged manifest push is an image"
    );
    assert_eq!(recorded[0].digest.as_deref(), Some(digest.as_str()));
    assert_eq!(recorded[0].by, "dev");
    assert_eq!(recorded[0].source, store::records::ImageSource::Registry);

    // The same delivery again is a replay.
    let (status, reply) = post(
        &fixture,
        "/hooks/registry",
        None,
        &signed,
        envelope.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(
        reply["error"]
            .as_str()
            .unwrap()
            .contains("a replay is refused"),
        "{reply}"
    );
    // One signed long ago (or far ahead) is refused however fresh its bytes.
    for at in [now() - 3600, now() + 3600] {
        let stale = [
            ("X-Paz-Signature", sign_at(&key, envelope.as_bytes(), at)),
            content_type.clone(),
        ];
        let (status, reply) = post(
            &fixture,
            "/hooks/registry",
            None,
            &stale,
            envelope.as_bytes(),
        )
        .await;
        assert_eq!(status, 401);
        assert!(
            reply["error"]
                .as_str()
                .unwrap()
                .contains("more than 300 s from now"),
            "{reply}"
        );
    }
    // What etcd stores signs nothing: the secret's hash as the key (the old
    // scheme), or the old header, are refused.
    let stored = fixture
        .store
        .get(&fixture.store.keys().token("root").unwrap())
        .await
        .unwrap()
        .unwrap()
        .value;
    for (name, value) in [
        (
            "X-Paz-Signature",
            sign(&stored.secret_sha256, envelope.as_bytes()),
        ),
        (
            "X-Paz-Signature",
            sign(
                stored.signing_sealed.as_deref().unwrap(),
                envelope.as_bytes(),
            ),
        ),
        (
            "X-Hub-Signature-256",
            format!("sha256={}", hex::encode([0u8; 32])),
        ),
    ] {
        let (status, _) = post(
            &fixture,
            "/hooks/registry",
            None,
            &[(name, value), content_type.clone()],
            envelope.as_bytes(),
        )
        .await;
        assert_eq!(status, 401, "{name}");
    }
    assert_eq!(events(&fixture).await.len(), 1);

    let forged = [
        ("X-Paz-Signature", sign("not the key", envelope.as_bytes())),
        content_type.clone(),
    ];
    let (status, reply) = post(
        &fixture,
        "/hooks/registry",
        None,
        &forged,
        envelope.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        reply["error"],
        "the signature does not match any token's signing secret"
    );
    let tampered = envelope.replace("v1", "v2");
    let resigned = [
        ("X-Paz-Signature", signed[0].1.clone()),
        content_type.clone(),
    ];
    let (status, _) = post(
        &fixture,
        "/hooks/registry",
        None,
        &resigned,
        tampered.as_bytes(),
    )
    .await;
    assert_eq!(status, 401, "a signature covers the body it was made for");
    let no_push =
        json!({"events": [{"action": "pull", "target": {"repository": "acme/web"}}]}).to_string();
    let (status, reply) = post(
        &fixture,
        "/hooks/registry",
        Some(&fixture.admin.secret),
        &[],
        no_push.as_bytes(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(reply["error"], "the envelope has no tagged push event");
    let (status, _) = post(
        &fixture,
        "/hooks/registry",
        Some(&fixture.admin.secret),
        &[],
        b"[]",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(events(&fixture).await.len(), 1);
}

#[tokio::test]
async fn a_hook_body_over_the_limit_is_refused_while_it_is_read_and_records_nothing() {
    let fixture = fixture("hook-body-limit").await;
    let body = vec![b'x'; registry::HOOK_BODY_LIMIT + 1];
    for path in ["/hooks/deploy", "/hooks/registry", "/hooks/dockerhub"] {
        // Anonymous: the limit applies before authentication.
        let response = fixture
            .http
            .post(fixture.url(path))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 413, "{path}");
    }
    assert!(events(&fixture).await.is_empty());
}
