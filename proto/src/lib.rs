//! The Paymesh contracts. The proto files in this crate are the only contract between
//! processes; everything here is generated from them at build time.
//!
//! - [`payments::v1`]: the `Payments` service, its messages and the outbox events.
//! - [`query::v1`]: `MerchantQueries`, cross-shard reads from the workers' models.
//! - [`FILE_DESCRIPTOR_SET`]: every file of the contract with its imports and options
//!   (including `google.api.http`), for server reflection and the edge's transcoder.

pub mod codec;

/// The encoded `google.protobuf.FileDescriptorSet` of every Paymesh proto and its imports.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/paymesh_descriptor.bin"));

/// `google.api` annotation types (`HttpRule`), generated from our copy of their shape.
pub mod google {
    pub mod api {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/google.api.rs"));
    }

    /// `google.rpc.Status` and its standard error details.
    pub mod rpc {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/google.rpc.rs"));
    }
}

/// Cross-shard queries over the workers' models.
pub mod query {
    pub mod v1 {
        #![allow(missing_debug_implementations, clippy::all)]
        include!(concat!(env!("OUT_DIR"), "/query.v1.rs"));

        pub const SERVICE_NAME: &str = "query.v1.MerchantQueries";
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

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_has_the_services_and_keeps_http_annotations() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).expect("a valid FileDescriptorSet");
        let payments = set.file.iter().find(|f| f.name() == "payments/v1/payments.proto").expect("payments.proto included");
        let methods: Vec<&str> = payments.service[0].method.iter().map(|m| m.name()).collect();
        assert_eq!(methods, ["Authorize", "Capture", "Refund", "Void", "GetPayment"]);
        assert!(set.file.iter().any(|f| f.name() == "google/api/annotations.proto"), "imports included");
        // prost-types drops extension options when decoding, so look for the rule's text in
        // the encoded bytes, where the edge's reflection-based decoder will find it.
        for path in [
            "/api/payments/authorize",
            "/api/payments/{payment_id}/capture",
            "/api/payments/{payment_id}/refund",
            "/api/payments/{payment_id}/void",
            "/api/payments/{payment_id}",
        ] {
            assert!(super::FILE_DESCRIPTOR_SET.windows(path.len()).any(|w| w == path.as_bytes()), "{path} missing");
        }
    }
}
