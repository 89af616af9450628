//! Checks of `compose/kubernetes/` that need no cluster: every manifest is valid against the
//! Kubernetes API schemas (`kubernetes-validate --strict`, offline), and the manifests agree
//! with the mesh config they carry: one Deployment per instance running that instance, its
//! ports and probes on the addresses the config gives it, each Service's pinned ClusterIP the
//! address the edge dials, rolling updates that never go below the wanted count, and
//! disruption budgets and autoscalers that select something.

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    use paymesh_core::config::MeshConfig;
    use yaml_rust2::{Yaml, YamlLoader};

    fn dir() -> PathBuf {
        crate::root().join("compose/kubernetes")
    }

    /// The manifest files (every `*.yaml` but the kustomization), sorted.
    fn files() -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir())
            .expect("compose/kubernetes exists")
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml") && !p.ends_with("kustomization.yaml"))
            .collect();
        v.sort();
        v
    }

    /// (kind, name) -> document, over every file.
    fn objects() -> BTreeMap<(String, String), Yaml> {
        let mut out = BTreeMap::new();
        for f in files() {
            let text = std::fs::read_to_string(&f).expect("readable");
            for doc in YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{} is not YAML: {e}", f.display())) {
                if doc.is_null() {
                    continue;
                }
                let kind = doc["kind"].as_str().unwrap_or_else(|| panic!("{}: a document without kind", f.display())).to_owned();
                let name = doc["metadata"]["name"].as_str().expect("metadata.name").to_owned();
                assert_eq!(doc["metadata"]["namespace"].as_str().unwrap_or("paymesh"), "paymesh", "{kind}/{name} is outside the namespace");
                assert!(out.insert((kind.clone(), name.clone()), doc).is_none(), "{kind}/{name} is declared twice");
            }
        }
        out
    }

    fn get<'a>(objects: &'a BTreeMap<(String, String), Yaml>, kind: &str, name: &str) -> &'a Yaml {
        objects.get(&(kind.to_owned(), name.to_owned())).unwrap_or_else(|| panic!("no {kind}/{name} in compose/kubernetes"))
    }

    fn mesh(objects: &BTreeMap<(String, String), Yaml>) -> MeshConfig {
        let text =
            get(objects, "ConfigMap", "paymesh-mesh-config")["data"]["paymesh.toml"].as_str().expect("paymesh.toml in the ConfigMap");
        MeshConfig::parse(&dir().join("mesh-config.yaml"), text, &|_| Some("secret".into())).unwrap_or_else(|e| panic!("{e}"))
    }

    fn container(d: &Yaml) -> &Yaml {
        &d["spec"]["template"]["spec"]["containers"][0]
    }

    fn args(d: &Yaml) -> Vec<String> {
        container(d)["args"].as_vec().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
    }

    fn container_ports(d: &Yaml) -> BTreeMap<String, i64> {
        container(d)["ports"]
            .as_vec()
            .map(|p| p.iter().map(|p| (p["name"].as_str().unwrap_or("").to_owned(), p["containerPort"].as_i64().unwrap_or(0))).collect())
            .unwrap_or_default()
    }

    /// The port a probe uses, as a number (named ports resolved against the container's).
    fn probe_port(d: &Yaml, probe: &str) -> i64 {
        let p = &container(d)[probe];
        let port = if !p["grpc"].is_badvalue() { &p["grpc"]["port"] } else { &p["httpGet"]["port"] };
        match port {
            Yaml::Integer(n) => *n,
            Yaml::String(name) => *container_ports(d).get(name).unwrap_or_else(|| panic!("probe port {name} is not a container port")),
            other => panic!("{probe} of {:?} has no port: {other:?}", d["metadata"]["name"]),
        }
    }

    #[test]
    fn every_manifest_is_valid_against_the_kubernetes_schemas() {
        let out = std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet", "--kubernetes-version", "1.30.0"])
            .args(files())
            .output()
            .expect("run python3");
        assert!(
            out.status.success(),
            "kubernetes-validate refused the manifests (install it with `pip install kubernetes-validate`; `cargo xtask test` does):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_kustomization_lists_every_manifest() {
        let k = YamlLoader::load_from_str(&std::fs::read_to_string(dir().join("kustomization.yaml")).expect("kustomization.yaml"))
            .expect("YAML")
            .remove(0);
        let mut listed: Vec<String> =
            k["resources"].as_vec().expect("resources").iter().filter_map(|r| r.as_str().map(str::to_owned)).collect();
        listed.sort();
        let mut present: Vec<String> = files().iter().map(|f| f.file_name().expect("name").to_string_lossy().into_owned()).collect();
        present.sort();
        assert_eq!(listed, present);
    }

    #[test]
    fn manifests_agree_with_the_mesh_config() {
        let objects = objects();
        let m = mesh(&objects);
        let edge = m.edge.as_ref().expect("the mesh config has an edge");
        let endpoint = |cluster: &str, name: &str| {
            edge.cluster(cluster)
                .and_then(|c| c.endpoints.iter().find(|e| e.name == name))
                .unwrap_or_else(|| panic!("the edge's cluster {cluster} has no endpoint {name}"))
                .address
        };
        let service_address = |name: &str| {
            let s = get(&objects, "Service", name);
            let ip = s["spec"]["clusterIP"].as_str().unwrap_or_else(|| panic!("Service {name} pins no clusterIP"));
            let port = s["spec"]["ports"][0]["port"].as_i64().expect("port");
            format!("{ip}:{port}")
        };

        for i in &m.payments.instances {
            let d = get(&objects, "Deployment", &i.name);
            assert_eq!(args(d), ["payments", "--instance", i.name.as_str()]);
            let ports = container_ports(d);
            assert_eq!(ports.get("grpc").copied(), Some(i64::from(i.listen.port())), "{}", i.name);
            let status = i.status_listen.expect("payments instances serve /status");
            assert_eq!(ports.get("status").copied(), Some(i64::from(status.port())), "{}", i.name);
            assert_eq!(probe_port(d, "readinessProbe"), i64::from(i.listen.port()), "{}: readiness is its gRPC health", i.name);
            assert_eq!(probe_port(d, "livenessProbe"), i64::from(status.port()));
            assert_eq!(
                d["spec"]["template"]["metadata"]["labels"]["paymesh.dev/shard"].as_str(),
                Some(i.shard.0.to_string().as_str()),
                "{}: its shard label",
                i.name
            );
            assert_eq!(service_address(&i.name), endpoint("payments", &i.name).to_string(), "{}: the edge dials its Service", i.name);
            assert_eq!(get(&objects, "HorizontalPodAutoscaler", &i.name)["spec"]["scaleTargetRef"]["name"].as_str(), Some(i.name.as_str()));
        }
        for (binary, names) in [
            ("relay", m.relay.iter().flat_map(|r| r.instances.iter().map(|i| (i.name.clone(), i.status_listen))).collect::<Vec<_>>()),
            ("worker", m.workers.iter().flat_map(|w| w.instances.iter().map(|i| (i.name.clone(), i.status_listen))).collect()),
        ] {
            for (name, status) in names {
                let d = get(&objects, "Deployment", &name);
                assert_eq!(args(d), [binary, "--instance", name.as_str()]);
                assert_eq!(container_ports(d).get("status").copied(), Some(i64::from(status.port())), "{name}");
                assert_eq!(probe_port(d, "readinessProbe"), i64::from(status.port()), "{name}");
            }
        }
        for q in m.query.iter().flat_map(|q| &q.instances) {
            let d = get(&objects, "Deployment", &q.name);
            assert_eq!(args(d), ["query", "--instance", q.name.as_str()]);
            assert_eq!(container_ports(d).get("grpc").copied(), Some(i64::from(q.listen.port())));
            assert_eq!(service_address(&q.name), endpoint("query", &q.name).to_string());
        }
        let e = get(&objects, "Deployment", "edge");
        assert_eq!(args(e), ["edge"]);
        assert_eq!(container_ports(e).get("http").copied(), Some(i64::from(edge.listen.port())));
        assert_eq!(container_ports(e).get("admin").copied(), Some(i64::from(edge.admin_listen.port())));
        assert!(edge.reload_on_change, "the edge follows the mounted ConfigMap");

        // Every Paymesh Deployment: rolling updates that keep the wanted count, both probes,
        // the mesh config mounted where PAYMESH_CONFIG points.
        let mut deployments = 0;
        for ((kind, name), d) in &objects {
            if kind != "Deployment" {
                continue;
            }
            deployments += 1;
            assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"].as_i64(), Some(0), "{name}");
            for probe in ["readinessProbe", "livenessProbe"] {
                assert!(!container(d)[probe].is_badvalue(), "{name} has no {probe}");
            }
            let env = container(d)["env"].as_vec().expect("env");
            let config = env.iter().find(|v| v["name"].as_str() == Some("PAYMESH_CONFIG")).and_then(|v| v["value"].as_str());
            let mount =
                container(d)["volumeMounts"].as_vec().and_then(|m| m.iter().find(|m| m["name"].as_str() == Some("mesh-config")).cloned());
            let mount = mount
                .and_then(|m| m["mountPath"].as_str().map(str::to_owned))
                .unwrap_or_else(|| panic!("{name} does not mount the mesh config"));
            assert_eq!(config, Some(format!("{mount}/paymesh.toml").as_str()), "{name}");
            assert_eq!(d["spec"]["template"]["spec"]["volumes"][0]["configMap"]["name"].as_str(), Some("paymesh-mesh-config"), "{name}");
            assert_eq!(
                d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"].as_str(),
                d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"].as_str(),
                "{name}: its selector matches its pods"
            );
        }
        let instances = m.payments.instances.len()
            + m.relay.iter().map(|r| r.instances.len()).sum::<usize>()
            + m.workers.iter().map(|w| w.instances.len()).sum::<usize>()
            + m.query.iter().map(|q| q.instances.len()).sum::<usize>();
        assert_eq!(deployments, instances + 1, "one Deployment per instance, and the edge's");

        // Disruption budgets and autoscalers select existing pods.
        for ((kind, name), o) in &objects {
            if kind == "PodDisruptionBudget" {
                let wanted = o["spec"]["selector"]["matchLabels"].as_hash().expect("matchLabels");
                let pods: i64 = objects
                    .iter()
                    .filter(|((k, _), _)| k == "Deployment")
                    .filter(|(_, d)| {
                        wanted.iter().all(|(k, v)| d["spec"]["template"]["metadata"]["labels"][k.as_str().unwrap_or("")] == *v)
                    })
                    .map(|(_, d)| d["spec"]["replicas"].as_i64().unwrap_or(1))
                    .sum();
                let min = o["spec"]["minAvailable"].as_i64().expect("minAvailable");
                assert!(pods > min, "PodDisruptionBudget {name} selects {pods} pods; with minAvailable {min} none could ever be drained");
            }
            if kind == "HorizontalPodAutoscaler" {
                let target = o["spec"]["scaleTargetRef"]["name"].as_str().expect("target");
                let _ = get(&objects, "Deployment", target);
            }
        }
    }
}
