//! Keep-alive HTTP/1.1 connections to backends, per address. A connection is
//! opened only when none is idle; a failed connect is reported before any
//! byte of a request is sent, which is what makes a retry safe.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::Body;

type Idle = Arc<Mutex<HashMap<String, Vec<SendRequest<Body>>>>>;

pub(crate) struct Pools {
    connect_timeout: Duration,
    idle: Idle,
}

/// Idle connections kept per backend.
const MAX_IDLE: usize = 64;

impl Pools {
    pub(crate) fn new(connect_timeout: Duration) -> Pools {
        Pools {
            connect_timeout,
            idle: Arc::default(),
        }
    }

    /// An idle connection to `addr`, or a new one.
    pub(crate) async fn get(&self, addr: &str) -> Result<SendRequest<Body>, String> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_mut(addr)
                .and_then(Vec::pop);
            match idle {
                Some(sender) if sender.is_ready() && !sender.is_closed() => return Ok(sender),
                Some(_) => continue,
                None => break,
            }
        }
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("cannot talk HTTP to {addr}: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// Keeps a connection for the next request once its response is done.
    pub(crate) fn put_back(&self, addr: &str, mut sender: SendRequest<Body>) {
        let idle = self.idle.clone();
        let addr = addr.to_string();
        tokio::spawn(async move {
            // Ready again when the response body has been read to its end.
            if sender.ready().await.is_err() {
                return;
            }
            let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
            let list = idle.entry(addr).or_default();
            if list.len() < MAX_IDLE {
                list.push(sender);
            }
        });
    }
}
