//! What the registry tests share: Paz's registry started in-process on a real
//! socket, on a test store with three tokens (admin, deployer of `web`, machine).

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;

use sha2::{Digest, Sha256};
use store::records::{Role, Token};
use store::{AppName, Store};
use tokio::sync::watch;

pub struct Credentials {
    pub name: String,
    pub secret: String,
    /// Its webhook signing secret (X-Paz-Signature).
    pub signing: String,
}

pub struct RegistryFixture {
    pub store: Store,
    pub data: tempfile::TempDir,
    pub addr: SocketAddr,
    pub admin: Credentials,
    pub deployer: Credentials,
    pub machine: Credentials,
    pub http: reqwest::Client,
    _stop: watch::Sender<bool>,
}

pub async fn add_token(
    store: &Store,
    hooks: &store::HookKey,
    name: &str,
    role: Role,
    apps: &[&str],
) -> Credentials {
    // A secret of the form tokens:create makes (others name no token).
    let apps = apps.iter().map(|app| AppName::new(app).unwrap()).collect();
    let (mut token, secret) = Token::create(name, role, apps);
    let signing = format!("whsec_{name}_{}", hex::encode(rand_bytes()));
    token.signing_sealed = Some(hooks.seal(name, signing.as_bytes()));
    store
        .put(&store.keys().token(name).unwrap(), &token)
        .await
        .unwrap();
    Credentials {
        name: name.to_string(),
        secret,
        signing,
    }
}

fn rand_bytes() -> [u8; 12] {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let hash = Sha256::digest(format!("{nanos}-{}", std::process::id()));
    hash[..12].try_into().unwrap()
}

pub async fn start_registry(test_name: &str) -> RegistryFixture {
    start_registry_with(test_name, registry::Limits::default()).await
}

/// A registry that refuses uploads beyond `limits`.
pub async fn start_registry_with(test_name: &str, limits: registry::Limits) -> RegistryFixture {
    let store = tests::test_store(test_name).await;
    let data = tests::temp_dir();
    let hooks = std::sync::Arc::new(
        store::HookKey::load_or_create(&data.path().join("hooks.key")).unwrap(),
    );
    let admin = add_token(&store, &hooks, "root", Role::Admin, &[]).await;
    let deployer = add_token(&store, &hooks, "dev", Role::Deployer, &["web"]).await;
    let machine = add_token(&store, &hooks, "agent", Role::Machine, &[]).await;
    let registry = registry::Registry::new(data.path().join("registry"), store.clone())
        .with_hook_key(hooks)
        .with_limits(limits);
    let (addr, stop) = serve(registry).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    RegistryFixture {
        store,
        data,
        addr,
        admin,
        deployer,
        machine,
        http,
        _stop: stop,
    }
}

/// Serves `registry` on a new port until the sender says stop.
async fn serve(registry: registry::Registry) -> (SocketAddr, watch::Sender<bool>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(registry.serve(listener, async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    (addr, stop)
}

pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

impl RegistryFixture {
    /// Stops the registry; it stays down until [`RegistryFixture::start`].
    pub fn stop(&self) {
        let _ = self._stop.send(true);
    }

    /// Starts the registry again on the same data dir and store (on a new port).
    pub async fn start(&mut self) {
        let hooks = std::sync::Arc::new(
            store::HookKey::load_or_create(&self.data.path().join("hooks.key")).unwrap(),
        );
        let registry =
            registry::Registry::new(self.data.path().join("registry"), self.store.clone())
                .with_hook_key(hooks);
        (self.addr, self._stop) = serve(registry).await;
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request as `who`.
    pub fn request(
        &self,
        who: &Credentials,
        method: reqwest::Method,
        path: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, self.url(path))
            .basic_auth(&who.name, Some(&who.secret))
    }

    /// Pushes `bytes` as a blob of `repo` in one POST; returns its digest.
    pub async fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let response = self
            .request(
                &self.admin,
                reqwest::Method::POST,
                &format!("/v2/{repo}/blobs/uploads/?digest={digest}"),
            )
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        digest
    }

    /// Pushes an image manifest over a config and layers; returns its bytes and digest.
    pub async fn push_image(
        &self,
        repo: &str,
        reference: &str,
        layers: &[&[u8]],
    ) -> (Vec<u8>, String) {
        let config = format!(
            "{{\"architecture\":\"amd64\",\"os\":\"linux\",\"layers\":{}}}",
            layers.len()
        );
        let config_digest = self.push_blob(repo, config.as_bytes()).await;
        let mut descriptors = Vec::new();
        for layer in layers {
            let digest = self.push_blob(repo, layer).await;
            descriptors.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": digest,
                "size": layer.len(),
            }));
        }
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": descriptors,
        }))
        .unwrap();
        let digest = self
            .put_manifest(
                repo,
                reference,
                "application/vnd.oci.image.manifest.v1+json",
                &manifest,
            )
            .await;
        (manifest, digest)
    }

    pub async fn put_manifest(
        &self,
        repo: &str,
        reference: &str,
        media_type: &str,
        bytes: &[u8],
    ) -> String {
        let response = self
            .request(
                &self.admin,
                reqwest::Method::PUT,
                &format!("/v2/{repo}/manifests/{reference}"),
            )
            .header("Content-Type", media_type)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
        response.headers()["Docker-Content-Digest"]
            .to_str()
            .unwrap()
            .to_string()
    }
}

/// The error code of a registry error response.
pub async fn error_code(response: reqwest::Response) -> String {
    let body: serde_json::Value = response.json().await.unwrap();
    body["errors"][0]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}
