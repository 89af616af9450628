//! What the repair centre's services share (seed 002's appliance repair centre on the mesh):
//!
//! - [`check`]: request fields, refused by name;
//! - [`consume`]: a consumer group member applying each event exactly once;
//! - [`db`]: a service's own database: the pool, and its numbered migrations applied once
//!   under an advisory lock (each service keeps its own migrations table; none reads another's
//!   tables);
//! - [`outbox`]: the transactional outbox the relay publishes (the payments shards' shape);
//! - [`serve`]: one instance of a service: health (SERVING while its database answers),
//!   reflection of the repair contract, mTLS when the mesh has it, the status listener, and a
//!   drain on shutdown.

pub mod check;
pub mod consume;
pub mod db;
pub mod outbox;
pub mod serve;
