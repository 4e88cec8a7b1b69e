//! Placeholder: the audit_tool example is written by its owner.

fn main() {}
