//! What `xtask up` prints once the stack is up: every endpoint, and commands to try.

use paymesh_core::shard::shard_for_merchant;

use super::Stack;

impl Stack {
    pub fn print_endpoints(&self) {
        let c = &self.config;
        println!("\nPaymesh local stack (config: {})", self.config_path.display());
        if let Some(edge) = &c.edge {
            println!(
                "  edge:      http://{0} (REST/JSON and gRPC)   admin: http://{1}/clusters /routes /breakers /metrics /ready",
                edge.listen, edge.admin_listen
            );
        }
        for pg in &self.databases {
            for db in &pg.databases {
                println!("  postgres:  {}", pg.url(db));
            }
        }
        if let Some(b) = &self.bootstrap {
            println!("  kafka:     {b} (topics: payment.authorized/captured/refunded/voided, DLQs)");
        }
        for i in &c.payments.instances {
            println!("  payments:  {} grpc://{} (shard {})", i.name, i.listen, i.shard);
        }
        for r in c.relay.iter().flat_map(|r| &r.instances) {
            println!("  relay:     {} http://{}/status /metrics ({})", r.name, r.status_listen, r.source);
        }
        for w in c.workers.iter().flat_map(|w| &w.instances) {
            println!("  worker:    {} ({}) http://{}/status /metrics", w.name, w.kind.as_str(), w.status_listen);
        }
        for q in c.query.iter().flat_map(|q| &q.instances) {
            println!("  query:     {} grpc://{}", q.name, q.listen);
        }
        for (service, s) in c.repair.iter().flat_map(|r| r.services()) {
            for i in &s.instances {
                println!("  repair:    {} grpc://{} ({service})", i.name, i.listen);
            }
        }
        let merchant = (0..).map(|i| format!("merchant-{i}")).find(|m| shard_for_merchant(m, c.shard_count()).0 == 0).unwrap_or_default();
        if let Some(edge) = &c.edge {
            let e = edge.listen;
            println!("\nTry it through the edge:");
            println!(
                "  curl -s -X POST http://{e}/api/payments/authorize -H 'content-type: application/json' \\\n       -d '{{\"merchantId\":\"{merchant}\",\"amount\":50000,\"currency\":\"KRW\",\"idempotencyKey\":\"demo-1\"}}'"
            );
            println!("  curl -s http://{e}/api/payments/<paymentId>");
            println!("  grpcurl -plaintext {e} list");
            println!(
                "  grpcurl -plaintext -d '{{\"paymentId\":\"<paymentId>\",\"idempotencyKey\":\"demo-2\"}}' {e} payments.v1.Payments/Capture"
            );
            if c.query.is_some() {
                println!("  curl -s http://{e}/api/merchants/{merchant}/payments");
                println!("  curl -s http://{e}/api/merchants/{merchant}/balance");
            }
        }
    }
}
