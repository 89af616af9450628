//! REST/JSON <-> gRPC transcoding driven only by descriptors and `google.api.http` rules.
//!
//! - [`template`]: path templates;
//! - [`request`]: HTTP request -> request message;
//! - [`response`]: response message -> JSON.

pub mod request;
pub mod response;
pub mod template;
