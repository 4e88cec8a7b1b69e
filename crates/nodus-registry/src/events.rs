//! The event bus: named topics, tenant-scoped delivery, bounded per-subscriber queues.
