//! The tamper-evident audit log: an RFC 6962 Merkle tree with signed checkpoints.
