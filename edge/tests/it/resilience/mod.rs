//! Edge resilience against upstreams the tests make fail, slow down or hang: circuit
//! breakers, rate limits, concurrency limits, retries and outlier ejection.

mod breakers;
mod limits;
mod outliers;
mod retries;
