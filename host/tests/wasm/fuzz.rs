//! Fuzzing on the stable toolchain, bounded, in every `scripts/test`: the properties of
//! the cargo-fuzz targets (`fuzz/`, which need nightly; `regcred_policy::fuzzing`) over
//! inputs mutated from the shared vectors (`tests/vectors`) by a deterministic
//! mutator: bit flips, interesting bytes, deletions, duplications, insertions and splices
//! of two seeds. The policy's entry point is also checked differentially: the embedded
//! module in wasmtime must give the native rules' answer for every tenth input.
//!
//! `REGCRED_FUZZ_ITERATIONS` (default 20000 per property) makes a longer campaign
//! (BENCHMARKS.md has one); `REGCRED_FUZZ_SEED` starts the generator elsewhere. A failure
//! names the iteration and the input, and the same seed and count reproduce it.

use std::collections::BTreeSet;

use regcred_host::{InstanceStrategy, PolicyPre};
use regcred_policy::fuzzing;
use serde_json::Value;

fn iterations() -> u64 {
    std::env::var("REGCRED_FUZZ_ITERATIONS")
        .ok()
        .map_or(20_000, |v| {
            v.parse().expect("REGCRED_FUZZ_ITERATIONS is a number")
        })
}

fn seed() -> u64 {
    std::env::var("REGCRED_FUZZ_SEED")
        .ok()
        .map_or(0x5eed_2026, |v| {
            v.parse().expect("REGCRED_FUZZ_SEED is a number")
        })
}

/// xorshift64*: small, fast and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

/// Bytes that tend to matter to JSON, base64, hosts and references.
const INTERESTING: &[u8] = b"\0\x7f\xff{}[]\":,\\/@.-_=+ \n\tAz09%";

/// One to four mutations of a seed (sometimes spliced with another).
fn mutate(rng: &mut Rng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.below(seeds.len())].clone();
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(7) {
            0 if len > 0 => {
                let at = rng.below(len);
                input[at] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let at = rng.below(len);
                input[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
            2 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(16)).min(len);
                input.drain(at..end);
            }
            3 if len > 0 => {
                let at = rng.below(len);
                let end = (at + 1 + rng.below(32)).min(len);
                let copy = input[at..end].to_vec();
                let to = rng.below(len);
                input.splice(to..to, copy);
            }
            4 => {
                let at = rng.below(len + 1);
                let bytes: Vec<u8> = (0..=rng.below(8))
                    .map(|_| u8::try_from(rng.next() & 0xff).unwrap_or(0))
                    .collect();
                input.splice(at..at, bytes);
            }
            5 => {
                let other = &seeds[rng.below(seeds.len())];
                let cut = rng.below(len + 1);
                let from = rng.below(other.len() + 1);
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            _ => {
                let at = rng.below(len + 1);
                input.insert(at, INTERESTING[rng.below(INTERESTING.len())]);
            }
        }
    }
    input
}

fn show(input: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(input))
}

#[test]
fn evaluate_answers_every_mutated_vector_with_json_natively_and_in_wasmtime_alike() {
    let seeds: Vec<Vec<u8>> = crate::vectors::load_vectors()
        .into_iter()
        .map(|v| v.request)
        .collect();
    let policy = PolicyPre::builder()
        .instance_strategy(InstanceStrategy::Reuse)
        .build()
        .expect("the embedded module loads");
    let mut rng = Rng(seed());
    let (count, mut answers, mut compared) = (iterations(), BTreeSet::new(), 0u64);
    for i in 0..count {
        let input = mutate(&mut rng, &seeds);
        let native = fuzzing::evaluate_answers_a_json_object(&input)
            .unwrap_or_else(|e| panic!("iteration {i}, input {}: {e}", show(&input)));
        let parsed: Value = serde_json::from_slice(&native).expect("checked JSON");
        // Which kind of answer (ok, or the error's code): how much ground was covered.
        answers.insert(match &parsed["error"]["code"] {
            Value::String(code) => code.clone(),
            _ => "ok".to_owned(),
        });
        if i % 10 == 0 {
            let wasm = policy.evaluate_raw(&input).unwrap_or_else(|e| {
                panic!("iteration {i}, input {}: the module: {e}", show(&input))
            });
            let wasm: Value = serde_json::from_slice(&wasm).unwrap_or_else(|e| {
                panic!(
                    "iteration {i}, input {}: the module's answer: {e}",
                    show(&input)
                )
            });
            assert_eq!(
                wasm,
                parsed,
                "iteration {i}, input {}: wasmtime and native disagree",
                show(&input)
            );
            compared += 1;
        }
    }
    println!(
        "evaluate: {count} mutated requests from {} vectors, {compared} compared with wasmtime; \
         answers seen: {answers:?}",
        seeds.len()
    );
    assert!(
        answers.len() > 3,
        "the mutator reaches too few kinds of answer: {answers:?}"
    );
}

/// Every string of every vector (server addresses, image references, hosts, ...).
fn strings(value: &Value, out: &mut Vec<Vec<u8>>) {
    match value {
        Value::String(s) if !s.is_empty() => out.push(s.as_bytes().to_vec()),
        Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

#[test]
fn server_addresses_and_image_references_round_trip_after_mutation() {
    let mut seeds = Vec::new();
    for vector in crate::vectors::load_vectors() {
        if let Ok(request) = serde_json::from_slice::<Value>(&vector.request) {
            strings(&request, &mut seeds);
        }
    }
    seeds.sort();
    seeds.dedup();
    let mut rng = Rng(seed() ^ 0xadd5);
    let (count, mut addresses, mut references) = (iterations(), 0u64, 0u64);
    for i in 0..count {
        let input = mutate(&mut rng, &seeds);
        let text = String::from_utf8_lossy(&input);
        fuzzing::server_address_key_round_trips(&text)
            .unwrap_or_else(|e| panic!("iteration {i}: {e}"));
        fuzzing::image_name_round_trips(&text).unwrap_or_else(|e| panic!("iteration {i}: {e}"));
        addresses += u64::from(regcred_policy::ServerAddress::parse(&text).is_ok());
        references += u64::from(regcred_policy::ImageRef::parse(&text).is_ok());
    }
    println!(
        "parsers: {count} mutated strings from {} seeds; {addresses} parsed as serverAddress, \
         {references} as image references",
        seeds.len()
    );
    assert!(
        addresses > 0 && references > 0,
        "the mutator reaches no valid input"
    );
}
