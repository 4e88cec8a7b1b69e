//! Placeholder: the audit bench is written by its owner.

fn main() {}
