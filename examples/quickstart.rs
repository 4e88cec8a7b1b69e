//! Placeholder: the quickstart example is written by its owner.

fn main() {}
