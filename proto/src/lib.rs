//! The Paymesh contracts. The proto files in this crate are the only contract between
//! processes; everything here is generated from them at build time.
//!
//! - [`payments::v1`]: the `Payments` service, its messages and the outbox events.
//! - [`FILE_DESCRIPTOR_SET`]: every file of the contract with its imports and options
//!   (including `google.api.http`), for server reflection and the edge's transcoder.

/// The encoded `google.protobuf.FileDescriptorSet` of every Paymesh proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/paymesh_descriptor.bin"));

/// `google.api` annotation types (`HttpRule`), generated from our copy of their shape.
pub mod google {
    pub mod api {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }
}

/// The payments contract.
pub mod payments {
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/payments.v1.rs"));

        /// Full gRPC name of the payments service, as used by health and reflection.
        pub const SERVICE_NAME: &str = "payments.v1.Payments";
    }
}
