//! The repair centre's contracts (seed 002's appliance repair centre), generated from
//! `repair/v1/*.proto` at build time:
//!
//! - `RepairRequests`: file, cancel and read a repair request;
//! - `ServiceDesk`: the list of requests, accept (with a part reserved) and complete (part
//!   consumed, payment taken through Paymesh);
//! - `Stock`: parts by SKU, reservations keyed by the request id;
//! - `RepairProgress`: a customer's view of a request, from the events alone;
//! - the events, one topic per kind, keyed by the request id.
//!
//! [`FILE_DESCRIPTOR_SET`] is what the edge is given (as a file named in the mesh config) to
//! route and transcode these services: the edge has no code for them.

pub mod repair {
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/repair.v1.rs"));
    }
}

/// The encoded `google.protobuf.FileDescriptorSet` of the repair protos and their imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/repair_descriptor.bin"));

/// The gRPC service names.
pub mod services {
    pub const REQUESTS: &str = "repair.v1.RepairRequests";
    pub const DESK: &str = "repair.v1.ServiceDesk";
    pub const STOCK: &str = "repair.v1.Stock";
    pub const PROGRESS: &str = "repair.v1.RepairProgress";
}

/// The event topics (the outbox's `event_type`), keyed by the request id.
pub mod topics {
    pub const REQUESTED: &str = "repair.requested";
    pub const CANCELLED: &str = "repair.cancelled";
    pub const ACCEPTED: &str = "repair.accepted";
    pub const OUT_OF_STOCK: &str = "repair.out_of_stock";
    pub const REPAIRED: &str = "repair.repaired";
    pub const PAID: &str = "repair.paid";
    pub const ALL: [&str; 6] = [REQUESTED, CANCELLED, ACCEPTED, OUT_OF_STOCK, REPAIRED, PAID];
}
