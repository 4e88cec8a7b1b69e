//! The secret vault (in progress).
