//! The registry's listener: at most so many connections at once, and a
//! connection reaches the router only once it has sent a first byte, so idle
//! or flooding clients cannot use up the process's file descriptors.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinHandle;
use tracing::warn;

/// A connection with its slot, given back when it closes.
pub(crate) struct Held {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

/// Connections that have sent their first byte, accepted by a task of its
/// own under a cap; what axum serves.
pub(crate) struct Capped {
    ready: mpsc::Receiver<(Held, SocketAddr)>,
    local: SocketAddr,
    acceptor: JoinHandle<()>,
}

impl Capped {
    /// Accepts from `listener` while fewer than `max` connections are held;
    /// closes one that sends nothing within `first_byte`.
    pub(crate) fn new(
        listener: TcpListener,
        max: usize,
        first_byte: Duration,
    ) -> io::Result<Capped> {
        let local = listener.local_addr()?;
        let (send, ready) = mpsc::channel(64);
        let slots = support::Slots::new("registry", max);
        let acceptor = tokio::spawn(async move {
            loop {
                let slot = slots.take().await;
                let (stream, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        warn!(%error, "registry: accept failed; pausing 100 ms");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let send = send.clone();
                tokio::spawn(async move {
                    let mut byte = [0u8; 1];
                    match tokio::time::timeout(first_byte, stream.peek(&mut byte)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let held = Held {
                        stream,
                        _slot: slot,
                    };
                    let _ = send.send((held, peer)).await;
                });
            }
        });
        Ok(Capped {
            ready,
            local,
            acceptor,
        })
    }
}

impl Drop for Capped {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl axum::serve::Listener for Capped {
    type Io = Held;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Held, SocketAddr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The acceptor ended (its listener failed for good): nothing
            // more will come.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

impl AsyncRead for Held {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Held {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
