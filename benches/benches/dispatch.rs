//! Placeholder: the dispatch bench is written by its owner.

fn main() {}
