//! The secret vault: keys, envelope encryption, rotation, signing and trust.
