//! rtsync wire protocol v1 (docs/protocol.md is the authority): every frame as a
//! serde type, shaped like the seed's TypeScript interfaces, camelCase JSON, UTC
//! ISO-8601 millisecond timestamps. No tokio, no I/O — the server, the client state
//! machines, the simulator and live mode all share these types.
//!
//! Module map:
//! - [`envelope`] — `{type, payload, seq?}`; [`ClientMsg`] / [`ServerMsg`], one enum a
//!   direction; typed [`DecodeError`]s that map to `ERROR` codes.
//! - [`event`] — the seed's `RealtimeEvent`, event types, mutation payloads and opIds.
//! - [`entity`] — entities, conflict strategies, `ConflictResolution`, `ACK`.
//! - [`presence`] — `UserPresence`, `CollaborationCursor`, `USER_ACTION`.
//! - [`messages`] — `CONNECTED`, `RECENT_EVENTS`, `RESUME`, heartbeats, `ERROR`, close codes.
//! - [`perf`] — the seed's `PerformanceMetrics` (analytics endpoint).
//! - [`sync`] — `CrossTabMessage`, `StateSnapshot` (client side).
//! - [`auth`] — JWT HS256 mint and verify.
//! - [`sse`] — Server-Sent Events writer and incremental parser.
//! - [`time`] — [`Timestamp`].

#![warn(missing_docs)]

pub mod auth;
pub mod entity;
pub mod envelope;
pub mod event;
pub mod messages;
pub mod perf;
pub mod presence;
pub mod sse;
pub mod sync;
pub mod time;

pub use entity::{Ack, ConflictDetected, ConflictItem, ConflictResolution, Entity, Strategy};
pub use envelope::{ClientMsg, DecodeError, ServerMsg, encode_frame};
pub use event::{
    ClientEvent, EntityKind, EventType, MutationError, MutationPayload, OpId, RealtimeEvent,
};
pub use messages::{
    Connected, ErrorCode, ErrorPayload, EventFrame, EventFrameType, Heartbeat, RecentEvents,
    Resume, close,
};
pub use perf::PerformanceMetrics;
pub use presence::{
    CollaborationCursor, Device, DeviceType, PresenceChange, PresenceDiff, PresenceStatus,
    UserAction, UserPresence,
};
pub use sync::{CrossTabMessage, SnapshotStores, StateSnapshot};
pub use time::Timestamp;
