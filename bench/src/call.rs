//! ghz's interface for any method: `--call package.Service/Method` with a JSON body built from
//! the descriptors (Paymesh's built in, others from `--protoset`), or `--rest METHOD:PATH`,
//! with the body templated per request. Counts gRPC status codes, not just HTTP ones.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use paymesh_proto::codec::BytesCodec;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use tonic::transport::Channel;

use crate::load::Outcome;
use crate::target::HttpClient;
use crate::template::{Vars, render};

/// Where calls go.
#[derive(Clone)]
pub enum Target {
    Grpc { channels: Vec<Channel>, path: http::uri::PathAndQuery, input: MessageDescriptor },
    Rest { client: Box<HttpClient>, base: String, method: http::Method, path: String },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Grpc { path, .. } => write!(f, "gRPC {path}"),
            Self::Rest { method, path, .. } => write!(f, "REST {method} {path}"),
        }
    }
}

/// The descriptor pool: Paymesh's contracts plus any `--protoset` files.
pub fn pool(protosets: &[String]) -> Result<DescriptorPool, String> {
    let mut pool = DescriptorPool::new();
    pool.decode_file_descriptor_set(paymesh_proto::FILE_DESCRIPTOR_SET).map_err(|e| e.to_string())?;
    for p in protosets {
        let bytes = std::fs::read(p).map_err(|e| format!("--protoset {p}: {e}"))?;
        pool.decode_file_descriptor_set(bytes.as_slice()).map_err(|e| format!("--protoset {p}: {e}"))?;
    }
    Ok(pool)
}

/// Resolves `package.Service/Method` (or `package.Service.Method`, as ghz accepts).
pub fn method(pool: &DescriptorPool, call: &str) -> Result<(http::uri::PathAndQuery, MessageDescriptor), String> {
    let (service, method) =
        call.rsplit_once('/').or_else(|| call.rsplit_once('.')).ok_or_else(|| format!("--call '{call}': write package.Service/Method"))?;
    let svc = pool.get_service_by_name(service).ok_or_else(|| format!("--call '{call}': no service {service} in the descriptors"))?;
    let m = svc.methods().find(|m| m.name() == method).ok_or_else(|| format!("--call '{call}': {service} has no method {method}"))?;
    let path = format!("/{service}/{method}").parse().map_err(|_| format!("--call '{call}': not a valid path"))?;
    Ok((path, m.input()))
}

/// Sends call number `seq` from `worker` with the templated body.
pub async fn call(target: &Target, data: &str, headers: &[(String, String)], seq: u64, worker: usize) -> Outcome {
    let body = match render(data, Vars { request_number: seq, worker_id: worker }) {
        Ok(b) => b,
        Err(e) => return Outcome { status: "TemplateError".into(), error: Some(e) },
    };
    match target {
        Target::Grpc { channels, path, input } => {
            let mut de = serde_json::Deserializer::from_str(&body);
            let msg = match DynamicMessage::deserialize(input.clone(), &mut de) {
                Ok(m) => m,
                Err(e) => {
                    return Outcome { status: "BadRequestData".into(), error: Some(format!("-d does not fit {}: {e}", input.full_name())) };
                }
            };
            let mut request = tonic::Request::new(Bytes::from(msg.encode_to_vec()));
            for (k, v) in headers {
                if let (Ok(k), Ok(v)) = (k.parse::<tonic::metadata::MetadataKey<tonic::metadata::Ascii>>(), v.parse()) {
                    request.metadata_mut().insert(k, v);
                }
            }
            let mut grpc = tonic::client::Grpc::new(channels[(seq as usize) % channels.len()].clone());
            if let Err(e) = grpc.ready().await {
                return Outcome { status: "Unavailable".into(), error: Some(e.to_string()) };
            }
            match grpc.unary(request, path.clone(), BytesCodec).await {
                Ok(_) => Outcome { status: "OK".into(), error: None },
                Err(s) => Outcome {
                    status: format!("{:?}", s.code()),
                    error: Some(format!("rpc error: code = {:?} desc = {}", s.code(), s.message())),
                },
            }
        }
        Target::Rest { client, base, method, path } => {
            let path = match render(path, Vars { request_number: seq, worker_id: worker }) {
                Ok(p) => p,
                Err(e) => return Outcome { status: "TemplateError".into(), error: Some(e) },
            };
            let mut b = http::Request::builder().method(method.clone()).uri(format!("{base}{path}"));
            if !body.is_empty() {
                b = b.header("content-type", "application/json");
            }
            for (k, v) in headers {
                b = b.header(k.as_str(), v.as_str());
            }
            let Ok(req) = b.body(Full::new(Bytes::from(body))) else {
                return Outcome { status: "BadRequest".into(), error: Some("invalid request".into()) };
            };
            match client.request(req).await {
                Ok(resp) => {
                    let status = resp.status();
                    let bytes = resp.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                    if status.is_success() {
                        Outcome { status: "OK".into(), error: None }
                    } else {
                        Outcome {
                            status: format!("HTTP {}", status.as_u16()),
                            error: Some(String::from_utf8_lossy(&bytes).chars().take(200).collect()),
                        }
                    }
                }
                Err(e) => Outcome { status: "TransportError".into(), error: Some(e.to_string()) },
            }
        }
    }
}
