//! Stable codes for [`FabricError`], as the built-in commands report them.

use super::FabricError;

impl FabricError {
    /// The stable code of this error (`NotFound`, `Conflict`, `Invalid`, …): the variant's name,
    /// what a host matches on and what the audit record's reason holds.
    pub const fn code(&self) -> &'static str {
        match self {
            FabricError::UnknownType { .. } => "UnknownType",
            FabricError::NotFound { .. } => "NotFound",
            FabricError::AlreadyExists { .. } => "AlreadyExists",
            FabricError::Conflict { .. } => "Conflict",
            FabricError::Invalid { .. } => "Invalid",
            FabricError::NotAnObject { .. } => "NotAnObject",
            FabricError::WriteDenied { .. } => "WriteDenied",
            FabricError::BadLabel { .. } => "BadLabel",
            FabricError::InvalidId { .. } => "InvalidId",
            FabricError::NoFieldVault { .. } => "NoFieldVault",
            FabricError::EncryptedWriteDenied { .. } => "EncryptedWriteDenied",
            FabricError::BadMarker { .. } => "BadMarker",
            FabricError::SealFailed { .. } => "SealFailed",
            FabricError::NotEncrypted { .. } => "NotEncrypted",
            FabricError::JobNotFound { .. } => "JobNotFound",
            FabricError::JobNotRunning { .. } => "JobNotRunning",
            FabricError::FilterNotIndexed { .. } => "FilterNotIndexed",
            FabricError::FilterEncrypted { .. } => "FilterEncrypted",
            FabricError::FieldNotReadable { .. } => "FieldNotReadable",
            FabricError::BadQuery { .. } => "BadQuery",
            FabricError::BadCursor { .. } => "BadCursor",
            FabricError::StoredObjectsBreak { .. } => "StoredObjectsBreak",
            FabricError::TenantMismatch => "TenantMismatch",
            FabricError::StaleSubject => "StaleSubject",
            FabricError::Type(_) => "InvalidType",
            FabricError::Log(_) => "StorageError",
            FabricError::Payload(_) => "InvalidPayload",
            FabricError::Corrupt(_) => "Corrupt",
            FabricError::Projector { .. } => "ProjectorFailed",
        }
    }
}
