//! The wire, in one module: the CRI messages at the byte level and their gRPC frames.
//! The agent adds credentials to, and reads fields out of, the requests kubelet sends
//! without decoding and re-encoding them, so that every field it does not know (a newer
//! CRI's) reaches the runtime byte for byte; all of its protobuf splicing is here, and
//! the frame reader, statuses and response bodies are in [`grpc`]. (The HTTP/2 frames of
//! the `:authority` rewrite are `authority`'s.)

pub(crate) mod grpc;

use bytes::{Bytes, BytesMut};
use prost::Message as _;
use regcred_cri_api::runtime::v1::{AuthConfig as CriAuthConfig, ImageSpec, PullImageRequest};
use regcred_types::AuthConfig;

/// Protobuf tag of `PullImageRequest.auth`: field 2, wire type 2 (length-delimited).
const AUTH_TAG: u8 = (2 << 3) | 2;

/// `message` with an `auth` field (field 2) appended: the original bytes, unchanged, then
/// the new field. Protobuf parsers accept fields in any order, and a message field that
/// appears again merges into the earlier one.
pub(crate) fn with_auth(message: &[u8], auth: &AuthConfig) -> Bytes {
    let encoded = CriAuthConfig {
        username: auth.username.clone(),
        password: auth.password.expose().to_owned(),
        auth: auth.auth.expose().to_owned(),
        server_address: auth.server_address.clone(),
        identity_token: auth.identity_token.expose().to_owned(),
        registry_token: auth.registry_token.expose().to_owned(),
    }
    .encode_to_vec();
    let mut out = BytesMut::with_capacity(message.len() + encoded.len() + 6);
    out.extend_from_slice(message);
    out.extend_from_slice(&[AUTH_TAG]);
    prost::encoding::encode_varint(encoded.len() as u64, &mut out);
    out.extend_from_slice(&encoded);
    out.freeze()
}

/// The raw bytes of the length-delimited field `number` of a protobuf message, every
/// occurrence merged (concatenated) as protobuf merges an embedded message; `None` when
/// the field is absent or the message cannot be walked (truncated, or a group).
pub(crate) fn raw_field(message: &[u8], number: u64) -> Option<Vec<u8>> {
    let mut rest = message;
    let mut found: Option<Vec<u8>> = None;
    while !rest.is_empty() {
        let key = prost::encoding::decode_varint(&mut rest).ok()?;
        let (field, wire) = (key >> 3, key & 7);
        let skip = match wire {
            0 => {
                prost::encoding::decode_varint(&mut rest).ok()?;
                0
            }
            1 => 8,
            2 => {
                let len = usize::try_from(prost::encoding::decode_varint(&mut rest).ok()?).ok()?;
                if field == number {
                    // Repeated occurrences of an embedded message merge, as protobuf
                    // merges them: their bytes concatenated are the merged message.
                    found
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(rest.get(..len)?);
                }
                len
            }
            5 => 4,
            // Groups (3, 4) and wire types that do not exist: not decidable.
            _ => return None,
        };
        rest = rest.get(skip..)?;
    }
    found
}

/// `PullImageRequest` for `image` with `auth` and the sandbox config's original bytes.
pub(crate) fn pull_request(
    image: ImageSpec,
    auth: Option<&AuthConfig>,
    sandbox: Option<&[u8]>,
) -> Bytes {
    let request = PullImageRequest {
        image: Some(image),
        auth: None,
        sandbox_config: None,
    };
    let mut out = BytesMut::from(&request.encode_to_vec()[..]);
    if let Some(sandbox) = sandbox {
        // Field 3, length-delimited: the sandbox config as kubelet sent it.
        out.extend_from_slice(&[(3 << 3) | 2]);
        prost::encoding::encode_varint(sandbox.len() as u64, &mut out);
        out.extend_from_slice(sandbox);
    }
    match auth {
        Some(auth) => with_auth(&out, auth),
        None => out.freeze(),
    }
}

#[cfg(test)]
mod tests {
    use regcred_cri_api::runtime::v1::CreateContainerRequest;

    use super::*;

    #[test]
    fn raw_field_merges_repeated_occurrences_and_gives_up_on_groups() {
        let first = regcred_cri_api::runtime::v1::PodSandboxConfig {
            hostname: "h".into(),
            ..Default::default()
        };
        let second = regcred_cri_api::runtime::v1::PodSandboxConfig {
            metadata: Some(regcred_cri_api::runtime::v1::PodSandboxMetadata {
                name: "p".into(),
                namespace: "ns".into(),
                uid: "u".into(),
                attempt: 0,
            }),
            ..Default::default()
        };
        let mut bytes = CreateContainerRequest {
            sandbox_config: Some(first),
            ..Default::default()
        }
        .encode_to_vec();
        bytes.extend(
            CreateContainerRequest {
                sandbox_config: Some(second),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        // prost merges the two occurrences; the raw bytes say the same.
        let merged = CreateContainerRequest::decode(&bytes[..])
            .unwrap()
            .sandbox_config
            .unwrap();
        let raw = regcred_cri_api::runtime::v1::PodSandboxConfig::decode(
            &raw_field(&bytes, 3).unwrap()[..],
        )
        .unwrap();
        assert_eq!(raw, merged);
        assert_eq!(raw.hostname, "h");
        assert_eq!(raw.metadata.unwrap().name, "p");

        // A group (start-group wire type 3) cannot be walked: nothing to decide with.
        let mut grouped = bytes.clone();
        grouped.extend([(9 << 3) | 3, (9 << 3) | 4]);
        assert_eq!(raw_field(&grouped, 3), None);
    }

    #[test]
    fn raw_field_finds_a_length_delimited_field_and_skips_the_others() {
        let request = CreateContainerRequest {
            pod_sandbox_id: "sb".into(),
            config: None,
            sandbox_config: Some(regcred_cri_api::runtime::v1::PodSandboxConfig {
                hostname: "h".into(),
                ..Default::default()
            }),
        };
        let mut bytes = request.encode_to_vec();
        // An unknown varint field and a fixed64 field after it are skipped.
        bytes.extend([0x20, 0x96, 0x01, 0x29, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(raw_field(&bytes, 1).as_deref(), Some(&b"sb"[..]));
        let sandbox = raw_field(&bytes, 3).unwrap();
        assert_eq!(
            regcred_cri_api::runtime::v1::PodSandboxConfig::decode(&sandbox[..])
                .unwrap()
                .hostname,
            "h"
        );
        assert_eq!(raw_field(&[0x0a, 0x05, b'a'], 1), None, "truncated");
    }

    #[test]
    fn the_pull_request_keeps_the_sandbox_bytes_and_adds_auth() {
        let sandbox = [0x12, 0x01, b'h', 0xfa, 0x06, 0x01, b'x'];
        let auth = regcred_types::AuthConfig {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        };
        let bytes = pull_request(
            ImageSpec {
                image: "r.io/a:v1".into(),
                ..Default::default()
            },
            Some(&auth),
            Some(&sandbox),
        );
        assert_eq!(raw_field(&bytes, 3).as_deref(), Some(&sandbox[..]));
        let decoded = PullImageRequest::decode(&bytes[..]).unwrap();
        assert_eq!(decoded.image.unwrap().image, "r.io/a:v1");
        assert_eq!(decoded.auth.unwrap().password, "p");
        // NRI mode has no sandbox config: none is sent.
        let bare = pull_request(ImageSpec::default(), None, None);
        assert_eq!(raw_field(&bare, 3), None);
    }
}
