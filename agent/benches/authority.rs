//! What the CRI proxy's `:authority` normalizer costs per request: one ImageStatus call
//! as kubelet (grpc-go) sends it and as grpcio sends it (a socket path to rewrite), on a
//! connection already under way (the client's HPACK table filled, as on kubelet's one
//! long-lived connection), against copying the same bytes. Figures and the command are
//! in BENCHMARKS.md.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use loona_hpack::Encoder;
use regcred_agent::authority::Normalizer;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let length = u32::try_from(payload.len()).expect("small").to_be_bytes();
    let mut out = length[1..].to_vec();
    out.extend([frame_type, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// The headers of a CRI ImageStatus call from `user_agent` with `authority`.
fn headers(authority: &str, user_agent: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/runtime.v1.ImageService/ImageStatus"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("user-agent", user_agent),
        ("te", "trailers"),
        ("grpc-timeout", "119999m"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

/// The connection's start (preface, SETTINGS, a first call that fills the client's
/// table) and then one call (HEADERS referring to the table, DATA with the message).
fn connection(authority: &str, user_agent: &str) -> (Vec<u8>, Vec<u8>) {
    let fields = headers(authority, user_agent);
    let mut encoder = Encoder::new();
    let mut encode = || encoder.encode(fields.iter().map(|(n, v)| (&n[..], &v[..])));
    // ImageStatusRequest{image: {image: "registry.example/team/app:v1"}}, gRPC-framed.
    let image = b"registry.example/team/app:v1";
    let mut message = vec![0, 0, 0, 0, u8::try_from(image.len() + 4).expect("small")];
    message.extend([0x0a, u8::try_from(image.len() + 2).expect("small"), 0x0a]);
    message.push(u8::try_from(image.len()).expect("small"));
    message.extend(image);
    let mut start = PREFACE.to_vec();
    start.extend(frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0]));
    start.extend(frame(0x1, 0x4, 1, &encode()));
    start.extend(frame(0x0, 0x1, 1, &message));
    let mut call = frame(0x1, 0x4, 3, &encode());
    call.extend(frame(0x0, 0x1, 3, &message));
    (start, call)
}

fn per_call(c: &mut Criterion) {
    let mut group = c.benchmark_group("authority");
    group.measurement_time(Duration::from_secs(5));
    for (name, authority, user_agent) in [
        ("kubelet", "localhost", "grpc-go/1.72.2"),
        (
            "grpcio",
            "%2Frun%2Fregcred%2Fcri-proxy.sock",
            "grpc-python/1.85.3 grpc-c/51.0.0 (linux; chttp2)",
        ),
    ] {
        let (start, call) = connection(authority, user_agent);
        group.throughput(Throughput::Elements(1));
        let mut normalizer = Normalizer::default();
        let mut out = Vec::new();
        normalizer.feed(&start, &mut out).expect("a valid start");
        group.bench_function(format!("normalize/{name}"), |b| {
            b.iter(|| {
                out.clear();
                normalizer
                    .feed(black_box(&call), &mut out)
                    .expect("a valid call");
                black_box(out.len())
            });
        });
        group.bench_function(format!("copy/{name}"), |b| {
            b.iter(|| {
                out.clear();
                out.extend_from_slice(black_box(&call));
                black_box(out.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, per_call);
criterion_main!(benches);
