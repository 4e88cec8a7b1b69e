//! The command registry: names resolved to dense ids at registration.
