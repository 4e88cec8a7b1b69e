//! The UI component registry, gated by `ui.allowed_components`.
