//! Header blocks on the wire: a HEADERS frame's fragment read (padding and priority
//! understood), a block written back as HEADERS and CONTINUATION frames, and the HPACK
//! helpers that take Huffman coding out of a block before it is decoded.

use loona_hpack::huffman::HuffmanDecoder;

use super::{
    CONTINUATION, END_HEADERS, END_STREAM, FrameHead, HEADERS, NormalizeError, OpenBlock, PADDED,
    PRIORITY, write_frame_head,
};

/// Writes `block` to `out` with every Huffman-coded string literal replaced by its
/// decoded octets (RFC 7541 5.2, H bit 0), which decode to the same header list with the
/// same dynamic table; returns false, and leaves `out` to be ignored, when the block
/// has no Huffman string or is not well formed (the HPACK decoder then reads the block as
/// it came and reports what is wrong with it).
pub(super) fn without_huffman(
    block: &[u8],
    huffman: &mut HuffmanDecoder,
    out: &mut Vec<u8>,
) -> bool {
    out.clear();
    let mut copied = 0;
    let mut at = 0;
    let mut any = false;
    while at < block.len() {
        let first = block[at];
        // The representation's prefix size and whether a literal name and a value follow.
        let (prefix, strings) = if first & 0x80 != 0 {
            (7, false)
        } else if first & 0x40 != 0 {
            (6, true)
        } else if first & 0x20 != 0 {
            (5, false)
        } else {
            (4, true)
        };
        let Some((index, used)) = hpack_integer(&block[at..], prefix) else {
            return false;
        };
        at += used;
        if !strings {
            continue;
        }
        for _ in 0..(if index == 0 { 2 } else { 1 }) {
            let Some(&head) = block.get(at) else {
                return false;
            };
            let Some((length, used)) = hpack_integer(&block[at..], 7) else {
                return false;
            };
            let Some(octets) = at
                .checked_add(used)
                .and_then(|start| block.get(start..start.checked_add(length)?))
            else {
                return false;
            };
            if head & 0x80 != 0 {
                let Ok(decoded) = huffman.decode(octets) else {
                    return false;
                };
                out.extend_from_slice(&block[copied..at]);
                if loona_hpack::encoder::encode_integer_into(decoded.len(), 7, 0, out).is_err() {
                    return false;
                }
                out.extend_from_slice(&decoded);
                copied = at + used + length;
                any = true;
            }
            at += used + length;
        }
    }
    out.extend_from_slice(&block[copied..]);
    any
}

/// An HPACK integer with a `prefix`-bit prefix at the start of `bytes` (RFC 7541 5.1):
/// its value and how many bytes it took, or `None` when it is cut short or larger than
/// any length a header block within the limits can hold.
fn hpack_integer(bytes: &[u8], prefix: u8) -> Option<(usize, usize)> {
    let mask = (1usize << prefix) - 1;
    let mut value = usize::from(*bytes.first()?) & mask;
    if value < mask {
        return Some((value, 1));
    }
    for (i, &byte) in bytes.iter().enumerate().skip(1).take(4) {
        value += usize::from(byte & 0x7f) << (7 * (i - 1));
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
    }
    None
}

/// The header block fragment of a HEADERS frame, without padding and priority.
pub(super) fn headers_fragment(
    head: FrameHead,
    payload: &[u8],
) -> Result<OpenBlock, NormalizeError> {
    let bad = NormalizeError::BadPadding {
        stream: head.stream,
    };
    let mut rest = payload;
    let mut padding = 0;
    if head.flags & PADDED != 0 {
        let (&length, after) = rest.split_first().ok_or_else(|| bad.clone())?;
        padding = usize::from(length);
        rest = after;
    }
    let mut priority = None;
    if head.flags & PRIORITY != 0 {
        let (fields, after) = rest.split_first_chunk::<5>().ok_or_else(|| bad.clone())?;
        priority = Some(*fields);
        rest = after;
    }
    // RFC 9113 6.2: padding as long as the rest of the payload or longer is an error.
    let Some(end) = rest.len().checked_sub(padding) else {
        return Err(bad);
    };
    Ok(OpenBlock {
        stream: head.stream,
        flags: head.flags & (END_STREAM | PRIORITY),
        priority,
        fragment: rest[..end].to_vec(),
    })
}

/// HEADERS with as much of `encoded` as fits, then CONTINUATION frames.
pub(super) fn write_block(
    out: &mut Vec<u8>,
    block: &OpenBlock,
    encoded: &[u8],
    max_frame_size: usize,
) {
    let priority: &[u8] = block.priority.as_ref().map_or(&[], |p| &p[..]);
    let first = encoded.len().min(max_frame_size - priority.len());
    let (head, mut rest) = encoded.split_at(first);
    let mut flags = block.flags;
    if rest.is_empty() {
        flags |= END_HEADERS;
    }
    write_frame_head(
        out,
        priority.len() + head.len(),
        HEADERS,
        flags,
        block.stream,
    );
    out.extend_from_slice(priority);
    out.extend_from_slice(head);
    while !rest.is_empty() {
        let (chunk, after) = rest.split_at(rest.len().min(max_frame_size));
        rest = after;
        let flags = if rest.is_empty() { END_HEADERS } else { 0 };
        write_frame_head(out, chunk.len(), CONTINUATION, flags, block.stream);
        out.extend_from_slice(chunk);
    }
}
