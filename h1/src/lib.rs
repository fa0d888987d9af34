//! The proxy's direct backend path's HTTP/1 codec: a request written canonically
//! from what hyper parsed, and a backend's answer framed strictly enough
//! that a pooled connection never carries one answer's bytes into the next.
//!
//! Heads are parsed with `httparse`; everything about where an answer ends
//! is decided here, and every doubt is a refusal ([`FrameError`]): the
//! caller answers 502 and closes that backend connection. What is refused:
//! two `Content-Length`s (equal or not), `Content-Length` beside
//! `Transfer-Encoding`, a `Transfer-Encoding` other than `chunked` alone, a
//! length that is not digits, obs-fold, a head over
//! [`MAX_HEAD`], a chunk size that is not hex digits within 64 bits, chunk data not
//! ended by CRLF, a 101 to a request that asked no upgrade. HEAD answers,
//! 1xx, 204 and 304 have no body; an answer with neither length nor chunks
//! is delimited by close, and its connection is never reused.

#![forbid(unsafe_code)]

pub mod corpus;

use std::ops::Range;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, UPGRADE};
use http::{Method, StatusCode};

/// The largest answer head (status line and headers), as for requests.
pub const MAX_HEAD: usize = 64 * 1024;
/// The most headers an answer may have (as hyper's client allows).
pub const MAX_HEADERS: usize = 100;
/// The most bytes of chunk extensions on one size line, and of trailers.
const MAX_CHUNK_LINE: usize = 4096;
const MAX_TRAILERS: usize = 16 * 1024;

/// Why a backend's answer is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the answer's head is longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("the answer's head is not HTTP/1.x: {0}")]
    Malformed(String),
    #[error("the answer has more than one Content-Length")]
    DuplicateLength,
    #[error("the answer's Content-Length is not a number")]
    BadLength,
    #[error("the answer has both Content-Length and Transfer-Encoding")]
    LengthAndEncoding,
    #[error("the answer's Transfer-Encoding is `{0}`, not `chunked` alone")]
    Encoding(String),
    #[error("the answer's chunk size is not hex digits of at most 64 bits")]
    BadChunkSize,
    #[error("the answer's chunk size line is malformed or too long")]
    BadChunkLine,
    #[error("the answer's chunk data is not followed by CRLF")]
    BadChunkEnd,
    #[error("the answer's trailers are malformed or longer than {MAX_TRAILERS} bytes")]
    BadTrailers,
    #[error("the answer switched protocols (101) but no upgrade was asked")]
    UnaskedUpgrade,
    #[error("the backend closed the connection before the answer's end")]
    Truncated,
}

/// Where an answer's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (HEAD, 1xx, 204, 304, or a length of 0).
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the backend closes: the connection is not reused.
    Close,
    /// A 101 to an upgrade: the connection is the client's from here on.
    Upgrade,
}

/// A parsed answer head.
#[derive(Debug)]
pub struct Head {
    pub status: StatusCode,
    /// `false` for HTTP/1.0.
    pub http11: bool,
    /// The answer's end-to-end headers (hop-by-hop ones and those named in
    /// `Connection` removed, as are `Content-Length` and `Transfer-Encoding`:
    /// the client side writes its own framing).
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub reusable: bool,
    /// The head's length in bytes.
    pub len: usize,
}

/// What the request that an answer is to asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asked {
    pub head: bool,
    pub upgrade: bool,
}

/// Headers that belong to one connection (RFC 9110 §7.6.1), besides those
/// a `Connection` header names.
fn hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// The names a `Connection` header lists, lowercase.
fn connection_options(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|option| option.trim().to_ascii_lowercase())
        .filter(|option| !option.is_empty())
        .collect()
}

/// Parses an answer head at the start of `buf`: `Ok(None)` while it is
/// incomplete (and not yet over [`MAX_HEAD`]).
pub fn parse_head(buf: &[u8], asked: Asked) -> Result<Option<Head>, FrameError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(FrameError::HeadTooLong)
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(FrameError::Malformed(error.to_string())),
    };
    if len > MAX_HEAD {
        return Err(FrameError::HeadTooLong);
    }
    let code = response.code.expect("a complete head has a status");
    let status = StatusCode::from_u16(code)
        .map_err(|_| FrameError::Malformed(format!("status {code} is not 100-999")))?;
    let http11 = response.version == Some(1);
    let mut all = HeaderMap::with_capacity(response.headers.len());
    for header in response.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| FrameError::Malformed(format!("header name {:?}", header.name)))?;
        let value = HeaderValue::from_bytes(header.value)
            .map_err(|_| FrameError::Malformed(format!("the value of {name}")))?;
        all.append(name, value);
    }
    let framed = frame_answer(status, http11, all, asked)?;
    Ok(Some(Head {
        status,
        http11,
        headers: framed.headers,
        framing: framed.framing,
        reusable: framed.reusable,
        len,
    }))
}

/// An answer's framing decided from its status and headers.
#[derive(Debug)]
pub struct Framed {
    /// The end-to-end headers, as in [`Head::headers`].
    pub headers: HeaderMap,
    pub framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub reusable: bool,
}

/// Decides an answer's framing from its status, version and headers, with
/// every check of [`parse_head`] past the bytes: the direct path's heads,
/// and the heads hyper's client parsed, so that both paths refuse alike and
/// hand the client the same end-to-end headers.
pub fn frame_answer(
    status: StatusCode,
    http11: bool,
    all: HeaderMap,
    asked: Asked,
) -> Result<Framed, FrameError> {
    let lengths: Vec<&[u8]> = all
        .get_all(CONTENT_LENGTH)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .collect();
    let length = match lengths.as_slice() {
        [] => None,
        [one] => {
            let digits = trim(one);
            if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
                return Err(FrameError::BadLength);
            }
            let text = std::str::from_utf8(digits).expect("digits are UTF-8");
            // hyper's longest (its larger values are markers).
            let n = text.parse::<u64>().map_err(|_| FrameError::BadLength)?;
            if n > u64::MAX - 2 {
                return Err(FrameError::BadLength);
            }
            Some(n)
        }
        _ => return Err(FrameError::DuplicateLength),
    };
    let encodings: Vec<String> = all
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|coding| String::from_utf8_lossy(trim(coding)).to_ascii_lowercase())
        .collect();
    // `chunked,` ends with nothing: chunked to some, read until close to others.
    if encodings.iter().any(String::is_empty) {
        return Err(FrameError::Malformed("an empty transfer coding".into()));
    }
    let encoded = all.contains_key(http::header::TRANSFER_ENCODING);
    // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 is faulty framing.
    if encoded && !http11 {
        return Err(FrameError::Malformed(
            "Transfer-Encoding in HTTP/1.0".into(),
        ));
    }
    if encoded && length.is_some() {
        return Err(FrameError::LengthAndEncoding);
    }
    // One coding, chunked: a body under any other coding would reach the
    // client with that coding's name lost (the client side writes its own
    // framing), and backends send no other.
    if encoded && encodings != ["chunked"] {
        return Err(FrameError::Encoding(encodings.join(", ")));
    }
    let options = connection_options(&all);
    let close = options.iter().any(|option| option == "close");
    let keep_alive = options.iter().any(|option| option == "keep-alive");

    let framing = if status == StatusCode::SWITCHING_PROTOCOLS {
        if !asked.upgrade {
            return Err(FrameError::UnaskedUpgrade);
        }
        Framing::Upgrade
    } else if status.is_informational()
        || asked.head
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if encoded {
        Framing::Chunked
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let reusable =
        !matches!(framing, Framing::Close | Framing::Upgrade) && !close && (http11 || keep_alive);

    let mut headers = HeaderMap::with_capacity(all.len());
    let mut last: Option<HeaderName> = None;
    for (name, value) in all {
        let name = match name {
            Some(name) => {
                last = Some(name.clone());
                name
            }
            None => last.clone().expect("a value follows its name"),
        };
        let keep = if framing == Framing::Upgrade {
            // The client must see what it switches to (`Connection:
            // upgrade` names `Upgrade`, which stays).
            name == UPGRADE
                || name == CONNECTION
                || (!hop_by_hop(&name) && !options.iter().any(|o| o == name.as_str()))
        } else {
            !hop_by_hop(&name) && !options.iter().any(|o| o == name.as_str())
        };
        if keep && name != CONTENT_LENGTH {
            headers.append(name, value);
        }
    }
    if let Framing::Length(n) = framing {
        // The client side must announce the same length (also for HEAD,
        // where there is no body, the length is kept below).
        headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
    } else if asked.head || status == StatusCode::NOT_MODIFIED {
        if let Some(n) = length {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    Ok(Framed {
        headers,
        framing,
        reusable,
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |end| end + 1);
    &bytes[start..end]
}

/// Reads one answer's body from the bytes that follow its head.
#[derive(Debug)]
pub struct BodyReader {
    state: BodyState,
}

#[derive(Debug)]
enum BodyState {
    Length(u64),
    Chunked(Chunked),
    Close,
    Done,
}

/// One step of reading a body.
#[derive(Debug, PartialEq, Eq)]
pub struct Piece {
    /// How many bytes of the input were used.
    pub used: usize,
    /// Where in the input this step's body data is (may be empty).
    pub data: Range<usize>,
}

impl BodyReader {
    pub fn new(framing: Framing) -> BodyReader {
        let state = match framing {
            Framing::Empty | Framing::Upgrade | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Chunked::default()),
            Framing::Close => BodyState::Close,
        };
        BodyReader { state }
    }

    /// Whether the body has been read to its exact end.
    pub fn is_done(&self) -> bool {
        matches!(self.state, BodyState::Done)
    }

    /// Reads from `input`; call again with the rest while it is not done.
    /// Bytes after the body's end are never used.
    pub fn feed(&mut self, input: &[u8]) -> Result<Piece, FrameError> {
        match &mut self.state {
            BodyState::Done => Ok(Piece {
                used: 0,
                data: 0..0,
            }),
            BodyState::Close => Ok(Piece {
                used: input.len(),
                data: 0..input.len(),
            }),
            BodyState::Length(left) => {
                let n = usize::try_from(*left)
                    .unwrap_or(usize::MAX)
                    .min(input.len());
                *left -= n as u64;
                if *left == 0 {
                    self.state = BodyState::Done;
                }
                Ok(Piece {
                    used: n,
                    data: 0..n,
                })
            }
            BodyState::Chunked(chunked) => {
                let piece = chunked.feed(input)?;
                if chunked.state == ChunkState::Done {
                    self.state = BodyState::Done;
                }
                Ok(piece)
            }
        }
    }

    /// The backend closed the connection: fine only for a body delimited by
    /// close (or one already read to its end).
    pub fn eof(&mut self) -> Result<(), FrameError> {
        match self.state {
            BodyState::Done => Ok(()),
            BodyState::Close => {
                self.state = BodyState::Done;
                Ok(())
            }
            _ => Err(FrameError::Truncated),
        }
    }
}

/// The chunked transfer coding's decoder (RFC 9112 §7.1).
#[derive(Debug, Default)]
struct Chunked {
    state: ChunkState,
    /// Hex digits of the size seen so far.
    digits: usize,
    size: u64,
    /// Bytes of the current size line after its digits, or of the trailers.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    /// Whitespace after the size, before `;` or CR.
    SizeSpace,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

impl Chunked {
    fn feed(&mut self, input: &[u8]) -> Result<Piece, FrameError> {
        use ChunkState::*;
        let mut at = 0;
        while at < input.len() {
            let byte = input[at];
            match self.state {
                Size => match byte {
                    b'0'..=b'9' | b'a'..=b'f' | b'A'..=b'F' => {
                        // Leading zeros are allowed (as hyper does), only
                        // as many as a size line may hold.
                        if self.size >> 60 != 0 {
                            return Err(FrameError::BadChunkSize);
                        }
                        self.line_byte()?;
                        let digit = (byte as char).to_digit(16).expect("a hex digit");
                        self.size = self.size << 4 | u64::from(digit);
                        self.digits += 1;
                    }
                    _ if self.digits == 0 => return Err(FrameError::BadChunkSize),
                    b' ' | b'\t' => self.state = SizeSpace,
                    b';' => self.state = Extension,
                    b'\r' => self.state = SizeLf,
                    _ => return Err(FrameError::BadChunkSize),
                },
                SizeSpace => match byte {
                    b' ' | b'\t' => self.line_byte()?,
                    b';' => self.state = Extension,
                    b'\r' => self.state = SizeLf,
                    _ => return Err(FrameError::BadChunkLine),
                },
                // Extensions are dropped unread; only CR and LF end them
                // (hyper takes any other byte, NUL too).
                Extension => match byte {
                    b'\r' => self.state = SizeLf,
                    b'\n' => return Err(FrameError::BadChunkLine),
                    _ => self.line_byte()?,
                },
                SizeLf => {
                    if byte != b'\n' {
                        return Err(FrameError::BadChunkLine);
                    }
                    self.line = 0;
                    self.digits = 0;
                    self.state = if self.size == 0 { TrailerStart } else { Data };
                }
                Data => {
                    let n = usize::try_from(self.size)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - at);
                    self.size -= n as u64;
                    if self.size == 0 {
                        self.state = DataCr;
                    }
                    return Ok(Piece {
                        used: at + n,
                        data: at..at + n,
                    });
                }
                DataCr if byte == b'\r' => self.state = DataLf,
                DataLf if byte == b'\n' => self.state = Size,
                DataCr | DataLf => return Err(FrameError::BadChunkEnd),
                TrailerStart => match byte {
                    b'\r' => self.state = EndLf,
                    b'\n' => return Err(FrameError::BadTrailers),
                    _ => {
                        self.trailer_byte()?;
                        self.state = TrailerLine;
                    }
                },
                TrailerLine => match byte {
                    b'\r' => self.state = TrailerLf,
                    b'\n' => return Err(FrameError::BadTrailers),
                    _ => self.trailer_byte()?,
                },
                TrailerLf => {
                    if byte != b'\n' {
                        return Err(FrameError::BadTrailers);
                    }
                    self.state = TrailerStart;
                }
                EndLf => {
                    if byte != b'\n' {
                        return Err(FrameError::BadTrailers);
                    }
                    self.state = Done;
                    return Ok(Piece {
                        used: at + 1,
                        data: at + 1..at + 1,
                    });
                }
                Done => break,
            }
            at += 1;
        }
        Ok(Piece {
            used: at,
            data: at..at,
        })
    }

    fn line_byte(&mut self) -> Result<(), FrameError> {
        self.line += 1;
        if self.line > MAX_CHUNK_LINE {
            return Err(FrameError::BadChunkLine);
        }
        Ok(())
    }

    fn trailer_byte(&mut self) -> Result<(), FrameError> {
        self.line += 1;
        if self.line > MAX_TRAILERS {
            return Err(FrameError::BadTrailers);
        }
        Ok(())
    }
}

/// How a request's body is sent to the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    /// No body, and no framing header.
    None,
    Length(u64),
    Chunked,
}

/// Writes a request head canonically: `METHOD TARGET HTTP/1.1`, the
/// end-to-end headers (hop-by-hop ones and those named in `Connection`
/// dropped; `Upgrade` kept, with `Connection: upgrade`, when `upgrade`),
/// then one framing header. `target` is the origin form hyper parsed;
/// neither it nor a `HeaderValue` can hold CR or LF.
pub fn write_request(
    out: &mut Vec<u8>,
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    body: RequestBody,
    upgrade: bool,
) {
    let options = connection_options(headers);
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // `Connection: upgrade` names `Upgrade`: kept for an upgrade only.
        let keep = if upgrade && name == UPGRADE {
            true
        } else {
            !hop_by_hop(name) && !options.iter().any(|o| o == name.as_str())
        };
        if !keep || name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if upgrade {
        out.extend_from_slice(b"connection: upgrade\r\n");
    }
    match body {
        RequestBody::None => {}
        RequestBody::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(n.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        RequestBody::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes one chunk of a chunked request body (nothing for empty data:
/// an empty chunk would end the body).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The end of a chunked request body.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Expect;
    use proptest::prelude::*;

    const GET: Asked = Asked {
        head: false,
        upgrade: false,
    };

    fn head(text: &str) -> Result<Option<Head>, FrameError> {
        parse_head(text.as_bytes(), GET)
    }

    /// A whole answer read from `bytes`: its head, its body and how many
    /// bytes it took; `eof` says the backend closes after `bytes`.
    fn read(bytes: &[u8], asked: Asked, eof: bool) -> Result<(Head, Vec<u8>, usize), FrameError> {
        // Interim answers (1xx but 101) are passed over, as the proxy does.
        let mut at = 0;
        let head = loop {
            let head = parse_head(&bytes[at..], asked)?.ok_or(FrameError::Truncated)?;
            at += head.len;
            if !head.status.is_informational() || head.framing == Framing::Upgrade {
                break head;
            }
        };
        let mut reader = BodyReader::new(head.framing);
        let mut body = Vec::new();
        while !reader.is_done() && at < bytes.len() {
            let piece = reader.feed(&bytes[at..])?;
            body.extend_from_slice(&bytes[at..][piece.data]);
            at += piece.used;
        }
        if !reader.is_done() {
            if !eof {
                return Err(FrameError::Truncated);
            }
            reader.eof()?;
        }
        Ok((head, body, at))
    }

    #[test]
    fn framing_is_refused_when_in_doubt() {
        let cases: &[(&str, FrameError)] = &[
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                FrameError::DuplicateLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 5\r\n\r\n",
                FrameError::DuplicateLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5, 5\r\n\r\n",
                FrameError::DuplicateLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: +5\r\n\r\n",
                FrameError::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 0x5\r\n\r\n",
                FrameError::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
                FrameError::BadLength,
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\n",
                FrameError::LengthAndEncoding,
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked, chunked\r\n\r\n",
                FrameError::Encoding("chunked, chunked".into()),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n",
                FrameError::Encoding("gzip".into()),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
                FrameError::Encoding("gzip, chunked".into()),
            ),
            (
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n\r\n",
                FrameError::Encoding("chunked, chunked".into()),
            ),
            (
                "HTTP/1.1 200 OK\r\ncontent-length: 18446744073709551614\r\n\r\n",
                FrameError::BadLength,
            ),
            (
                "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n\r\n",
                FrameError::UnaskedUpgrade,
            ),
        ];
        for (text, error) in cases {
            assert_eq!(head(text).unwrap_err(), *error, "{text:?}");
        }
        for text in [
            // obs-fold
            "HTTP/1.1 200 OK\r\nx-a: 1\r\n  folded\r\n\r\n",
            // a space before the colon
            "HTTP/1.1 200 OK\r\ncontent-length : 5\r\n\r\n",
            // a bare CR inside a value
            "HTTP/1.1 200 OK\r\nx-a: 1\r2\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 20 OK\r\n\r\n",
        ] {
            assert!(
                matches!(head(text), Err(FrameError::Malformed(_))),
                "{text:?}: {:?}",
                head(text).map(|h| h.map(|h| h.framing))
            );
        }
        let long = format!("HTTP/1.1 200 OK\r\nx-a: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head(&long).unwrap_err(), FrameError::HeadTooLong);
        let long = format!("{long}\r\n");
        assert_eq!(head(&long).unwrap_err(), FrameError::HeadTooLong);
        assert!(head("HTTP/1.1 200 OK\r\ncontent-le").unwrap().is_none());
    }

    #[test]
    fn bodies_end_where_the_rfc_says() {
        let framing = |text: &str, asked: Asked| {
            let head = parse_head(text.as_bytes(), asked).unwrap().unwrap();
            (head.framing, head.reusable)
        };
        let cl = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        assert_eq!(framing(cl, GET), (Framing::Length(5), true));
        let head_request = Asked {
            head: true,
            upgrade: false,
        };
        assert_eq!(framing(cl, head_request), (Framing::Empty, true));
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let text = format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\n");
            assert_eq!(framing(&text, GET), (Framing::Empty, true), "{status}");
        }
        let close = "HTTP/1.1 200 OK\r\n\r\n";
        assert_eq!(framing(close, GET), (Framing::Close, false));
        let chunked = "HTTP/1.1 200 OK\r\ntransfer-encoding:  Chunked \r\n\r\n";
        assert_eq!(framing(chunked, GET), (Framing::Chunked, true));
        let old = "HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n";
        assert_eq!(framing(old, GET), (Framing::Length(1), false));
        let old = "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n";
        assert_eq!(framing(old, GET), (Framing::Length(1), true));
        let closing = "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n";
        assert_eq!(framing(closing, GET), (Framing::Length(1), false));
        let upgrade = Asked {
            head: false,
            upgrade: true,
        };
        let switched =
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n";
        assert_eq!(framing(switched, upgrade), (Framing::Upgrade, false));
        let head = parse_head(switched.as_bytes(), upgrade).unwrap().unwrap();
        assert_eq!(head.headers["upgrade"], "websocket");
        assert_eq!(head.headers["connection"], "upgrade");
    }

    #[test]
    fn hop_by_hop_headers_do_not_pass_either_way() {
        let text = "HTTP/1.1 200 OK\r\nconnection: x-secret, close\r\nx-secret: 1\r\nkeep-alive: 5\r\ntransfer-encoding: chunked\r\nx-kept: 2\r\n\r\n";
        let head = head(text).unwrap().unwrap();
        let names: Vec<&str> = head.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept"]);

        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("host", "demo.paz.localhost"),
            ("connection", "x-private"),
            ("x-private", "1"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("content-length", "7"),
            ("upgrade", "websocket"),
            ("x-forwarded-for", "10.0.0.1"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        let mut out = Vec::new();
        write_request(
            &mut out,
            &Method::POST,
            "/a?b=c",
            &headers,
            RequestBody::Length(3),
            false,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /a?b=c HTTP/1.1\r\nhost: demo.paz.localhost\r\nx-forwarded-for: 10.0.0.1\r\ncontent-length: 3\r\n\r\n"
        );
        // An upgrade keeps `Upgrade`, though `Connection` names it.
        headers.insert("connection", HeaderValue::from_static("upgrade"));
        let mut out = Vec::new();
        write_request(
            &mut out,
            &Method::GET,
            "/ws",
            &headers,
            RequestBody::None,
            true,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /ws HTTP/1.1\r\nhost: demo.paz.localhost\r\nx-private: 1\r\nupgrade: websocket\r\nx-forwarded-for: 10.0.0.1\r\nconnection: upgrade\r\n\r\n"
        );
    }

    #[test]
    fn chunks_are_read_strictly() {
        let ok = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5;ext=\"a\"\r\nhello\r\n1 \r\n!\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let (_, body, used) = read(ok, GET, false).unwrap();
        assert_eq!(body, b"hello!");
        assert_eq!(&ok[used..], b"NEXT");
        let bad: &[(&[u8], FrameError)] = &[
            (b"g\r\n", FrameError::BadChunkSize),
            (b"\r\n", FrameError::BadChunkSize),
            (b"-1\r\n", FrameError::BadChunkSize),
            (b"0x5\r\n", FrameError::BadChunkSize),
            (b"10000000000000000\r\n", FrameError::BadChunkSize),
            (b"5\nhello\r\n0\r\n\r\n", FrameError::BadChunkSize),
            (b"5\r\nhelloXX0\r\n\r\n", FrameError::BadChunkEnd),
            (b"5\r\nhello\n0\r\n\r\n", FrameError::BadChunkEnd),
            (b"5\r\nhelloX\n0\r\n\r\n", FrameError::BadChunkEnd),
            (b"5\r\nhello\rX0\r\n\r\n", FrameError::BadChunkEnd),
            (b"5;a\nb\r\nhello\r\n0\r\n\r\n", FrameError::BadChunkLine),
            (b"5 x\r\nhello\r\n0\r\n\r\n", FrameError::BadChunkLine),
            (b"0\r\nx: 1\n\r\n", FrameError::BadTrailers),
        ];
        for (chunks, error) in bad {
            let mut text = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            text.extend_from_slice(chunks);
            assert_eq!(
                read(&text, GET, false).unwrap_err(),
                *error,
                "{}",
                String::from_utf8_lossy(chunks)
            );
        }
        let truncated = b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort";
        assert_eq!(
            read(truncated, GET, true).unwrap_err(),
            FrameError::Truncated
        );
        let closed = b"HTTP/1.1 200 OK\r\n\r\nuntil close";
        assert_eq!(read(closed, GET, true).unwrap().1, b"until close");
    }

    /// The published smuggling and splitting cases against hyper, pingora
    /// and HAProxy (h1/corpus/answers.txt, with what hyper's client does):
    /// what hyper refuses is refused; what it accepts is read to the same
    /// body, or refused (stricter is allowed), never read differently.
    #[test]
    fn the_adversarial_corpus_is_refused_or_read_as_hyper_reads_it() {
        let mut checked = 0;
        for case in crate::corpus::cases().into_iter().filter(|c| !c.request) {
            let name = &case.name;
            let asked = Asked {
                head: case.head,
                upgrade: false,
            };
            let read = read(&case.wire, asked, true);
            match (&case.expect, &read) {
                // Refused as hyper refuses, or stricter than hyper.
                (_, Err(_)) => {}
                (Expect::Refuse, Ok((_, body, _))) => {
                    panic!("{name}: hyper refuses it, the framer read {body:?}")
                }
                (Expect::CloseDelimited, Ok((head, _, _))) => {
                    assert_eq!(head.framing, Framing::Close, "{name}")
                }
                (Expect::Body(want), Ok((_, read, _))) => assert_eq!(read, want, "{name}"),
            }
            checked += 1;
        }
        assert!(checked > 80, "only {checked} cases read");
    }

    /// One generated answer: its bytes and the body it carries.
    fn answer() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
        let headers = proptest::collection::vec(("x-[a-z]{1,8}", "[ -~]{0,20}"), 0..5);
        let body = proptest::collection::vec(any::<u8>(), 0..600);
        let cuts = proptest::collection::vec(1usize..200, 0..6);
        (
            headers,
            body,
            any::<bool>(),
            cuts,
            "(;[a-z]{1,5}(=[a-z0-9]{1,5})?)?",
        )
            .prop_map(|(headers, body, chunked, cuts, extension)| {
                let mut out = b"HTTP/1.1 200 OK\r\n".to_vec();
                for (name, value) in headers {
                    out.extend_from_slice(format!("{name}: {}\r\n", value.trim()).as_bytes());
                }
                if chunked {
                    out.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
                    let mut rest = &body[..];
                    for cut in cuts.into_iter().chain(std::iter::once(usize::MAX)) {
                        let n = cut.min(rest.len());
                        if n == 0 {
                            break;
                        }
                        out.extend_from_slice(format!("{n:X}{extension}\r\n").as_bytes());
                        out.extend_from_slice(&rest[..n]);
                        out.extend_from_slice(b"\r\n");
                        rest = &rest[n..];
                    }
                    out.extend_from_slice(b"0\r\n\r\n");
                } else {
                    out.extend_from_slice(
                        format!("content-length: {}\r\n\r\n", body.len()).as_bytes(),
                    );
                    out.extend_from_slice(&body);
                }
                (out, body)
            })
    }

    proptest! {
        /// Two answers pipelined on one connection and delivered in any
        /// pieces: the first's body is exactly its own, and the reader
        /// stops at its end, where the second begins intact.
        #[test]
        fn an_answer_never_reads_into_the_next(
            (first, first_body) in answer(),
            (second, second_body) in answer(),
            pieces in proptest::collection::vec(1usize..64, 1..40),
        ) {
            let mut wire = first.clone();
            wire.extend_from_slice(&second);
            // The head arrives whole (the caller buffers until it parses);
            // the body in the generated pieces.
            let head = parse_head(&wire, GET).unwrap().unwrap();
            let mut reader = BodyReader::new(head.framing);
            let mut at = head.len;
            let mut body = Vec::new();
            let mut sizes = pieces.iter().cycle();
            while !reader.is_done() {
                let end = (at + sizes.next().unwrap()).min(wire.len());
                let mut window = at;
                while window < end && !reader.is_done() {
                    let piece = reader.feed(&wire[window..end]).unwrap();
                    body.extend_from_slice(&wire[window..end][piece.data]);
                    window += piece.used;
                    if piece.used == 0 { break; }
                }
                at = window;
            }
            prop_assert_eq!(&body, &first_body);
            prop_assert_eq!(at, first.len());
            let (_, body, used) = read(&wire[at..], GET, false).unwrap();
            prop_assert_eq!(body, second_body);
            prop_assert_eq!(used, second.len());
        }

        /// Whatever bytes a backend sends, the framer answers or refuses,
        /// never panics, and never uses bytes past what it was given.
        #[test]
        fn any_bytes_are_framed_or_refused(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut wire = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            wire.extend_from_slice(&bytes);
            if let Ok((_, _, used)) = read(&wire, GET, true) {
                prop_assert!(used <= wire.len());
            }
            let _ = parse_head(&bytes, GET);
        }
    }
}
