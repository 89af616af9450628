//! The caller's identity as the edge forwards it to the services (gRPC metadata).
//!
//! The edge removes any client-sent copy of these headers and sets them itself from a
//! verified token or API key; services read them to scope what a caller may touch. They
//! are only trustworthy on connections from the edge (mTLS inside the mesh).

/// The authenticated subject (a JWT's `sub`, or an API key's subject).
pub const SUBJECT: &str = "x-paymesh-subject";
/// The merchant the caller acts for, when its credential names one.
pub const MERCHANT: &str = "x-paymesh-merchant";
/// The caller's scopes, space-separated.
pub const SCOPES: &str = "x-paymesh-scopes";
/// How the caller authenticated: `jwt <issuer>` or `api-key <id>`.
pub const AUTHENTICATED_BY: &str = "x-paymesh-authenticated-by";

/// Every identity header, for stripping client-sent copies.
pub const ALL: [&str; 4] = [SUBJECT, MERCHANT, SCOPES, AUTHENTICATED_BY];
