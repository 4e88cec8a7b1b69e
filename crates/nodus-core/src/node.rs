//! This instance as a node of the fabric: a signing key in the vault (its key id is the node id)
//! and the incarnation of its event store.

use std::sync::Arc;

use nodus_fabric::{Incarnation, NodeId};
use nodus_security::vault::{KeyAlgorithm, KeyId, KeyScope, SecretVault, VaultError};
use serde::Serialize;

/// The vault purpose of a node's signing key (a system-scoped Ed25519 key).
pub const NODE_KEY_PURPOSE: &str = "node";

/// What peers need to know of this node to trust what it sends: its id, the incarnation of its
/// event store, and the public half of its signing key. Serialises as
/// `{"node_id": "k…", "incarnation": "…", "public_key": "<64 hex digits>"}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// The node id: the vault key id of the node's signing key.
    pub node_id: NodeId,
    /// The incarnation of this node's event store (new for every new store).
    pub incarnation: Incarnation,
    /// The node's Ed25519 public key (for a peer's trust store).
    pub public_key: [u8; 32],
}

impl Serialize for NodeIdentity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("NodeIdentity", 3)?;
        st.serialize_field("node_id", &self.node_id.to_string())?;
        st.serialize_field("incarnation", &self.incarnation.to_string())?;
        st.serialize_field("public_key", &hex::encode(self.public_key))?;
        st.end()
    }
}

/// The system-scoped Ed25519 key of `purpose` (the node's, the audit log's): found in the vault,
/// or made on first use; with its public half.
pub(crate) fn system_signing_key(
    vault: &Arc<dyn SecretVault>,
    purpose: &str,
) -> Result<(KeyId, [u8; 32]), VaultError> {
    let key = match vault.find(&KeyScope::System, purpose)? {
        Some(k) => k,
        None => {
            vault
                .generate(&KeyScope::System, purpose, KeyAlgorithm::Ed25519)?
                .id
        }
    };
    let public = vault.public_key(&key, None)?;
    Ok((key, public))
}
