//! The vault: envelope seal/open at 32 B, 1 KiB and 64 KiB, Ed25519 sign and verify.
//!
//! Seal includes everything a caller pays: key lookup, a fresh random 192-bit nonce, header and
//! associated data (with a `{tenant, table, entity, field}` context), XChaCha20-Poly1305, usage count.
//!
//! Targets (issue 3): seal 32 B median ≤ 2 µs (stretch ≤ 0.7 µs); 64 KiB throughput ≥ 1 GB/s;
//! verify ≤ 60 µs.
//!
//! Last figures (2026-11-25, `cargo bench -p nodus-benches --bench vault -- --measurement-time 3`,
//! 2-core x86_64 KVM guest (Intel Xeon, Sapphire Rapids class, AVX-512), 24 GiB; medians):
//!
//! | bench | median | throughput | target |
//! |---|---|---|---|
//! | `envelope/32B/seal` | 1.53 µs | 20 MiB/s | ≤ 2 µs ✔ (stretch ≤ 0.7 µs ✘) |
//! | `envelope/32B/open` | 1.48 µs | 20.7 MiB/s | |
//! | `envelope/1024B/seal` | 2.13 µs | 458 MiB/s | |
//! | `envelope/1024B/open` | 2.29 µs | 427 MiB/s | |
//! | `envelope/65536B/seal` | 48.8 µs | 1.25 GiB/s (1.34 GB/s) | ≥ 1 GB/s ✔ |
//! | `envelope/65536B/open` | 57.6 µs | 1.06 GiB/s (1.14 GB/s) | |
//! | `ed25519/sign` | 13.3 µs | | |
//! | `ed25519/verify` (strict) | 38.4 µs | | ≤ 60 µs ✔ |
//!
//! A seal encrypts in place behind the header (one buffer). Most of a 32-byte seal is the AEAD's
//! fixed cost: HChaCha20 subkey derivation and the AVX2 Poly1305 backend's key setup and
//! finalisation (~40% of the time in a profile), which favour long messages.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nodus_policy::TenantId;
use nodus_security::vault::{
    EnvelopeContext, KeyAlgorithm, KeyScope, MasterKey, SecretVault, SoftVault,
};

fn bench(c: &mut Criterion) {
    let v = SoftVault::in_memory(MasterKey::from_bytes([1; 32])).unwrap();
    let t = TenantId::new("acme").unwrap();
    let k = v
        .generate(
            &KeyScope::Tenant(t.clone()),
            "fields",
            KeyAlgorithm::XChaCha20Poly1305,
        )
        .unwrap()
        .id;
    let ctx = EnvelopeContext {
        tenant: Some(&t),
        table: "notes",
        entity_id: "n-000001",
        field: "body",
    };
    for size in [32usize, 1024, 65536] {
        let pt = vec![0x42u8; size];
        let ct = v.seal(&k, &pt, &ctx).unwrap();
        let mut g = c.benchmark_group(format!("envelope/{size}B"));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function("seal", |b| {
            b.iter(|| v.seal(&k, black_box(&pt), &ctx).unwrap())
        });
        g.bench_function("open", |b| b.iter(|| v.open(black_box(&ct), &ctx).unwrap()));
        g.finish();
    }
    let s = v
        .generate(&KeyScope::System, "signing", KeyAlgorithm::Ed25519)
        .unwrap()
        .id;
    let msg = b"nodus.local/audit\n1024\nZFX3YlGFZsPpl/dlXuFLNH2XZ9LvZbwho70S7pF+B4I=\n";
    let sig = v.sign(&s, msg).unwrap();
    c.bench_function("ed25519/sign", |b| {
        b.iter(|| v.sign(&s, black_box(msg)).unwrap())
    });
    c.bench_function("ed25519/verify", |b| {
        b.iter(|| v.verify(&s, 1, black_box(msg), &sig).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
