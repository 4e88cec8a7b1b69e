//! Round trip through the public API: three instances write objects and edit a shared CRDT
//! document concurrently, and exchange sealed bundles in a random topology and order (full or
//! `since_last` exports, a bundle offered twice, old bundles replayed) until quiet. Every node
//! ends with identical objects, documents and document histories, every chain verifies, and every
//! replay is refused as `replayed`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::Path;

use nodus_core::{Context, MasterKey, Nodus, PolicySources, TenantId};
use proptest::prelude::*;
use serde_json::{Value, json};

const SYSTEM: &str = "[audit]\ndurability = \"normal\"\n";
const TENANT: &str = r#"
[rbac.roles]
admin = ["*"]

[rate.limits]
default = { rate = 100000, per = "1s", burst = 100000 }
admin = { rate = 100000, per = "1s", burst = 100000 }
"#;

fn tenant() -> TenantId {
    TenantId::new("acme").unwrap()
}

struct Node {
    nodus: Nodus,
    ctx: Context,
}

impl Node {
    fn open(dir: &Path, seed: u8) -> Node {
        let nodus = Nodus::builder()
            .data_dir(dir)
            .master_key(MasterKey::from_bytes([seed; 32]))
            .policy(
                PolicySources::new()
                    .with_system("system.toml", SYSTEM)
                    .with_tenant(tenant(), "tenants/acme.toml", TENANT),
            )
            .build()
            .unwrap();
        let s = nodus
            .subject(
                &tenant(),
                nodus_core::ActorId::new(format!("writer-{seed}")).unwrap(),
                &["admin"],
                "UNCLASSIFIED",
            )
            .unwrap();
        let ctx = nodus.context(&tenant(), s, "s");
        Node { nodus, ctx }
    }

    fn call(&self, cmd: &str, input: Value) -> Result<Value, String> {
        self.nodus
            .dispatch(&self.ctx, cmd, &input.to_string())
            .map_err(|e| format!("{}: {e}", e.code()))
    }

    fn ok(&self, cmd: &str, input: Value) -> Value {
        self.call(cmd, input)
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    fn inbox(&self) -> std::path::PathBuf {
        self.nodus.sync().dir().unwrap().join("inbox")
    }

    fn outbox(&self) -> std::path::PathBuf {
        self.nodus.sync().dir().unwrap().join("outbox")
    }

    /// What must be identical on every node once they are quiet.
    fn state(&self) -> Value {
        json!({
            "objects": self.ok("objects.list", json!({"type_name": "case", "filter": [], "sort": null, "limit": 1000, "cursor": null})),
            "docs": self.ok("docs.list", json!({})),
            "shared": self.ok("docs.get", json!({"id": "shared"})),
            "history": self.ok("docs.history", json!({"id": "shared"})),
        })
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// Node creates an object.
    Create(usize),
    /// Node updates the shared object (at the version it sees).
    Update(usize),
    /// Node edits the shared document (a splice, or a batch of two).
    Edit(usize, bool),
    /// `from` exports to `to`, which stages (twice when asked) and activates it (and, when
    /// asked, stages it once more: refused as a replay).
    Send {
        from: usize,
        to: usize,
        since_last: bool,
        twice: bool,
    },
    /// An old bundle is handed to its receiver again.
    Replay(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0usize..3).prop_map(Step::Create),
        (0usize..3).prop_map(Step::Update),
        (0usize..3, any::<bool>()).prop_map(|(n, b)| Step::Edit(n, b)),
        (0usize..3, 0usize..3, any::<bool>(), any::<bool>()).prop_filter_map(
            "distinct nodes",
            |(from, to, since_last, twice)| (from != to).then_some(Step::Send {
                from,
                to,
                since_last,
                twice
            })
        ),
        (0usize..32).prop_map(Step::Replay),
    ]
}

struct World {
    _dir: tempfile::TempDir,
    nodes: Vec<Node>,
    keys: Vec<String>,
    /// (receiver, file name) of every bundle delivered.
    sent: Vec<(usize, String)>,
    writes: usize,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let nodes: Vec<Node> = (0..3u8)
            .map(|i| Node::open(&dir.path().join(format!("n{i}")), i + 1))
            .collect();
        let keys: Vec<_> = nodes
            .iter()
            .map(|n| n.nodus.sync().keys().unwrap())
            .collect();
        for (i, n) in nodes.iter().enumerate() {
            for (j, k) in keys.iter().enumerate() {
                if i != j {
                    n.nodus.sync().trust_peer(k, &[tenant()]).unwrap();
                }
            }
        }
        let keys = keys.into_iter().map(|k| k.key_id).collect();
        let mut w = World {
            _dir: dir,
            nodes,
            keys,
            sent: Vec::new(),
            writes: 0,
        };
        // Node 0 defines the type and creates the shared object and document; everyone gets them.
        w.nodes[0].ok(
            "types.define",
            json!({"name": "case", "schema": {"type": "object", "properties": {
                "title": {"type": "string"}, "by": {"type": "string"}}}}),
        );
        w.nodes[0].ok(
            "objects.create",
            json!({"type": "case", "id": "shared", "data": {"title": "start"}}),
        );
        w.nodes[0].ok(
            "docs.create",
            json!({"type": "note", "id": "shared", "content": {"text": "", "items": []}}),
        );
        w.send(0, 1, false, false);
        w.send(0, 2, false, false);
        w
    }

    fn send(&mut self, from: usize, to: usize, since_last: bool, twice: bool) {
        let out = self.nodes[from].ok(
            "sync.export",
            json!({"to": [self.keys[to]], "since_last": since_last}),
        );
        let file = out["file"].as_str().unwrap().to_owned();
        std::fs::copy(
            self.nodes[from].outbox().join(&file),
            self.nodes[to].inbox().join(&file),
        )
        .unwrap();
        let staged = self.nodes[to].ok("sync.stage", json!({"file": file}));
        if twice {
            // Staging is idempotent until activation.
            let again = self.nodes[to].ok("sync.stage", json!({"file": file}));
            assert_eq!(again["bundle_id"], staged["bundle_id"]);
        }
        let report = self.nodes[to].ok("sync.activate", json!({"bundle_id": staged["bundle_id"]}));
        assert_eq!(report["quarantined"], json!({}), "{report}");
        assert_eq!(report["pending"], 0, "{report}");
        if twice {
            // Once activated, the same bundle is a replay.
            let err = self.nodes[to]
                .call("sync.stage", json!({"file": file}))
                .unwrap_err();
            assert!(err.contains("`replayed`"), "{err}");
        }
        self.sent.push((to, file));
    }

    fn apply(&mut self, s: Step) {
        match s {
            Step::Create(i) => {
                self.writes += 1;
                self.nodes[i].ok(
                    "objects.create",
                    json!({"type": "case", "data": {"title": format!("w{}", self.writes), "by": format!("n{i}")}}),
                );
            }
            Step::Update(i) => {
                self.writes += 1;
                let cur = self.nodes[i].ok("objects.get", json!({"type": "case", "id": "shared"}));
                self.nodes[i].ok(
                    "objects.update",
                    json!({"type": "case", "id": "shared", "expected_version": cur["version"],
                           "data": {"title": format!("w{}", self.writes), "by": format!("n{i}")}}),
                );
            }
            Step::Edit(i, batch) => {
                self.writes += 1;
                let splice = json!({"op": "splice_text", "path": ["text"], "pos": 0,
                                    "text": format!("[n{i}w{}]", self.writes)});
                let input = if batch {
                    json!({"id": "shared", "batch": [[splice],
                        [{"op": "insert", "path": ["items", 0], "value": format!("n{i}")}]]})
                } else {
                    json!({"id": "shared", "ops": [splice]})
                };
                self.nodes[i].ok("docs.change", input);
            }
            Step::Send {
                from,
                to,
                since_last,
                twice,
            } => self.send(from, to, since_last, twice),
            Step::Replay(k) => {
                if self.sent.is_empty() {
                    return;
                }
                let (to, file) = self.sent[k % self.sent.len()].clone();
                let again = format!("again-{k}-{file}");
                std::fs::copy(
                    self.nodes[to].inbox().join(&file),
                    self.nodes[to].inbox().join(&again),
                )
                .unwrap();
                let err = self.nodes[to]
                    .call("sync.stage", json!({"file": again}))
                    .unwrap_err();
                assert!(err.contains("`replayed`"), "{err}");
            }
        }
    }
}

fn run(steps: Vec<Step>) {
    let mut w = World::new();
    for s in steps {
        w.apply(s);
    }
    // Quiet: a ring twice carries every chain to every node.
    for _ in 0..2 {
        for (from, to) in [(0, 1), (1, 2), (2, 0)] {
            w.send(from, to, false, false);
        }
    }
    let states: Vec<Value> = w.nodes.iter().map(Node::state).collect();
    assert_eq!(states[0], states[1]);
    assert_eq!(states[1], states[2]);
    for n in &w.nodes {
        assert!(n.nodus.verify_events(&tenant()).unwrap().is_valid());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn three_nodes_end_with_identical_objects_and_documents(
        steps in proptest::collection::vec(step(), 1..20)
    ) {
        run(steps);
    }
}

/// A fixed sequence with every kind of step, so the default run always covers concurrent edits
/// of the same document on all three nodes.
#[test]
fn concurrent_edits_on_three_nodes_converge() {
    run(vec![
        Step::Edit(0, false),
        Step::Edit(1, true),
        Step::Edit(2, false),
        Step::Update(1),
        Step::Update(2),
        Step::Create(0),
        Step::Send {
            from: 1,
            to: 2,
            since_last: false,
            twice: true,
        },
        Step::Edit(2, true),
        Step::Send {
            from: 2,
            to: 0,
            since_last: true,
            twice: false,
        },
        Step::Replay(0),
        Step::Edit(0, true),
    ]);
}
