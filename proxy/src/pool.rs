//! Keep-alive HTTP/1.1 connections to backends, per address. A connection is
//! opened only when none is idle; a failed connect is reported before any
//! byte of a request is sent, which is what makes a retry safe.
//!
//! A connection goes back to its idle list when the response body has been
//! read to its end (see [`Returning`]), without a task of its own; the list
//! may then hold a connection whose task has not yet noticed it is free, so
//! [`Pools::get`] takes the newest one that is ready and keeps the others.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use crate::table::Backend;
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
        if let Some(sender) = self.take_ready(addr) {
            return Ok(sender);
        }
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| format!("connect to {addr} timed out"))?
                .map_err(|error| format!("cannot connect to {addr}: {error}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::Builder::new()
            // A request head is one small write: one `send`, not a `writev`.
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("cannot talk HTTP to {addr}: {error}"))?;
        tokio::spawn(async move {
            let _ = connection.with_upgrades().await;
        });
        Ok(sender)
    }

    /// The newest idle connection that can take a request now; closed ones
    /// are dropped, ones not ready yet stay for later.
    fn take_ready(&self, addr: &str) -> Option<SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(addr)?;
        let mut index = list.len();
        while index > 0 {
            index -= 1;
            if list[index].is_closed() {
                list.swap_remove(index);
            } else if list[index].is_ready() {
                return Some(list.swap_remove(index));
            }
        }
        None
    }

    /// Wraps a response body so that its connection comes back to the pool
    /// once the body has been read to its end (not if it is dropped before).
    pub(crate) fn returning(
        &self,
        backend: Arc<Backend>,
        sender: SendRequest<Body>,
        body: Incoming,
    ) -> Returning {
        Returning {
            body,
            home: Some((self.idle.clone(), backend, sender)),
        }
    }
}

/// A backend's response body that returns its connection to the pool at its end.
pub(crate) struct Returning {
    body: Incoming,
    home: Option<(Idle, Arc<Backend>, SendRequest<Body>)>,
}

impl Returning {
    fn give_back(&mut self) {
        if let Some((idle, backend, sender)) = self.home.take() {
            let mut idle = idle.lock().unwrap_or_else(|p| p.into_inner());
            // No new key (an allocation) once the backend has one.
            let list = match idle.get_mut(backend.addr.as_str()) {
                Some(list) => list,
                None => idle.entry(backend.addr.clone()).or_default(),
            };
            if list.len() < MAX_IDLE {
                list.push(sender);
            }
        }
    }
}

impl hyper::body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.give_back(),
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.give_back(),
            Poll::Ready(Some(Err(_))) => this.home = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
