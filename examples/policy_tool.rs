//! Placeholder: the policy_tool example is written by its owner.

fn main() {}
