//! Checks of `compose/` that need no Docker: the files parse, the services they start are the
//! instances `compose/mesh-config.toml` declares, Prometheus scrapes exactly their status
//! ports, and every metric the Grafana dashboard queries is one the code exports.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    use paymesh_core::config::MeshConfig;
    use yaml_rust2::{Yaml, YamlLoader};

    fn compose_dir() -> PathBuf {
        crate::root().join("compose")
    }

    fn yaml(file: &str) -> Yaml {
        let text = std::fs::read_to_string(compose_dir().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{file} is not YAML: {e}")).remove(0)
    }

    /// service name -> (command, ipv4 address, depends_on)
    fn services(doc: &Yaml) -> BTreeMap<String, (String, Option<String>, Vec<String>)> {
        let Some(map) = doc["services"].as_hash() else { panic!("no services") };
        map.iter()
            .map(|(k, v)| {
                let name = k.as_str().expect("service name").to_owned();
                let command = v["command"].as_str().unwrap_or("").to_owned();
                let ip = v["networks"]["paymesh"]["ipv4_address"].as_str().map(str::to_owned);
                let deps =
                    v["depends_on"].as_vec().map(|d| d.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default();
                (name, (command, ip, deps))
            })
            .collect()
    }

    fn mesh() -> MeshConfig {
        let path = compose_dir().join("mesh-config.toml");
        let text = std::fs::read_to_string(&path).expect("mesh-config.toml");
        MeshConfig::parse(&path, &text, &|_| Some("secret".into())).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn compose_services_are_the_mesh_configs_instances() {
        let full = services(&yaml("docker-compose.yml"));
        let state = services(&yaml("docker-compose.state.yml"));
        let app = services(&yaml("docker-compose.app.yml"));
        assert_eq!(full.len(), state.len() + app.len(), "the split covers the full stack exactly");
        for (name, (_, _, deps)) in &full {
            for d in deps {
                assert!(full.contains_key(d), "{name} depends on unknown service {d}");
            }
        }
        for (name, (_, _, deps)) in &app {
            for d in deps {
                assert!(app.contains_key(d), "{name} in the app file depends on {d}, which is on the other machine");
            }
        }
        let m = mesh();
        let mut declared: BTreeMap<String, String> = BTreeMap::new();
        for i in &m.payments.instances {
            declared.insert(i.name.clone(), i.listen.ip().to_string());
        }
        for i in m.relay.iter().flat_map(|r| &r.instances) {
            declared.insert(i.name.clone(), i.status_listen.ip().to_string());
        }
        for i in m.workers.iter().flat_map(|w| &w.instances) {
            declared.insert(i.name.clone(), i.status_listen.ip().to_string());
        }
        for i in m.query.iter().flat_map(|q| &q.instances) {
            declared.insert(i.name.clone(), i.listen.ip().to_string());
        }
        for (name, ip) in &declared {
            let (command, addr, _) = full.get(name).unwrap_or_else(|| panic!("{name} is in the mesh config but not in docker-compose.yml"));
            assert!(command.ends_with(&format!("--instance {name}")), "{name} runs {command:?}");
            assert_eq!(addr.as_deref(), Some(ip.as_str()), "{name}'s address in compose and mesh config differ");
        }
        for (name, (command, _, _)) in &full {
            if let Some(instance) = command.split("--instance ").nth(1) {
                assert!(declared.contains_key(instance.trim()), "{name} runs an instance the mesh config lacks");
            }
        }
        assert!(full.get("edge").is_some_and(|(c, _, _)| c == "edge"));
    }

    #[test]
    fn prometheus_scrapes_every_status_port() {
        let doc = yaml("prometheus.yml");
        let full = services(&yaml("docker-compose.yml"));
        let m = mesh();
        let mut want: BTreeSet<String> = BTreeSet::new();
        let ip_of = |name: &str| full.get(name).and_then(|(_, ip, _)| ip.clone());
        for i in &m.payments.instances {
            let s = i.status_listen.expect("compose payments instances serve metrics");
            assert_eq!(ip_of(&i.name).as_deref(), Some(s.ip().to_string().as_str()));
            want.insert(format!("{}:{}", i.name, s.port()));
        }
        for i in m.relay.iter().flat_map(|r| &r.instances) {
            want.insert(format!("{}:{}", i.name, i.status_listen.port()));
        }
        for i in m.workers.iter().flat_map(|w| &w.instances) {
            want.insert(format!("{}:{}", i.name, i.status_listen.port()));
        }
        want.insert(format!("edge:{}", m.edge.as_ref().expect("edge").admin_listen.port()));
        let got: BTreeSet<String> = doc["scrape_configs"]
            .as_vec()
            .expect("scrape_configs")
            .iter()
            .flat_map(|job| job["static_configs"].as_vec().cloned().unwrap_or_default())
            .flat_map(|sc| sc["targets"].as_vec().cloned().unwrap_or_default())
            .filter_map(|t| t.as_str().map(str::to_owned))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_dashboard_queries_only_exported_metrics() {
        let path = compose_dir().join("grafana/dashboards/paymesh.json");
        let dash: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("dashboard")).expect("dashboard JSON");
        let mut sources = String::new();
        for dir in ["edge/src", "services/payments/src", "services/relay/src", "services/workers/src"] {
            collect(&crate::root().join(dir), &mut sources);
        }
        let panels = dash["panels"].as_array().expect("panels");
        assert!(panels.len() >= 8);
        for p in panels {
            for t in p["targets"].as_array().expect("targets") {
                let expr = t["expr"].as_str().expect("expr");
                for name in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).filter(|w| w.starts_with("paymesh_")) {
                    let base = name.trim_end_matches("_bucket").trim_end_matches("_count").trim_end_matches("_sum");
                    assert!(sources.contains(base), "panel {:?} queries {name}, which no process exports", p["title"]);
                }
            }
        }
        let ds = yaml("grafana/provisioning/datasources/prometheus.yml");
        assert_eq!(ds["datasources"][0]["url"].as_str(), Some("http://prometheus:9090"));
    }

    fn collect(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).expect("dir").flatten() {
            let p = e.path();
            if p.is_dir() {
                collect(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
            }
        }
    }
}
