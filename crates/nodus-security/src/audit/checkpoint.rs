//! Checkpoints as the log hands them out.

use serde::{Deserialize, Serialize};

use super::note::{parse_checkpoint_body, split_note};

/// A C2SP tlog checkpoint body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The log origin.
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The tree root.
    #[serde(with = "b64_hash")]
    pub root: [u8; 32],
}

/// A checkpoint with its full signed note.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedCheckpoint {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The signed note text (body, blank line, signature line).
    pub note: String,
}

mod b64_hash {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD as B64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(h))
    }
    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let v = B64.decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom("a root is 32 bytes"))
    }
}

impl SignedCheckpoint {
    /// Parses a stored note into a checkpoint (strict grammar, signature *not* checked).
    pub(crate) fn from_note(note: String) -> Option<Self> {
        let (text, _) = split_note(&note).ok()?;
        let (origin, size, root) = parse_checkpoint_body(text).ok()?;
        Some(SignedCheckpoint {
            checkpoint: Checkpoint { origin, size, root },
            note,
        })
    }
}
