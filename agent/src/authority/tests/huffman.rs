//! Huffman-coded header strings: decoded once, with the same result as the decoder's.

use super::*;

/// RFC 7541 C.4: three requests on one connection, every string Huffman-coded, the
/// second and third referring to entries the first added. Each block with its strings
/// decoded reads, with the client's dynamic table, as the block itself does.
fn rfc7541_huffman_requests() -> [Vec<u8>; 3] {
    let hex = |s: &str| {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>()
    };
    [
        hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"),
        hex("8286 84be 5886 a8eb 1064 9cbf"),
        hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf"),
    ]
}

#[test]
fn huffman_strings_are_decoded_once_with_the_same_result() {
    let mut original = Decoder::new();
    let mut plain = Decoder::new();
    let mut huffman = HuffmanDecoder::new();
    let mut out = Vec::new();
    for block in rfc7541_huffman_requests() {
        assert!(without_huffman(&block, &mut huffman, &mut out));
        assert!(out.len() > block.len(), "decoded strings are longer");
        assert_eq!(
            plain.decode(&out).unwrap(),
            original.decode(&block).unwrap()
        );
    }
}

#[test]
fn blocks_without_huffman_or_not_well_formed_are_left_to_the_decoder() {
    let mut huffman = HuffmanDecoder::new();
    let mut out = Vec::new();
    let plain = encode(
        &mut Encoder::new(),
        &request_fields(Some("localhost"), "/x"),
    );
    assert!(!without_huffman(&plain, &mut huffman, &mut out));
    let [first, ..] = rfc7541_huffman_requests();
    for cut in 1..first.len() {
        // Cut inside a string: not well formed; at a representation's end, what is left
        // reads as the decoder reads the cut block.
        let cut = &first[..cut];
        if without_huffman(cut, &mut huffman, &mut out) {
            assert_eq!(
                Decoder::new().decode(&out).ok(),
                Decoder::new().decode(cut).ok()
            );
        }
    }
    // A Huffman string whose padding is not EOS's prefix, and a length past the end.
    assert!(!without_huffman(
        &[0x00, 0x81, 0x00, 0x81, 0x00],
        &mut huffman,
        &mut out
    ));
    assert!(!without_huffman(
        &[0x00, 0x85, 0xf1],
        &mut huffman,
        &mut out
    ));
    for block in [vec![0x00, 0x81, 0x00, 0x81, 0x00], vec![0x00, 0x85, 0xf1]] {
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let err = normalize(&input).unwrap_err();
        assert!(
            matches!(err, NormalizeError::Hpack { stream: 1, .. }),
            "{err:?}"
        );
    }
}

#[test]
fn huffman_coded_requests_pass_the_normalizer() {
    let mut input = PREFACE.to_vec();
    input.extend(settings());
    for (i, block) in rfc7541_huffman_requests().iter().enumerate() {
        let stream = 1 + 2 * u32::try_from(i).unwrap();
        input.extend(frame(HEADERS, END_HEADERS, stream, block));
    }
    let out = normalize(&input).unwrap();
    let blocks = header_blocks(&frames(&out[PREFACE.len()..]));
    let mut client = Decoder::new();
    let expected: Vec<Fields> = rfc7541_huffman_requests()
        .iter()
        .map(|block| client.decode(block).unwrap())
        .collect();
    assert_eq!(blocks, expected);
    assert_eq!(
        authority_of(&blocks[2]),
        Some(&b"www.example.com"[..]),
        "a valid authority is kept"
    );
}
