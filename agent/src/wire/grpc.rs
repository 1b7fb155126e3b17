//! gRPC as it travels on HTTP/2, as much as a forwarding proxy needs: the 5-byte message
//! frame, the status in headers or trailers, and a response body that is either the
//! runtime's stream or a buffered copy of it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{BufMut as _, Bytes, BytesMut};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{HeaderMap, HeaderValue};
use tonic::Code;

/// `grpc-status`.
const GRPC_STATUS: &str = "grpc-status";
/// `grpc-message`.
const GRPC_MESSAGE: &str = "grpc-message";
/// Length of the frame prefix: compressed flag (1 byte) and message length (u32, big end).
const FRAME_HEADER: usize = 5;

/// The body of a response the proxy returns.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// The runtime's response body, frame by frame, trailers included.
    Stream(Incoming),
    /// A response held in memory: its data, then its trailers.
    Buffered {
        data: Option<Bytes>,
        trailers: Option<HeaderMap>,
    },
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::Buffered {
            data: None,
            trailers: None,
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Stream(body) => Pin::new(body).poll_frame(cx),
            Self::Buffered { data, trailers } => {
                if let Some(data) = data.take() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Poll::Ready(trailers.take().map(|t| Ok(Frame::trailers(t))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Stream(body) => body.is_end_stream(),
            Self::Buffered { data, trailers } => data.is_none() && trailers.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Stream(body) => body.size_hint(),
            Self::Buffered { data, .. } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

/// The message of a unary gRPC body: `None` unless the body is exactly one uncompressed
/// frame (the proxy then forwards it without looking inside).
pub(crate) fn single_message(body: &Bytes) -> Option<Bytes> {
    let header = body.get(..FRAME_HEADER)?;
    if header[0] != 0 {
        return None;
    }
    let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    (body.len() == FRAME_HEADER + length).then(|| body.slice(FRAME_HEADER..))
}

/// `message` in an uncompressed gRPC frame.
pub(crate) fn frame(message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(FRAME_HEADER + message.len());
    framed.put_u8(0);
    framed.put_u32(u32::try_from(message.len()).unwrap_or(u32::MAX));
    framed.put_slice(message);
    framed.freeze()
}

/// The gRPC status of a finished response: `grpc-status` in the trailers, or in the
/// headers for a trailers-only response. A response with neither is `UNKNOWN`.
pub(crate) fn status_of(headers: &HeaderMap, trailers: Option<&HeaderMap>) -> (Code, String) {
    let map = trailers
        .filter(|t| t.contains_key(GRPC_STATUS))
        .unwrap_or(headers);
    match map.get(GRPC_STATUS) {
        Some(code) => (
            Code::from_bytes(code.as_bytes()),
            map.get(GRPC_MESSAGE)
                .map(|m| percent_decode(m.as_bytes()))
                .unwrap_or_default(),
        ),
        None => (
            Code::Unknown,
            "the runtime's response carries no grpc-status".to_owned(),
        ),
    }
}

/// Replaces `grpc-message` where `grpc-status` is (trailers first, then headers); every
/// other header and trailer stays as the runtime sent it.
pub(crate) fn replace_message(
    headers: &mut HeaderMap,
    trailers: Option<&mut HeaderMap>,
    message: &str,
) {
    let map = match trailers {
        Some(t) if t.contains_key(GRPC_STATUS) => t,
        _ => headers,
    };
    map.insert(GRPC_MESSAGE, percent_encode(message));
}

/// `grpc-message` encoding: printable ASCII except `%` as is, every other byte `%XX`.
fn percent_encode(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for byte in message.bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static("regcred"))
}

/// Decodes `%XX` sequences; invalid sequences are kept as they are.
fn percent_decode(value: &[u8]) -> String {
    let mut out = Vec::with_capacity(value.len());
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%'
            && let Some(byte) = value
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(value[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A trailers-only gRPC error response made by the proxy itself.
pub(crate) fn error_response(code: Code, message: &str) -> hyper::Response<ProxyBody> {
    tonic::Status::new(code, message).into_http()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_odd_bodies_are_not_messages() {
        let framed = frame(b"hello");
        assert_eq!(&framed[..], b"\0\0\0\0\x05hello");
        assert_eq!(single_message(&framed).as_deref(), Some(&b"hello"[..]));
        // Compressed, truncated, two frames, shorter than a header.
        for odd in [
            &b"\x01\0\0\0\x05hello"[..],
            b"\0\0\0\0\x06hello",
            b"\0\0\0\0\x01a\0\0\0\0\x01b",
            b"\0\0",
        ] {
            assert_eq!(single_message(&Bytes::copy_from_slice(odd)), None);
        }
    }

    #[test]
    fn status_comes_from_trailers_then_headers_and_messages_are_percent_coded() {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        headers.insert(GRPC_MESSAGE, HeaderValue::from_static("gone%20away%"));
        assert_eq!(
            status_of(&headers, None),
            (Code::Unavailable, "gone away%".to_owned())
        );
        let mut trailers = HeaderMap::new();
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("2"));
        trailers.insert("grpc-status-details-bin", HeaderValue::from_static("AAAA"));
        replace_message(
            &mut headers,
            Some(&mut trailers),
            "401 Unauthorized: übel\n",
        );
        assert_eq!(
            status_of(&headers, Some(&trailers)),
            (Code::Unknown, "401 Unauthorized: übel\n".to_owned())
        );
        assert_eq!(trailers["grpc-status-details-bin"], "AAAA");
        assert_eq!(headers[GRPC_MESSAGE], "gone%20away%", "headers untouched");
        assert_eq!(status_of(&HeaderMap::new(), None).0, Code::Unknown);
    }
}
