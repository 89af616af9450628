//! Paymesh operations: what an operator (or an AI assistant) uses to see and steer a running
//! mesh, all limited to the processes the mesh config names.
//!
//! - [`mesh`]: the configured processes and the one HTTP exchange the tools make with them;
//! - [`tools`]: the MCP server (`paymesh-mcp`) and its tools;
//! - [`loadtest`]: bounded load tests on demand, one at a time, with progress and a report;
//! - [`analysis`]: a run's figures in plain words and a grade;
//! - [`serve`]: the HTTP listener (`/mcp`, `/loadtests`);
//! - [`credentials`], [`issuer`]: what the tools present to an edge that authenticates;
//! - [`metrics_text`]: Prometheus text into samples.

pub mod analysis;
pub mod credentials;
pub mod issuer;
pub mod loadtest;
pub mod mesh;
pub mod metrics_text;
pub mod serve;
pub mod tools;
