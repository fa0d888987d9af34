//! A stream with bytes already read from it put back in front: the first
//! bytes of a TLS connection are awaited (within the header timeout) before
//! hyper takes it, as the first byte of a plain one is peeked, so a client
//! that finishes its handshake and then sends nothing is closed.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// `inner`, read from `first` onwards.
#[derive(Debug)]
pub(crate) struct FirstBytes<S> {
    first: Bytes,
    inner: S,
}

impl<S: AsyncRead + Unpin> FirstBytes<S> {
    /// Reads what `inner` sends first (at least a byte); `None` if it closes.
    pub(crate) async fn read(mut inner: S) -> io::Result<Option<FirstBytes<S>>> {
        let mut buffer = vec![0u8; 4096];
        let n = inner.read(&mut buffer).await?;
        if n == 0 {
            return Ok(None);
        }
        buffer.truncate(n);
        Ok(Some(FirstBytes {
            first: Bytes::from(buffer),
            inner,
        }))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstBytes<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.first.is_empty() {
            let n = self.first.len().min(buf.remaining());
            let taken = self.first.split_to(n);
            buf.put_slice(&taken);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(context, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstBytes<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(context, data)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        context: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(context, data)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(context)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, context: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(context)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn what_was_read_first_is_read_again_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut stream = FirstBytes::read(server).await.unwrap().unwrap();
        client.write_all(b"Host: a\r\n").await.unwrap();
        drop(client);
        let mut all = String::new();
        stream.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "GET / HTTP/1.1\r\nHost: a\r\n");
        let (client, server) = tokio::io::duplex(64);
        drop(client);
        assert!(
            FirstBytes::read(server).await.unwrap().is_none(),
            "closed at once"
        );
    }
}
