//! What the repair centre's services share (seed 002's appliance repair centre on the mesh):
//!
//! - [`db`]: a service's own database: the pool, and its numbered migrations applied once
//!   under an advisory lock (each service keeps its own migrations table; none reads another's
//!   tables);
//! - [`serve`]: one instance of a service: health (SERVING while its database answers),
//!   reflection of the repair contract, mTLS when the mesh has it, the status listener, and a
//!   drain on shutdown.

pub mod db;
pub mod serve;
