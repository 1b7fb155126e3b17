//! Accepts the `:authority` every CRI client sends, not only kubelet's.
//!
//! grpc C-core clients (Python's grpcio 1.57+ and others) send the percent-encoded socket
//! path (`%2Frun%2Fregcred%2Fcri-proxy.sock`) as `:authority`, grpc-java and others the
//! raw path, some an empty one. containerd (grpc-go) takes any of them; the `h2` crate
//! resets such a stream with `PROTOCOL_ERROR` ("malformed authority") before hyper hands
//! it to the proxy, and has no option to relax that.
//!
//! [`Normalized`] sits between the accepted socket and hyper and rewrites the bytes the
//! client sends, nothing else: it follows the HTTP/2 frames, decodes every header block
//! (HEADERS and its CONTINUATION frames) with the client's HPACK context, replaces an
//! `:authority` that [`Authority`] does not parse (exactly the values h2 rejects, the
//! empty one included) with `localhost`, and encodes the block again without the dynamic
//! table: the first block it sends sets h2's table size to 0, so h2's decoder never needs
//! an entry the client's encoder made. Blocks larger than the max frame size are split
//! into CONTINUATION frames; padding is dropped, priority kept. Every other frame (DATA,
//! SETTINGS, PING, WINDOW_UPDATE, RST_STREAM, GOAWAY, unknown types) passes byte for
//! byte, and what the server writes passes unchanged.
//!
//! What the client may send is bounded by the settings hyper advertises: frames up to
//! [`MAX_FRAME_SIZE`] (set on hyper's builder with the same constant), an HPACK table of
//! at most [`HEADER_TABLE_SIZE`] (the protocol default, which hyper keeps), header
//! blocks up to [`MAX_HEADER_BLOCK`] encoded and decoded. Anything outside them, a block
//! HPACK cannot decode, or a frame sequence HTTP/2 forbids (a frame between HEADERS and
//! its CONTINUATION, PUSH_PROMISE from a client) is a connection error: reading fails
//! with [`std::io::ErrorKind::InvalidData`] and hyper closes the connection. Buffering is
//! bounded by one frame and one header block; errors never quote header values.

use std::borrow::Cow;
use std::io;

use hyper::http::uri::Authority;
use loona_hpack::huffman::HuffmanDecoder;
use loona_hpack::{Decoder, Encoder};

mod block;
mod stream;

pub use stream::{Normalized, Normalizing};

use block::{headers_fragment, without_huffman, write_block};

/// The largest frame payload the client may send: SETTINGS_MAX_FRAME_SIZE as hyper is
/// configured with it (`max_frame_size` on its HTTP/2 builder, 16 KiB, its default), and
/// the largest frame this module sends.
pub const MAX_FRAME_SIZE: u32 = 16 * 1024;

/// The largest HPACK dynamic table the client's encoder may use: SETTINGS_HEADER_TABLE_SIZE,
/// which hyper leaves at the protocol's default.
pub const HEADER_TABLE_SIZE: usize = 4096;

/// The largest header block accepted, encoded (HEADERS and CONTINUATION fragments
/// together) and decoded (names, values and 32 bytes per field, as HPACK counts them).
/// Four times the header list size hyper advertises (16 KiB), so h2 still answers a list
/// between the two itself; a CRI request's headers take about 200 bytes.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;

/// What a client's `:authority` becomes when h2 would reject it (kubelet's own value).
const REPLACEMENT: &[u8] = b"localhost";

const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER_LEN: usize = 9;

const HEADERS: u8 = 0x1;
const PUSH_PROMISE: u8 = 0x5;
const CONTINUATION: u8 = 0x9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// Why the client's byte stream was refused (a connection error).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum NormalizeError {
    /// A frame larger than the advertised SETTINGS_MAX_FRAME_SIZE.
    #[error(
        "HTTP/2 frame of type {frame_type:#x} has {length} bytes, above the max frame size {max}"
    )]
    FrameTooLarge {
        /// The frame type.
        frame_type: u8,
        /// The frame's payload length.
        length: usize,
        /// The max frame size.
        max: u32,
    },
    /// A HEADERS frame whose padding or priority fields do not fit its payload.
    #[error("HTTP/2 HEADERS frame on stream {stream}: padding or priority longer than the frame")]
    BadPadding {
        /// The stream id.
        stream: u32,
    },
    /// A frame other than CONTINUATION on the same stream while a header block is open,
    /// or CONTINUATION with no open block.
    #[error(
        "HTTP/2 frame of type {frame_type:#x} on stream {stream} where CONTINUATION of an open header block must come"
    )]
    ExpectedContinuation {
        /// The frame type.
        frame_type: u8,
        /// The stream id.
        stream: u32,
    },
    /// A CONTINUATION frame with no header block open.
    #[error("HTTP/2 CONTINUATION frame on stream {stream} without a HEADERS frame before it")]
    UnexpectedContinuation {
        /// The stream id.
        stream: u32,
    },
    /// PUSH_PROMISE, which only servers send.
    #[error("HTTP/2 PUSH_PROMISE frame from a client on stream {stream}")]
    PushPromise {
        /// The stream id.
        stream: u32,
    },
    /// A header block larger than [`MAX_HEADER_BLOCK`], encoded or decoded.
    #[error("HTTP/2 header block on stream {stream} is larger than {max} bytes")]
    HeaderBlockTooLarge {
        /// The stream id.
        stream: u32,
        /// The limit.
        max: usize,
    },
    /// HPACK could not decode the block (the client's encoder context is then lost).
    #[error("HTTP/2 header block on stream {stream}: HPACK decoding failed: {reason}")]
    Hpack {
        /// The stream id.
        stream: u32,
        /// The decoder's reason (never a header value).
        reason: String,
    },
}

impl From<NormalizeError> for io::Error {
    fn from(err: NormalizeError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, err)
    }
}

/// A frame header, as read.
#[derive(Debug, Clone, Copy)]
struct FrameHead {
    length: usize,
    frame_type: u8,
    flags: u8,
    stream: u32,
}

impl FrameHead {
    fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        Self {
            length: usize::from(bytes[0]) << 16
                | usize::from(bytes[1]) << 8
                | usize::from(bytes[2]),
            frame_type: bytes[3],
            flags: bytes[4],
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }
}

fn write_frame_head(out: &mut Vec<u8>, length: usize, frame_type: u8, flags: u8, stream: u32) {
    let length = u32::try_from(length).unwrap_or(u32::MAX).to_be_bytes();
    out.extend_from_slice(&length[1..]);
    out.push(frame_type);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
}

#[derive(Debug)]
enum State {
    /// Inside the 24-byte connection preface; `seen` bytes of it matched.
    Preface { seen: usize },
    /// Not HTTP/2 with prior knowledge: everything passes, h2 says what is wrong.
    Opaque,
    /// Reading a frame header.
    Head {
        bytes: [u8; FRAME_HEADER_LEN],
        have: usize,
    },
    /// Copying `remaining` payload bytes of a frame that passes unchanged.
    Pass { remaining: usize },
    /// Collecting the payload of a HEADERS or CONTINUATION frame.
    Collect { head: FrameHead, payload: Vec<u8> },
}

/// A header block under way: its HEADERS frame came without END_HEADERS.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    /// END_STREAM and PRIORITY of the HEADERS frame.
    flags: u8,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server rewriter: bytes in, bytes for h2 out. No I/O; [`Normalized`]
/// drives it.
pub struct Normalizer {
    state: State,
    open: Option<OpenBlock>,
    decoder: Decoder<'static>,
    encoder: Encoder<'static>,
    /// The first block sent carries a table size update to 0.
    table_cleared: bool,
    max_frame_size: u32,
    /// Header fields decoded, reused between blocks.
    fields: Vec<(Vec<u8>, Vec<u8>)>,
    /// One Huffman decoder for the connection: loona's `Decoder` builds a new one (a
    /// table of 257 codes) for every Huffman-coded string, which grpc-go sends on every
    /// call (`grpc-timeout`), and that was the largest part of the proxy's own CPU time.
    huffman: HuffmanDecoder,
    /// A block with its Huffman strings decoded, reused between blocks.
    plain: Vec<u8>,
    rewritten: u64,
}

impl std::fmt::Debug for Normalizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header values (tokens in `authorization`) stay out of Debug.
        f.debug_struct("Normalizer")
            .field("state", &self.state_name())
            .field("rewritten", &self.rewritten)
            .finish_non_exhaustive()
    }
}

impl Default for Normalizer {
    fn default() -> Self {
        Self::new(MAX_FRAME_SIZE)
    }
}

impl Normalizer {
    /// A rewriter for a connection whose server advertises `max_frame_size` (taken
    /// within HTTP/2's bounds, 16 KiB to 16 MiB - 1).
    pub fn new(max_frame_size: u32) -> Self {
        let max_frame_size = max_frame_size.clamp(16 * 1024, (1 << 24) - 1);
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
        let mut encoder = Encoder::new();
        // The encoder then refers to the static table only.
        encoder.set_max_table_size(0);
        Self {
            state: State::Preface { seen: 0 },
            open: None,
            decoder,
            encoder,
            table_cleared: false,
            max_frame_size,
            fields: Vec::new(),
            huffman: HuffmanDecoder::new(),
            plain: Vec::new(),
            rewritten: 0,
        }
    }

    /// How many `:authority` values were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    fn state_name(&self) -> &'static str {
        match self.state {
            State::Preface { .. } => "preface",
            State::Opaque => "opaque",
            State::Head { .. } => "frame header",
            State::Pass { .. } => "frame payload",
            State::Collect { .. } => "header block",
        }
    }

    /// Consumes `input` (any split of the client's stream) and appends what h2 is to read
    /// to `out`.
    ///
    /// # Errors
    ///
    /// A [`NormalizeError`]: the connection is to be closed; later calls are not
    /// meaningful.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), NormalizeError> {
        while !input.is_empty() {
            match &mut self.state {
                State::Preface { seen } => {
                    let take = (PREFACE.len() - *seen).min(input.len());
                    if input[..take] != PREFACE[*seen..*seen + take] {
                        self.state = State::Opaque;
                        continue;
                    }
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *seen += take;
                    if *seen == PREFACE.len() {
                        self.state = State::Head {
                            bytes: [0; FRAME_HEADER_LEN],
                            have: 0,
                        };
                    }
                }
                State::Opaque => {
                    out.extend_from_slice(input);
                    input = &[];
                }
                State::Head { bytes, have } => {
                    let take = (FRAME_HEADER_LEN - *have).min(input.len());
                    bytes[*have..*have + take].copy_from_slice(&input[..take]);
                    input = &input[take..];
                    *have += take;
                    if *have == FRAME_HEADER_LEN {
                        let raw = *bytes;
                        self.start_frame(&raw, out)?;
                    }
                }
                State::Pass { remaining } => {
                    let take = (*remaining).min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    *remaining -= take;
                    if *remaining == 0 {
                        self.state = next_head();
                    }
                }
                State::Collect { head, payload } => {
                    let take = (head.length - payload.len()).min(input.len());
                    payload.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    if payload.len() == head.length {
                        self.finish_collect(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// A frame header is complete: decide what happens to its payload.
    fn start_frame(
        &mut self,
        raw: &[u8; FRAME_HEADER_LEN],
        out: &mut Vec<u8>,
    ) -> Result<(), NormalizeError> {
        let head = FrameHead::parse(raw);
        if head.length > self.max_frame_size as usize {
            return Err(NormalizeError::FrameTooLarge {
                frame_type: head.frame_type,
                length: head.length,
                max: self.max_frame_size,
            });
        }
        match (&self.open, head.frame_type) {
            (Some(open), CONTINUATION) if open.stream == head.stream => {}
            (Some(_), frame_type) => {
                return Err(NormalizeError::ExpectedContinuation {
                    frame_type,
                    stream: head.stream,
                });
            }
            (None, CONTINUATION) => {
                return Err(NormalizeError::UnexpectedContinuation {
                    stream: head.stream,
                });
            }
            (None, PUSH_PROMISE) => {
                return Err(NormalizeError::PushPromise {
                    stream: head.stream,
                });
            }
            (None, _) => {}
        }
        if matches!(head.frame_type, HEADERS | CONTINUATION) {
            self.state = State::Collect {
                head,
                payload: Vec::with_capacity(head.length),
            };
            if head.length == 0 {
                self.finish_collect(out)?;
            }
        } else {
            out.extend_from_slice(raw);
            self.state = if head.length == 0 {
                next_head()
            } else {
                State::Pass {
                    remaining: head.length,
                }
            };
        }
        Ok(())
    }

    /// A HEADERS or CONTINUATION payload is complete.
    fn finish_collect(&mut self, out: &mut Vec<u8>) -> Result<(), NormalizeError> {
        let State::Collect { head, payload } = std::mem::replace(&mut self.state, next_head())
        else {
            return Ok(());
        };
        let mut block = match self.open.take() {
            Some(mut open) => {
                if open.fragment.len() + payload.len() > MAX_HEADER_BLOCK {
                    return Err(NormalizeError::HeaderBlockTooLarge {
                        stream: head.stream,
                        max: MAX_HEADER_BLOCK,
                    });
                }
                open.fragment.extend_from_slice(&payload);
                open
            }
            None => headers_fragment(head, &payload)?,
        };
        if head.flags & END_HEADERS == 0 {
            self.open = Some(block);
            return Ok(());
        }
        let fragment = std::mem::take(&mut block.fragment);
        self.emit_block(&block, &fragment, out)
    }

    /// Decodes one complete header block, rewrites `:authority`, and appends it, encoded
    /// anew, as HEADERS (+ CONTINUATION) frames.
    fn emit_block(
        &mut self,
        block: &OpenBlock,
        fragment: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), NormalizeError> {
        let stream = block.stream;
        let fields = &mut self.fields;
        fields.clear();
        let mut decoded_size = 0usize;
        let mut too_large = false;
        let mut rewritten = 0;
        let fragment = if without_huffman(fragment, &mut self.huffman, &mut self.plain) {
            &self.plain[..]
        } else {
            fragment
        };
        let decoded =
            self.decoder
                .decode_with_cb(fragment, |name: Cow<'_, [u8]>, value: Cow<'_, [u8]>| {
                    decoded_size = decoded_size.saturating_add(name.len() + value.len() + 32);
                    if too_large || decoded_size > MAX_HEADER_BLOCK {
                        too_large = true;
                        return;
                    }
                    let value =
                        if &name[..] == b":authority" && Authority::try_from(&value[..]).is_err() {
                            rewritten += 1;
                            Cow::Borrowed(REPLACEMENT)
                        } else {
                            value
                        };
                    fields.push((name.into_owned(), value.into_owned()));
                });
        if let Err(err) = decoded {
            return Err(NormalizeError::Hpack {
                stream,
                reason: err.to_string(),
            });
        }
        if too_large {
            return Err(NormalizeError::HeaderBlockTooLarge {
                stream,
                max: MAX_HEADER_BLOCK,
            });
        }
        if rewritten > 0 {
            tracing::debug!(
                stream,
                "client :authority is not a valid authority; sent as localhost"
            );
            self.rewritten += rewritten;
        }

        let mut encoded = Vec::with_capacity(fragment.len() + 64);
        if !self.table_cleared {
            // A dynamic table size update to 0: h2's decoder keeps no entry either.
            encoded.push(0x20);
            self.table_cleared = true;
        }
        self.encoder
            .encode_into(
                self.fields.iter().map(|(n, v)| (&n[..], &v[..])),
                &mut encoded,
            )
            .map_err(|err| NormalizeError::Hpack {
                stream,
                reason: err.to_string(),
            })?;
        write_block(out, block, &encoded, self.max_frame_size as usize);
        Ok(())
    }
}
fn next_head() -> State {
    State::Head {
        bytes: [0; FRAME_HEADER_LEN],
        have: 0,
    }
}
#[cfg(test)]
mod tests;
