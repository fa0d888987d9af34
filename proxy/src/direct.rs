//! The direct backend path (`--backend-http direct`): requests written and
//! answers framed by Paz's own HTTP/1 codec (`h1`) on plain `TcpStream`s,
//! instead of hyper's client. hyper still serves the client side.
//!
//! Connections are pooled per worker thread (a socket stays with the event
//! loop it was registered with) and per backend. One goes back to its pool
//! only when its answer was read to its exact end, the answer allowed reuse
//! and not one byte more came; anything else closes it.

use std::cell::RefCell;
use std::collections::HashMap;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use h1::{Asked, BodyReader, FrameError, Framing, RequestBody};
use http_body_util::BodyExt;
use hyper::body::{Frame, SizeHint};
use hyper::{Method, Request, Response};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::Body;

/// Idle connections kept per backend and worker thread: as many as a
/// busy thread has requests in flight to one backend (hyper's pool has no
/// bound), so 512 clients do not churn connections (measured: 0.52x
/// HAProxy's requests/s at 512 connections with 64 kept).
const MAX_IDLE: usize = 1024;
/// An idle connection unused this long is closed, as hyper's pool does.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How much is read from a backend at once.
const READ_SIZE: usize = 16 * 1024;

/// Why the direct path could not bring an answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirectError {
    /// Nothing was sent: another instance may be tried.
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("talking to the backend: {0}")]
    Io(#[from] std::io::Error),
    #[error("the request body failed: {0}")]
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
    #[error(transparent)]
    Frame(#[from] FrameError),
}

/// One backend connection and what was read from it but not yet used.
#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
}

thread_local! {
    /// Per backend, idle connections with when each went idle, oldest first.
    static IDLE: RefCell<HashMap<String, Vec<(TcpStream, Instant)>>> = RefCell::new(HashMap::new());
}

/// The newest idle connection to `addr` that is still open: one the
/// backend closed (or sent bytes on, unasked) while idle is dropped, so that
/// a failed connection is found before anything is sent on it.
fn take_idle(addr: &str) -> Option<TcpStream> {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let list = idle.get_mut(addr)?;
        while let Some((stream, since)) = list.pop() {
            if since.elapsed() > IDLE_TIMEOUT {
                // The rest went idle earlier still.
                list.clear();
                return None;
            }
            let mut byte = [0u8; 1];
            if let Err(error) = stream.try_read(&mut byte) {
                if error.kind() == std::io::ErrorKind::WouldBlock {
                    return Some(stream);
                }
            }
        }
        None
    })
}

/// Give-backs between two sweeps of every backend's idle list.
const SWEEP_EVERY: u32 = 1024;

thread_local! {
    static SINCE_SWEEP: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn give_back(addr: &str, stream: TcpStream) {
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        // Instances come and go with each release (on new ports): idle
        // connections to addresses no longer asked for are closed too.
        let since = SINCE_SWEEP.get() + 1;
        SINCE_SWEEP.set(since % SWEEP_EVERY);
        if since == SWEEP_EVERY {
            idle.retain(|_, list| {
                list.retain(|(_, since)| since.elapsed() <= IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = match idle.get_mut(addr) {
            Some(list) => list,
            None => idle.entry(addr.to_string()).or_default(),
        };
        let now = Instant::now();
        let expired = list
            .iter()
            .take_while(|(_, since)| now.duration_since(*since) > IDLE_TIMEOUT)
            .count();
        list.drain(..expired);
        if list.len() < MAX_IDLE {
            list.push((stream, now));
        }
    });
}

async fn connect(addr: &str, timeout: Duration) -> Result<TcpStream, DirectError> {
    let failed = |reason: String| DirectError::Connect {
        addr: addr.to_string(),
        reason,
    };
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| failed("timed out".into()))?
        .map_err(|error| failed(error.to_string()))?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// How the request's body is framed to the backend, as hyper's client does:
/// no framing for an empty body of a method without one, a length when it
/// is known, else chunks.
fn request_framing(method: &Method, body: &Body) -> RequestBody {
    if hyper::body::Body::is_end_stream(body) {
        return match *method {
            Method::GET | Method::HEAD | Method::CONNECT | Method::OPTIONS | Method::DELETE => {
                RequestBody::None
            }
            _ => RequestBody::Length(0),
        };
    }
    match hyper::body::Body::size_hint(body).exact() {
        Some(n) => RequestBody::Length(n),
        None => RequestBody::Chunked,
    }
}

/// A backend connection taken for one request: an idle one, or a new one.
#[derive(Debug)]
pub(crate) struct Checkout {
    stream: TcpStream,
    reused: bool,
}

/// An idle connection to `addr` from this thread's pool, or a new one; a
/// failed connect sent nothing, so another instance may be tried.
pub(crate) async fn checkout(addr: &str, timeout: Duration) -> Result<Checkout, DirectError> {
    if let Some(stream) = take_idle(addr) {
        return Ok(Checkout {
            stream,
            reused: true,
        });
    }
    Ok(Checkout {
        stream: connect(addr, timeout).await?,
        reused: false,
    })
}

/// Sends `request` on `checkout` (to `addr`) and reads the answer's head;
/// the body streams from the returned response. `upgrade` is the client's
/// side of an upgrade the request asks for.
pub(crate) async fn send(
    checkout: Checkout,
    addr: &str,
    connect_timeout: Duration,
    request: Request<Body>,
    upgrade: Option<hyper::upgrade::OnUpgrade>,
) -> Result<Response<Body>, DirectError> {
    let (parts, mut body) = request.into_parts();
    let framing = request_framing(&parts.method, &body);
    let asked = Asked {
        head: parts.method == Method::HEAD,
        upgrade: upgrade.is_some(),
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(512);
    h1::write_request(
        &mut head,
        &parts.method,
        target,
        &parts.headers,
        framing,
        upgrade.is_some(),
    );

    // A pooled connection the backend closed while idle fails before any
    // byte of the answer: a request without a body is sent again on a new
    // one (nothing of it can have been acted on twice: it never arrived).
    let reused = checkout.reused;
    let mut conn = Conn {
        stream: checkout.stream,
        buf: BytesMut::new(),
    };
    let mut answer = write_and_read_head(&mut conn, &head, &mut body, framing, asked).await;
    if reused && framing == RequestBody::None && matches!(answer, Err(Stale)) {
        conn.stream = connect(addr, connect_timeout).await?;
        conn.buf.clear();
        answer = write_and_read_head(&mut conn, &head, &mut body, framing, asked).await;
    }
    let (parsed, sent) = match answer {
        Ok(answer) => answer,
        Err(Stale) => return Err(FrameError::Truncated.into()),
        Err(Failed(error)) => return Err(error),
    };

    let mut response = Response::new(http_body_util::Empty::new().map_err(|n| match n {}).boxed());
    *response.status_mut() = parsed.status;
    *response.headers_mut() = parsed.headers;
    if parsed.framing == Framing::Upgrade {
        if let Some(client) = upgrade {
            tokio::spawn(join_upgrade(client, conn));
        }
        return Ok(response);
    }
    let reader = BodyReader::new(parsed.framing);
    let body = DirectBody {
        home: (parsed.reusable && sent).then(|| addr.to_string()),
        conn: Some(conn),
        reader,
        size: match parsed.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Empty => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        },
    };
    *response.body_mut() = body.boxed();
    Ok(response)
}

/// How one attempt ended short of a head.
enum Attempt {
    /// The connection was closed or reset before any byte of an answer.
    Stale,
    Failed(DirectError),
}
use Attempt::{Failed, Stale};

impl From<DirectError> for Attempt {
    fn from(error: DirectError) -> Attempt {
        Failed(error)
    }
}

/// Writes the request (head, then its body in the chosen framing) while it
/// reads the answer's head, past any 1xx but a 101: a backend may answer
/// before it has read the whole body (a 413, a redirect), and the answer
/// then goes to the client at once. `true` with the head when the whole
/// request was sent: else the rest of the body is not, and the connection
/// is not reused.
async fn write_and_read_head(
    conn: &mut Conn,
    head: &[u8],
    body: &mut Body,
    framing: RequestBody,
    asked: Asked,
) -> Result<(h1::Head, bool), Attempt> {
    let (mut reader, mut writer) = conn.stream.split();
    let buf = &mut conn.buf;
    let write = async {
        writer.write_all(head).await.map_err(stale)?;
        if framing == RequestBody::None {
            return Ok::<(), Attempt>(());
        }
        let mut chunk = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Failed(DirectError::RequestBody(e)))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if framing == RequestBody::Chunked {
                chunk.clear();
                h1::write_chunk(&mut chunk, &data);
                writer.write_all(&chunk).await
            } else {
                writer.write_all(&data).await
            }
            .map_err(|e| Failed(e.into()))?;
        }
        if framing == RequestBody::Chunked {
            writer
                .write_all(h1::LAST_CHUNK)
                .await
                .map_err(|e| Failed(e.into()))?;
        }
        Ok(())
    };
    let read = async {
        let mut any = false;
        loop {
            if !buf.is_empty() {
                if let Some(parsed) = h1::parse_head(buf, asked).map_err(|e| Failed(e.into()))? {
                    buf.advance(parsed.len);
                    if parsed.status.is_informational() && parsed.framing != Framing::Upgrade {
                        continue;
                    }
                    return Ok(parsed);
                }
            }
            buf.reserve(READ_SIZE);
            match tokio::io::AsyncReadExt::read_buf(&mut reader, buf).await {
                Ok(0) if !any => return Err(Stale),
                Ok(0) => return Err(Failed(FrameError::Truncated.into())),
                Ok(_) => any = true,
                Err(error) if !any => return Err(stale(error)),
                Err(error) => return Err(Failed(error.into())),
            }
        }
    };
    tokio::pin!(write, read);
    let mut sent = false;
    // A backend that answers early may close before the body is all sent:
    // the write fails, and the answer already on its way is still read.
    let mut write_failed = false;
    loop {
        tokio::select! {
            written = &mut write, if !sent && !write_failed => match written {
                Ok(()) => sent = true,
                // The client's body failed: no answer can be complete.
                Err(Failed(DirectError::RequestBody(error))) => {
                    return Err(Failed(DirectError::RequestBody(error)))
                }
                Err(_) => write_failed = true,
            },
            parsed = &mut read => return Ok((parsed?, sent)),
        }
    }
}

/// A connection reset or closed under a write or before any byte of an
/// answer: the backend closed it while it was idle.
fn stale(error: std::io::Error) -> Attempt {
    match error.kind() {
        std::io::ErrorKind::ConnectionReset
        | std::io::ErrorKind::BrokenPipe
        | std::io::ErrorKind::ConnectionAborted => Stale,
        _ => Failed(error.into()),
    }
}

/// After a 101: what the backend sent past its head goes to the client
/// first, then both ways are copied until either closes.
async fn join_upgrade(client: hyper::upgrade::OnUpgrade, mut conn: Conn) {
    let Ok(client) = client.await else {
        return;
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    // Sent now (and flushed: the client side holds writes until a flush),
    // as the backend may wait for the client after its greeting.
    if !conn.buf.is_empty()
        && (client.write_all(&conn.buf).await.is_err() || client.flush().await.is_err())
    {
        return;
    }
    let _ = tokio::io::copy_bidirectional(&mut client, &mut conn.stream).await;
}

/// An answer's body read from its backend connection, which goes back to
/// the pool at the body's exact end when the answer allowed it.
struct DirectBody {
    conn: Option<Conn>,
    reader: BodyReader,
    /// The backend's address, when the connection may be reused.
    home: Option<String>,
    size: SizeHint,
}

impl DirectBody {
    fn finish(&mut self) {
        if let (Some(conn), Some(home)) = (self.conn.take(), self.home.take()) {
            // Bytes past the answer's end are no answer to anything: close.
            if conn.buf.is_empty() {
                give_back(&home, conn.stream);
            }
        }
    }
}

impl hyper::body::Body for DirectBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        loop {
            if this.reader.is_done() {
                this.finish();
                return Poll::Ready(None);
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if !conn.buf.is_empty() {
                let piece = match this.reader.feed(&conn.buf) {
                    Ok(piece) => piece,
                    Err(error) => {
                        this.conn = None;
                        return Poll::Ready(Some(Err(Box::new(error))));
                    }
                };
                let used = conn.buf.split_to(piece.used).freeze();
                if !piece.data.is_empty() {
                    let data = used.slice(piece.data);
                    if this.reader.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                continue;
            }
            conn.buf.reserve(READ_SIZE);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.stream),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) => {
                    let ended = this.reader.eof();
                    this.conn = None;
                    this.home = None;
                    return match ended {
                        Ok(()) => Poll::Ready(None),
                        Err(error) => Poll::Ready(Some(Err(Box::new(error)))),
                    };
                }
                Ok(_) => {}
                Err(error) => {
                    this.conn = None;
                    return Poll::Ready(Some(Err(Box::new(error))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.reader.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}
