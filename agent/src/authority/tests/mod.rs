//! The frame parser and rewriter, alone and in front of hyper's HTTP/2 server.

use super::*;

type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// A frame as the client writes it.
fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    write_frame_head(&mut out, payload.len(), frame_type, flags, stream);
    out.extend_from_slice(payload);
    out
}

fn settings() -> Vec<u8> {
    // SETTINGS_ENABLE_PUSH = 0, SETTINGS_INITIAL_WINDOW_SIZE = 4 MiB.
    frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0, 0, 4, 0, 0x40, 0, 0])
}

/// What grpcio sends for a unary call, `authority` as given (none when `None`).
fn request_fields(authority: Option<&str>, path: &str) -> Fields {
    let mut fields: Fields = vec![
        (b":scheme".to_vec(), b"http".to_vec()),
        (b":method".to_vec(), b"POST".to_vec()),
    ];
    if let Some(authority) = authority {
        fields.push((b":authority".to_vec(), authority.as_bytes().to_vec()));
    }
    fields.extend([
        (b":path".to_vec(), path.as_bytes().to_vec()),
        (b"te".to_vec(), b"trailers".to_vec()),
        (b"content-type".to_vec(), b"application/grpc".to_vec()),
        (
            b"user-agent".to_vec(),
            b"grpc-python/1.76.0 grpc-c/51.0.0 (linux; chttp2)".to_vec(),
        ),
        (
            b"grpc-accept-encoding".to_vec(),
            b"identity, deflate, gzip".to_vec(),
        ),
    ]);
    fields
}

/// The client's encoder: it indexes into its dynamic table, as grpc C-core's does.
fn encode(encoder: &mut Encoder<'_>, fields: &Fields) -> Vec<u8> {
    encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])))
}

fn with_authority(fields: &Fields, authority: &[u8]) -> Fields {
    fields
        .iter()
        .map(|(n, v)| {
            if n == b":authority" {
                (n.clone(), authority.to_vec())
            } else {
                (n.clone(), v.clone())
            }
        })
        .collect()
}

fn normalize(input: &[u8]) -> Result<Vec<u8>, NormalizeError> {
    let mut normalizer = Normalizer::default();
    let mut out = Vec::new();
    normalizer.feed(input, &mut out)?;
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    frame_type: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// Splits what the normalizer sent (after the preface) into frames.
fn frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while !bytes.is_empty() {
        let head = FrameHead::parse(bytes[..9].try_into().unwrap());
        frames.push(Frame {
            frame_type: head.frame_type,
            flags: head.flags,
            stream: head.stream,
            payload: bytes[9..9 + head.length].to_vec(),
        });
        bytes = &bytes[9 + head.length..];
    }
    frames
}

/// Decodes the header blocks in `frames` as h2 would: a fresh decoder, blocks joined
/// from HEADERS and CONTINUATION. Also checks each frame fits the max frame size.
fn header_blocks(frames: &[Frame]) -> Vec<Fields> {
    let mut decoder = Decoder::new();
    decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE);
    let mut blocks = Vec::new();
    let mut block = Vec::new();
    for frame in frames {
        assert!(frame.payload.len() <= MAX_FRAME_SIZE as usize);
        match frame.frame_type {
            HEADERS => {
                assert_eq!(frame.flags & PADDED, 0, "padding is dropped");
                let skip = if frame.flags & PRIORITY != 0 { 5 } else { 0 };
                block = frame.payload[skip..].to_vec();
            }
            CONTINUATION => block.extend_from_slice(&frame.payload),
            _ => continue,
        }
        if frame.flags & END_HEADERS != 0 {
            blocks.push(decoder.decode(&block).expect("h2 can decode what is sent"));
        }
    }
    blocks
}

fn authority_of(fields: &Fields) -> Option<&[u8]> {
    fields
        .iter()
        .find(|(n, _)| n == b":authority")
        .map(|(_, v)| &v[..])
}

/// A client connection: preface, SETTINGS, a request on stream 1 with `authority`, its
/// DATA, and a second request on stream 3 whose block refers to the first's entries.
/// Also the client's encoder, to go on with.
fn client_stream(authority: Option<&str>) -> (Vec<u8>, Fields, Encoder<'static>) {
    let mut encoder = Encoder::new();
    let fields = request_fields(authority, "/runtime.v1.ImageService/ListImages");
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    input.extend(frame(
        HEADERS,
        END_HEADERS,
        1,
        &encode(&mut encoder, &fields),
    ));
    input.extend(frame(0x0, END_STREAM, 1, &[0, 0, 0, 0, 2, 0x0a, 0]));
    let first = encode(&mut Encoder::new(), &fields);
    let second = encode(&mut encoder, &fields);
    assert!(
        second.len() < first.len(),
        "the second block refers to the dynamic table"
    );
    input.extend(frame(HEADERS, END_HEADERS, 3, &second));
    (input, fields, encoder)
}

#[test]
fn socket_paths_and_empty_authorities_become_localhost_in_every_block() {
    for authority in [
        "%2Frun%2Fregcred%2Fcri-proxy.sock",
        "/run/regcred/cri-proxy.sock",
        "",
        "unix:/run/x.sock",
        "a b",
    ] {
        let (input, fields, _) = client_stream(Some(authority));
        let mut normalizer = Normalizer::default();
        let mut out = Vec::new();
        normalizer.feed(&input, &mut out).unwrap();
        assert_eq!(&out[..24], PREFACE);
        let sent = frames(&out[24..]);
        let blocks = header_blocks(&sent);
        let expected = with_authority(&fields, b"localhost");
        assert_eq!(blocks, [expected.clone(), expected], "{authority:?}");
        assert_eq!(normalizer.rewritten(), 2, "{authority:?}");
    }
}

#[test]
fn valid_or_missing_authorities_are_kept() {
    for authority in [
        Some("localhost"),
        Some("127.0.0.1:10250"),
        Some("[::1]:1"),
        None,
    ] {
        let (input, fields, _) = client_stream(authority);
        let mut normalizer = Normalizer::default();
        let mut out = Vec::new();
        normalizer.feed(&input, &mut out).unwrap();
        let blocks = header_blocks(&frames(&out[24..]));
        assert_eq!(blocks, [fields.clone(), fields.clone()], "{authority:?}");
        assert_eq!(
            authority_of(&blocks[0]).map(<[u8]>::to_vec),
            authority.map(|a| a.as_bytes().to_vec())
        );
        assert_eq!(normalizer.rewritten(), 0);
    }
}

#[test]
fn the_first_block_empties_the_servers_table_and_none_refers_to_it() {
    let (input, _, _) = client_stream(Some("%2Frun%2Fx.sock"));
    let out = normalize(&input).unwrap();
    let sent = frames(&out[24..]);
    let headers: Vec<&Frame> = sent.iter().filter(|f| f.frame_type == HEADERS).collect();
    assert_eq!(headers[0].payload[0], 0x20, "table size update to 0");
    for frame in &headers {
        // A decoder whose dynamic table holds nothing decodes every block alone.
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(0);
        let payload = if frame.payload[0] == 0x20 {
            &frame.payload[1..]
        } else {
            &frame.payload[..]
        };
        decoder
            .decode(payload)
            .expect("static table references only");
    }
}

#[test]
fn other_frames_pass_byte_for_byte() {
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &request_fields(Some("localhost"), "/x"));
    let mut input = PREFACE.to_vec();
    let mut passing = Vec::new();
    passing.extend(settings());
    passing.extend(frame(0x4, 0x1, 0, &[])); // SETTINGS ack
    passing.extend(frame(0x6, 0, 0, b"pingpong")); // PING
    passing.extend(frame(0x8, 0, 0, &[0, 0x10, 0, 0])); // WINDOW_UPDATE
    passing.extend(frame(0x2, 0, 1, &[0, 0, 0, 0, 16])); // PRIORITY
    passing.extend(frame(0x0, PADDED, 1, &[3, 1, 2, 3, 0, 0, 0])); // DATA, padded
    passing.extend(frame(0x0, END_STREAM, 1, &[])); // empty DATA
    passing.extend(frame(0xfa, 0xff, 7, b"an extension frame")); // unknown type
    passing.extend(frame(0x3, 0, 1, &[0, 0, 0, 8])); // RST_STREAM
    passing.extend(frame(
        0x7,
        0,
        0,
        &[0, 0, 0, 1, 0, 0, 0, 0, b'b', b'y', b'e'],
    )); // GOAWAY
    input.extend(&passing);
    input.extend(frame(HEADERS, END_HEADERS, 5, &block));
    input.extend(&passing);
    let out = normalize(&input).unwrap();
    let sent = frames(&out[24..]);
    let expected = frames(&passing);
    let n = expected.len();
    assert_eq!(sent.len(), 2 * n + 1);
    assert_eq!(sent[..n], expected[..]);
    assert_eq!(sent[n + 1..], expected[..]);
    assert_eq!(&out[24..24 + passing.len()], &passing[..], "byte for byte");
    assert_eq!(&out[out.len() - passing.len()..], &passing[..]);
}

#[test]
fn any_split_of_the_input_gives_the_same_output() {
    let (mut input, _, mut encoder) = client_stream(Some("%2Frun%2Fx.sock"));
    // CONTINUATION, padding and priority in the stream too.
    let block = encode(&mut encoder, &request_fields(Some(""), "/y"));
    let (a, b) = block.split_at(10);
    let mut headers = vec![4, 0, 0, 0, 1, 200];
    headers.extend(a);
    headers.extend([0; 4]);
    input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 5, &headers));
    input.extend(frame(CONTINUATION, END_HEADERS, 5, b));
    let whole = normalize(&input).unwrap();
    assert_eq!(header_blocks(&frames(&whole[24..])).len(), 3);
    for at in 0..=input.len() {
        let mut normalizer = Normalizer::default();
        let mut out = Vec::new();
        normalizer.feed(&input[..at], &mut out).unwrap();
        normalizer.feed(&input[at..], &mut out).unwrap();
        assert_eq!(out, whole, "split at {at}");
    }
    let mut normalizer = Normalizer::default();
    let mut out = Vec::new();
    for byte in &input {
        normalizer
            .feed(std::slice::from_ref(byte), &mut out)
            .unwrap();
    }
    assert_eq!(out, whole, "one byte at a time");
}

#[test]
fn continuation_padding_and_priority_are_understood() {
    let mut encoder = Encoder::new();
    let fields = request_fields(
        Some("%2Frun%2Fx.sock"),
        "/runtime.v1.ImageService/ImageStatus",
    );
    let block = encode(&mut encoder, &fields);
    let (a, rest) = block.split_at(7);
    let (b, c) = rest.split_at(20);
    let priority = [0x80, 0, 0, 3, 41]; // exclusive, depends on stream 3, weight 42
    let mut payload = vec![5];
    payload.extend(priority);
    payload.extend(a);
    payload.extend([0; 5]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
    input.extend(frame(CONTINUATION, 0, 1, b));
    input.extend(frame(CONTINUATION, 0, 1, &[]));
    input.extend(frame(CONTINUATION, END_HEADERS, 1, c));
    let out = normalize(&input).unwrap();
    let sent = frames(&out[24..]);
    assert_eq!(sent.len(), 1, "one HEADERS frame: {sent:?}");
    assert_eq!(sent[0].flags, PRIORITY | END_STREAM | END_HEADERS);
    assert_eq!(sent[0].payload[..5], priority);
    assert_eq!(
        header_blocks(&sent),
        [with_authority(&fields, b"localhost")]
    );
}

#[test]
fn a_block_larger_than_a_frame_is_sent_as_continuation_frames() {
    let mut fields = request_fields(Some("%2Frun%2Fx.sock"), "/p");
    fields.push((b"x-big".to_vec(), vec![b'v'; 40_000]));
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &fields);
    let mut input = PREFACE.to_vec();
    let mut chunks = block.chunks(MAX_FRAME_SIZE as usize).peekable();
    let mut frame_type = HEADERS;
    while let Some(chunk) = chunks.next() {
        let flags = if chunks.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        input.extend(frame(frame_type, flags, 1, chunk));
        frame_type = CONTINUATION;
    }
    let out = normalize(&input).unwrap();
    let sent = frames(&out[24..]);
    let types: Vec<(u8, u8)> = sent.iter().map(|f| (f.frame_type, f.flags)).collect();
    assert_eq!(
        types,
        [(HEADERS, 0), (CONTINUATION, 0), (CONTINUATION, END_HEADERS)]
    );
    assert_eq!(sent[0].payload.len(), MAX_FRAME_SIZE as usize);
    assert_eq!(
        header_blocks(&sent),
        [with_authority(&fields, b"localhost")]
    );
}

#[test]
fn a_frame_above_the_max_frame_size_is_a_connection_error() {
    let mut input = PREFACE.to_vec();
    input.extend(frame(0x0, 0, 1, &vec![0; MAX_FRAME_SIZE as usize + 1]));
    assert_eq!(
        normalize(&input[..24 + 9]).unwrap_err(),
        NormalizeError::FrameTooLarge {
            frame_type: 0,
            length: MAX_FRAME_SIZE as usize + 1,
            max: MAX_FRAME_SIZE,
        },
        "refused on its header, nothing buffered"
    );
    let mut exact = PREFACE.to_vec();
    exact.extend(frame(0x0, 0, 1, &vec![0; MAX_FRAME_SIZE as usize]));
    assert_eq!(normalize(&exact).unwrap(), exact);
}

#[test]
fn bad_hpack_is_a_connection_error() {
    let cases: [(&str, Vec<u8>); 4] = [
        ("index out of the tables", vec![0x80 | 70]),
        ("string past the end", vec![0x00, 0x05, b'a']),
        ("table size above 4096", vec![0x3f, 0xe2, 0x1f, 0x82]),
        (
            "integer too long",
            vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01],
        ),
    ];
    for (what, block) in cases {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let err = normalize(&input).unwrap_err();
        assert!(
            matches!(err, NormalizeError::Hpack { stream: 1, .. }),
            "{what}: {err:?}"
        );
        let io: io::Error = err.into();
        assert_eq!(io.kind(), io::ErrorKind::InvalidData);
    }
}

#[test]
fn frame_sequences_http2_forbids_are_connection_errors() {
    let mut encoder = Encoder::new();
    let block = encode(&mut encoder, &request_fields(Some("localhost"), "/x"));
    let open = frame(HEADERS, 0, 1, &block[..3]);
    let cases: [(Vec<u8>, NormalizeError); 6] = [
        (
            [open.clone(), frame(0x0, 0, 1, b"x")].concat(),
            NormalizeError::ExpectedContinuation {
                frame_type: 0,
                stream: 1,
            },
        ),
        (
            [
                open.clone(),
                frame(CONTINUATION, END_HEADERS, 3, &block[3..]),
            ]
            .concat(),
            NormalizeError::ExpectedContinuation {
                frame_type: CONTINUATION,
                stream: 3,
            },
        ),
        (
            frame(CONTINUATION, END_HEADERS, 1, &block),
            NormalizeError::UnexpectedContinuation { stream: 1 },
        ),
        (
            frame(PUSH_PROMISE, END_HEADERS, 1, &[0, 0, 0, 2, 0x82]),
            NormalizeError::PushPromise { stream: 1 },
        ),
        (
            frame(HEADERS, PADDED | END_HEADERS, 1, &[4, 0x82, 0, 0]),
            NormalizeError::BadPadding { stream: 1 },
        ),
        (
            frame(HEADERS, PRIORITY | END_HEADERS, 1, &[0, 0, 0]),
            NormalizeError::BadPadding { stream: 1 },
        ),
    ];
    for (frames, expected) in cases {
        let input = [PREFACE.to_vec(), frames].concat();
        assert_eq!(normalize(&input).unwrap_err(), expected);
    }
}

#[test]
fn header_blocks_are_bounded_encoded_and_decoded() {
    // CONTINUATION frames without end.
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, 0, 1, &[0x82]));
    let filler = vec![0x82; MAX_FRAME_SIZE as usize];
    for _ in 0..MAX_HEADER_BLOCK / filler.len() + 1 {
        input.extend(frame(CONTINUATION, 0, 1, &filler));
    }
    assert_eq!(
        normalize(&input).unwrap_err(),
        NormalizeError::HeaderBlockTooLarge {
            stream: 1,
            max: MAX_HEADER_BLOCK,
        }
    );

    // A small block that decodes large: one 4000-byte entry in the table, then
    // referred to again and again.
    let mut block = vec![0x40, 1, b'x'];
    block.extend(loona_hpack::encoder::encode_integer(4000, 7));
    block.extend(vec![b'v'; 4000]);
    block.extend(vec![0x80 | 62; 100]);
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    assert_eq!(
        normalize(&input).unwrap_err(),
        NormalizeError::HeaderBlockTooLarge {
            stream: 1,
            max: MAX_HEADER_BLOCK,
        }
    );
}

#[test]
fn what_is_not_http2_passes_for_h2_to_refuse() {
    let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_eq!(normalize(input).unwrap(), input);
    let mut almost = PREFACE[..10].to_vec();
    almost.extend(b"XX");
    assert_eq!(normalize(&almost).unwrap(), almost);
}

#[test]
fn errors_and_debug_output_never_show_header_values() {
    let canary = "CANARY-authority-token";
    let mut encoder = Encoder::new();
    let mut fields = request_fields(Some("%2Frun%2Fx.sock"), "/x");
    fields.push((
        b"authorization".to_vec(),
        format!("Bearer {canary}").into_bytes(),
    ));
    let block = encode(&mut encoder, &fields);
    let mut normalizer = Normalizer::default();
    let mut out = Vec::new();
    let mut input = PREFACE.to_vec();
    input.extend(frame(HEADERS, END_HEADERS, 1, &block));
    normalizer.feed(&input, &mut out).unwrap();
    // The value reaches h2 ...
    let blocks = header_blocks(&frames(&out[24..]));
    assert!(
        blocks[0]
            .iter()
            .any(|(_, v)| v.ends_with(canary.as_bytes()))
    );
    // ... and nowhere else: a block cut in the middle of the value fails to decode.
    let mut cut = PREFACE.to_vec();
    cut.extend(frame(HEADERS, END_HEADERS, 1, &block[..block.len() - 3]));
    let err = normalize(&cut).unwrap_err();
    for text in [
        err.to_string(),
        format!("{err:?}"),
        format!("{normalizer:?}"),
        format!("{:?}", Normalized::new(())),
    ] {
        assert!(!text.contains(canary), "{text}");
    }
}

mod huffman;
mod hyper_server;
