//! The file-drop transport: the shared transport suite over a directory, file naming, atomic
//! writes and pruning.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod transport_common;

use std::time::Duration;

use nodus_fabric::VersionVector;
use nodus_sync::transport::{DiffTransport, FileDropTransport};
use transport_common::*;

fn transport(dir: &tempfile::TempDir) -> FileDropTransport {
    FileDropTransport::new(dir.path())
        .unwrap()
        .poll_interval(Duration::from_millis(5))
        .ack_wait(Duration::from_millis(200))
}

#[test]
fn publish_subscribe_round_trip() {
    let d = tempfile::tempdir().unwrap();
    publish_subscribe(&transport(&d));
}

#[test]
fn subscribing_from_a_version_vector_skips_what_is_covered() {
    let d = tempfile::tempdir().unwrap();
    from_version_vector(&transport(&d));
}

#[test]
fn forged_batches_are_refused_and_honest_ones_flow() {
    let d = tempfile::tempdir().unwrap();
    signature_checks(&transport(&d));
}

#[test]
fn redelivery_has_no_second_effect() {
    let d = tempfile::tempdir().unwrap();
    redelivery_dedupe(&transport(&d));
}

#[test]
fn a_gap_waits_and_is_asked_for() {
    let d = tempfile::tempdir().unwrap();
    gap_waits(&transport(&d));
}

#[test]
fn statuses_round_trip() {
    let d = tempfile::tempdir().unwrap();
    status_round_trip(&transport(&d));
}

#[test]
fn files_are_named_by_time_and_id_and_written_whole() {
    let d = tempfile::tempdir().unwrap();
    let t = transport(&d);
    let a = Node::new(1);
    let batch = a.batch(a.append(2));
    t.publish(&tenant(), &batch).unwrap();
    let names: Vec<String> = std::fs::read_dir(t.tenant_path(&tenant()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
    let (time, rest) = names[0].split_once('-').unwrap();
    assert_eq!(time.len(), 16);
    assert_eq!(rest, format!("{}.nlb", batch.id()));
    assert_eq!(
        std::fs::read(t.tenant_path(&tenant()).join(&names[0])).unwrap(),
        batch.as_bytes()
    );
    // A half-written (hidden temporary) file is never delivered.
    std::fs::write(t.tenant_path(&tenant()).join(".tmp-partial"), b"NODUS").unwrap();
    let mut sub = t.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    assert_eq!(next(&mut sub).batch, batch);
    let d2 = sub.next(Duration::from_millis(50)).unwrap();
    assert!(d2.is_none());
    // Pruning removes what is older than asked.
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(t.prune(&tenant(), Duration::from_millis(10)).unwrap(), 1);
    assert_eq!(t.prune(&tenant(), Duration::ZERO).unwrap(), 0);
}

#[test]
fn two_transports_on_one_directory_see_each_other() {
    let d = tempfile::tempdir().unwrap();
    let (ta, tb) = (transport(&d), transport(&d));
    let a = Node::new(1);
    let mut sub = tb.subscribe(&tenant(), "b", &VersionVector::new()).unwrap();
    let batch = a.batch(a.append(1));
    ta.publish(&tenant(), &batch).unwrap();
    assert_eq!(next(&mut sub).batch, batch);
}
