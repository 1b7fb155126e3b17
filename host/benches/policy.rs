//! Per-evaluation cost of the policy: native rules against the wasmtime host (fresh
//! instance, reused instance, instantiation alone), the module's compile time, and the
//! host's resident memory. Figures and the command are in BENCHMARKS.md.
//!
//! `REGCRED_BENCH_MODULE=path.wasm` benchmarks another build of the module (another
//! opt-level, or after wasm-opt) in place of the embedded one.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use regcred_host::{InstanceStrategy, PolicyModule, PolicyPre};
use regcred_types::{PolicyConfig, RuntimeProfile, SecretManifest};

fn secret(name: &str, server: &str) -> SecretManifest {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "apps"},
        "type": "kubernetes.io/regcredentials",
        "stringData": {
            "serverAddress": server,
            "username": "robot",
            "password": "not-a-real-password-0123456789"
        }
    }))
    .expect("a Secret")
}

/// Three pull secrets, one of which matches the image best.
fn secrets() -> Vec<SecretManifest> {
    vec![
        secret("hub", "docker.io"),
        secret("quay-org", "quay.io/org"),
        secret("quay", "quay.io"),
    ]
}

const IMAGE: &str = "quay.io/org/app:1.0";

fn module() -> PolicyModule {
    match std::env::var_os("REGCRED_BENCH_MODULE") {
        Some(path) => PolicyModule::from_file(path).expect("REGCRED_BENCH_MODULE reads"),
        None => PolicyModule::embedded(),
    }
}

fn policy(strategy: InstanceStrategy, pooling: bool) -> PolicyPre {
    let builder = PolicyPre::builder()
        .module(module())
        .instance_strategy(strategy);
    let builder = if pooling {
        builder
    } else {
        builder.on_demand()
    };
    builder.build().expect("the module loads")
}

fn evaluations(c: &mut Criterion) {
    let config = PolicyConfig::default();
    let one = secret("quay", "quay.io");
    let three = secrets();
    let fresh = policy(InstanceStrategy::Fresh, true);
    let fresh_on_demand = policy(InstanceStrategy::Fresh, false);
    let reused = policy(InstanceStrategy::Reuse, true);
    let validate_json =
        serde_json::to_vec(&serde_json::json!({"op": "validate", "secret": one})).expect("request");

    let mut group = c.benchmark_group("validate");
    group.bench_function("native", |b| {
        b.iter(|| regcred_policy::validate(black_box(&one), &config))
    });
    group.bench_function("native_json", |b| {
        b.iter(|| regcred_policy::evaluate(black_box(&validate_json)))
    });
    group.bench_function("wasm_reused", |b| {
        b.iter(|| reused.validate(black_box(&one), &config).expect("answers"))
    });
    group.bench_function("wasm_reused_json", |b| {
        b.iter(|| {
            reused
                .evaluate_raw(black_box(&validate_json))
                .expect("answers")
        })
    });
    group.bench_function("wasm_fresh_pooling", |b| {
        b.iter(|| fresh.validate(black_box(&one), &config).expect("answers"))
    });
    group.bench_function("wasm_fresh_on_demand", |b| {
        b.iter(|| {
            fresh_on_demand
                .validate(black_box(&one), &config)
                .expect("answers")
        })
    });
    group.finish();

    let resolve_json =
        serde_json::to_vec(&serde_json::json!({"op": "resolve", "image": IMAGE, "secrets": three}))
            .expect("request");
    let mut group = c.benchmark_group("resolve_3_secrets");
    group.bench_function("native_json", |b| {
        b.iter(|| regcred_policy::evaluate(black_box(&resolve_json)))
    });
    group.bench_function("wasm_reused_json", |b| {
        b.iter(|| {
            reused
                .evaluate_raw(black_box(&resolve_json))
                .expect("answers")
        })
    });
    group.bench_function("native", |b| {
        b.iter(|| {
            regcred_policy::resolve(
                black_box(IMAGE),
                &three,
                RuntimeProfile::Containerd,
                &config,
            )
            .expect("resolves")
        })
    });
    group.bench_function("wasm_reused", |b| {
        b.iter(|| {
            reused
                .resolve(
                    black_box(IMAGE),
                    &three,
                    RuntimeProfile::Containerd,
                    &config,
                )
                .expect("answers")
        })
    });
    group.bench_function("wasm_fresh_pooling", |b| {
        b.iter(|| {
            fresh
                .resolve(
                    black_box(IMAGE),
                    &three,
                    RuntimeProfile::Containerd,
                    &config,
                )
                .expect("answers")
        })
    });
    group.finish();

    let mut group = c.benchmark_group("instantiate");
    group.bench_function("pooling", |b| {
        b.iter(|| fresh.check_instance().expect("instantiates"))
    });
    group.bench_function("on_demand", |b| {
        b.iter(|| fresh_on_demand.check_instance().expect("instantiates"))
    });
    group.finish();
}

fn compile(c: &mut Criterion) {
    let mut group = c.benchmark_group("load");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    group.bench_function("compile_and_check", |b| {
        b.iter(|| policy(InstanceStrategy::Fresh, true))
    });
    group.finish();
}

/// Resident memory in KiB, from /proc (Linux only; 0 elsewhere).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn memory(_: &mut Criterion) {
    let before = rss_kib();
    let policy = policy(InstanceStrategy::Fresh, true);
    let loaded = rss_kib();
    let config = PolicyConfig::default();
    let three = secrets();
    for _ in 0..1000 {
        black_box(
            policy
                .resolve(IMAGE, &three, RuntimeProfile::Containerd, &config)
                .expect("answers"),
        );
    }
    let after = rss_kib();
    println!(
        "memory: module {} bytes; RSS before load {before} KiB, after load {loaded} KiB \
         (+{} KiB), after 1000 fresh evaluations {after} KiB (+{} KiB)",
        policy.module().len(),
        loaded.saturating_sub(before),
        after.saturating_sub(before),
    );
}

criterion_group!(benches, memory, evaluations, compile);
criterion_main!(benches);
