//! A process that registers one key on a lease and then waits to be killed:
//! tests kill it with SIGKILL to show the key vanishes when its owner dies.
//!
//! Usage: lease-holder ETCD_URL PREFIX APP TTL_SECONDS

use std::time::Duration;

use store::{AppName, Store, StoreConfig};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, prefix, app, ttl] = args.as_slice() else {
        eprintln!("usage: lease-holder ETCD_URL PREFIX APP TTL_SECONDS");
        std::process::exit(2);
    };
    let mut config = StoreConfig::new(vec![url.clone()]);
    config.prefix = prefix.clone();
    let store = Store::connect(config).await.expect("connect");
    let app = AppName::new(app).expect("app name");
    let key = store.keys().service(&app, 1, "1").expect("key");
    let ttl = Duration::from_secs(ttl.parse().expect("ttl"));
    let _registration = store
        .register(&key, &"127.0.0.1:5000".to_string(), ttl)
        .await
        .expect("register");
    println!("registered");
    std::future::pending::<()>().await;
}
