//! The frames of an attached one-off (`run`), between the server and the
//! agent that runs its container, over one upgraded HTTP/1.1 connection:
//! the caller's stdin and window size one way, the container's stdout,
//! stderr and exit code the other, each frame a kind byte, a 4-byte
//! big-endian length and the payload.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// The `Upgrade` protocol an attach asks for.
pub const ATTACH_PROTOCOL: &str = "paz-attach";

/// The largest payload a frame carries.
pub const MAX_FRAME: usize = 1 << 20;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Caller to container.
    Stdin(Bytes),
    /// The caller's stdin ended.
    StdinEnd,
    /// The caller's terminal is now `cols` × `rows`.
    Resize {
        cols: u16,
        rows: u16,
    },
    /// Container to caller.
    Stdout(Bytes),
    Stderr(Bytes),
    /// The container exited with this code; the last frame.
    Exit(i64),
    /// The run could not go on (said to the caller); the last frame.
    Failed(String),
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("an attach frame of kind {0} is not one Paz sends")]
    Kind(u8),
    #[error("an attach frame of {0} bytes is over the limit of 1 MiB")]
    TooLarge(usize),
    #[error("an attach frame of kind {kind} has a payload of {len} bytes, which it cannot")]
    Length { kind: u8, len: usize },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Reads and writes [`Frame`]s (`tokio_util::codec::Framed`).
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

const STDIN: u8 = 0;
const STDIN_END: u8 = 1;
const RESIZE: u8 = 2;
const STDOUT: u8 = 3;
const STDERR: u8 = 4;
const EXIT: u8 = 5;
const FAILED: u8 = 6;

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if src.len() < 5 {
            return Ok(None);
        }
        let kind = src[0];
        let len = u32::from_be_bytes([src[1], src[2], src[3], src[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if src.len() < 5 + len {
            src.reserve(5 + len - src.len());
            return Ok(None);
        }
        src.advance(5);
        let mut payload = src.split_to(len).freeze();
        let wrong = || FrameError::Length { kind, len };
        let frame = match kind {
            STDIN => Frame::Stdin(payload),
            STDIN_END if len == 0 => Frame::StdinEnd,
            RESIZE if len == 4 => Frame::Resize {
                cols: payload.get_u16(),
                rows: payload.get_u16(),
            },
            STDOUT => Frame::Stdout(payload),
            STDERR => Frame::Stderr(payload),
            EXIT if len == 8 => Frame::Exit(payload.get_i64()),
            FAILED => Frame::Failed(String::from_utf8_lossy(&payload).into_owned()),
            STDIN_END | RESIZE | EXIT => return Err(wrong()),
            other => return Err(FrameError::Kind(other)),
        };
        Ok(Some(frame))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let (kind, payload): (u8, Bytes) = match frame {
            Frame::Stdin(data) => (STDIN, data),
            Frame::StdinEnd => (STDIN_END, Bytes::new()),
            Frame::Resize { cols, rows } => {
                let mut size = BytesMut::with_capacity(4);
                size.put_u16(cols);
                size.put_u16(rows);
                (RESIZE, size.freeze())
            }
            Frame::Stdout(data) => (STDOUT, data),
            Frame::Stderr(data) => (STDERR, data),
            Frame::Exit(code) => (EXIT, Bytes::copy_from_slice(&code.to_be_bytes())),
            Frame::Failed(reason) => (FAILED, Bytes::from(reason)),
        };
        if payload.len() > MAX_FRAME {
            return Err(FrameError::TooLarge(payload.len()));
        }
        dst.reserve(5 + payload.len());
        dst.put_u8(kind);
        dst.put_u32(payload.len() as u32);
        dst.extend_from_slice(&payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_frame_reads_back_as_written_even_in_pieces() {
        let frames = vec![
            Frame::Stdin(Bytes::from_static(b"echo hi\n")),
            Frame::StdinEnd,
            Frame::Resize {
                cols: 132,
                rows: 43,
            },
            Frame::Stdout(Bytes::from_static(b"hi\n")),
            Frame::Stderr(Bytes::new()),
            Frame::Exit(-1),
            Frame::Exit(3),
            Frame::Failed("no such app".into()),
        ];
        let mut wire = BytesMut::new();
        for frame in &frames {
            FrameCodec.encode(frame.clone(), &mut wire).unwrap();
        }
        // Fed one byte at a time, as a slow connection would.
        let (mut buffer, mut read) = (BytesMut::new(), Vec::new());
        for byte in wire {
            buffer.put_u8(byte);
            while let Some(frame) = FrameCodec.decode(&mut buffer).unwrap() {
                read.push(frame);
            }
        }
        assert_eq!(read, frames);
    }

    #[test]
    fn bad_frames_are_errors_not_panics() {
        let decode = |bytes: &[u8]| FrameCodec.decode(&mut BytesMut::from(bytes));
        assert!(matches!(decode(&[9, 0, 0, 0, 0]), Err(FrameError::Kind(9))));
        assert!(matches!(
            decode(&[RESIZE, 0, 0, 0, 1, 7]),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            decode(&[EXIT, 0, 0, 0, 0]),
            Err(FrameError::Length { .. })
        ));
        assert!(matches!(
            decode(&[STDOUT, 0xff, 0xff, 0xff, 0xff]),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(decode(&[STDOUT, 0, 0]), Ok(None)));
    }
}
