//! Placeholder: the policy bench is written by its owner.

fn main() {}
