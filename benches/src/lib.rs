//! Criterion benches for the Nodus SDK; see the files in `benches/benches/`.
//!
//! Run them all with `cargo bench -p nodus-benches`, or one with
//! `cargo bench -p nodus-benches --bench <name>`. Each bench file's header states what it measures,
//! the last figures and the machine they were taken on.
