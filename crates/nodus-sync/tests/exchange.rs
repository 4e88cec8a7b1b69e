//! Three nodes exchanging bundles over a random topology, in random order, with duplicates and
//! replays, end with identical high-water marks and identical event sets.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::BTreeSet;
use std::path::PathBuf;

use common::*;
use nodus_fabric::{TenantEventLog, VersionVector};
use nodus_sync::TrustStore;
use proptest::prelude::*;

fn event_set(log: &dyn TenantEventLog) -> BTreeSet<(String, u64, String)> {
    let mut out = BTreeSet::new();
    let mut cursor = None;
    loop {
        let (page, next) = log.read_tenant(&tenant(), cursor, 500).unwrap();
        if page.is_empty() {
            break;
        }
        for e in page {
            out.insert((e.chain().to_string(), e.seq, e.hash.to_string()));
        }
        cursor = next;
    }
    out
}

/// One step of the exchange.
#[derive(Clone, Debug)]
enum Step {
    /// Node appends events.
    Append(usize, u64),
    /// `from` exports to `to` with `to`'s current marks (fresh) or everything (stale ack), and
    /// `to` imports it once or twice.
    Send {
        from: usize,
        to: usize,
        stale: bool,
        twice: bool,
    },
    /// `to` is handed an old bundle file again.
    Replay(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..3, 1u64..8).prop_map(|(n, k)| Step::Append(n, k)),
        (0usize..3, 0usize..3, any::<bool>(), any::<bool>()).prop_filter_map(
            "distinct nodes",
            |(from, to, stale, twice)| (from != to).then_some(Step::Send {
                from,
                to,
                stale,
                twice
            })
        ),
        (0usize..64).prop_map(Step::Replay),
    ]
}

fn run(steps: Vec<Step>) {
    let trust = TrustStore::new()
        .with(signer(1).trusted_key())
        .with(signer(2).trusted_key())
        .with(signer(3).trusted_key());
    let nodes: Vec<Receiver> = (1..=3).map(|n| Receiver::new(n, trust.clone())).collect();
    let signers: Vec<_> = (1..=3).map(signer).collect();
    let files = tempfile::tempdir().unwrap();
    let mut sent: Vec<(usize, PathBuf)> = Vec::new();
    let mut n = 0;
    let mut send =
        |from: usize, to: usize, stale: bool, twice: bool, sent: &mut Vec<(usize, PathBuf)>| {
            let since = if stale {
                VersionVector::new()
            } else {
                nodes[to].log.high_water_marks(&tenant()).unwrap()
            };
            n += 1;
            let (path, _) = export_to(
                &nodes[from].log,
                &since,
                &signers[from],
                &[nodes[to].recipient()],
                files.path(),
                &format!("{n}.noduspkg"),
            );
            let staged = nodes[to]
                .importer
                .stage(&nodes[to].log, &tenant(), &path)
                .unwrap();
            if twice {
                nodes[to]
                    .importer
                    .stage(&nodes[to].log, &tenant(), &path)
                    .unwrap();
            }
            nodes[to]
                .importer
                .activate(
                    &nodes[to].log,
                    &staged.summary.bundle_id,
                    &nodus_sync::AdmitAll,
                )
                .unwrap();
            if twice {
                let r = nodes[to]
                    .importer
                    .stage(&nodes[to].log, &tenant(), &path)
                    .unwrap_err();
                assert_eq!(r.code(), "replayed");
            }
            sent.push((to, path));
        };
    for s in steps {
        match s {
            Step::Append(i, k) => append(&nodes[i].log, k),
            Step::Send {
                from,
                to,
                stale,
                twice,
            } => send(from, to, stale, twice, &mut sent),
            Step::Replay(i) => {
                if let Some((to, path)) = sent.get(i % sent.len().max(1)).cloned() {
                    let r = nodes[to]
                        .importer
                        .stage(&nodes[to].log, &tenant(), &path)
                        .unwrap_err();
                    assert_eq!(r.code(), "replayed");
                }
            }
        }
    }
    // Converge: a ring twice, so every chain reaches every node.
    for _ in 0..2 {
        for (from, to) in [(0, 1), (1, 2), (2, 0)] {
            send(from, to, false, false, &mut sent);
        }
    }
    let marks: Vec<_> = nodes
        .iter()
        .map(|r| r.log.high_water_marks(&tenant()).unwrap())
        .collect();
    assert_eq!(marks[0], marks[1]);
    assert_eq!(marks[1], marks[2]);
    let sets: Vec<_> = nodes.iter().map(|r| event_set(&r.log)).collect();
    assert_eq!(sets[0], sets[1]);
    assert_eq!(sets[1], sets[2]);
    for r in &nodes {
        assert!(r.log.pending(&tenant()).unwrap().is_empty());
        assert!(r.log.verify(&tenant()).unwrap().is_valid());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn three_nodes_converge(steps in proptest::collection::vec(step(), 1..24)) {
        run(steps);
    }
}
