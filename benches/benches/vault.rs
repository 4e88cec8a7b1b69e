//! Placeholder: the vault bench is written by its owner.

fn main() {}
