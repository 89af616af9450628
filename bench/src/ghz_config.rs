//! ghz's `--config` file (JSON) as command-line flags, so the files in `bench/ghz/` run
//! unchanged under ghz and under `paymesh-bench --config`.
//!
//! `proto` and `import-paths` are accepted and ignored: the tool carries Paymesh's
//! descriptors (add others with `protoset`). Keys ghz has and this tool does not are an
//! error, never silently dropped, so a run is never quietly different from what the file says.

/// The flags equivalent to the ghz config `json`; command-line flags given after them win.
pub fn to_flags(json: &str) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| format!("the ghz config is not valid JSON: {e}"))?;
    let obj = v.as_object().ok_or("the ghz config must be a JSON object")?;
    let mut flags = Vec::new();
    let mut host = None;
    for (key, value) in obj {
        let scalar = || match value {
            serde_json::Value::String(s) => Ok(s.clone()),
            serde_json::Value::Number(n) => Ok(n.to_string()),
            _ => Err(format!("ghz config key '{key}' wants a string or a number")),
        };
        let flag = match key.as_str() {
            "proto" | "import-paths" => continue,
            "insecure" => {
                if value != &serde_json::Value::Bool(true) {
                    return Err("ghz config: only \"insecure\": true is supported (paymesh-bench speaks plaintext h2c)".into());
                }
                continue;
            }
            "host" => {
                host = Some(scalar()?);
                continue;
            }
            "data" => {
                flags.extend(["-d".to_owned(), if let serde_json::Value::String(s) = value { s.clone() } else { value.to_string() }]);
                continue;
            }
            "metadata" => {
                let m = value.as_object().ok_or("ghz config key 'metadata' wants an object of strings")?;
                for (k, v) in m {
                    let v = v.as_str().ok_or("ghz config key 'metadata' wants an object of strings")?;
                    flags.extend(["-m".to_owned(), format!("{k}={v}")]);
                }
                continue;
            }
            "call" => "--call",
            "concurrency" => "-c",
            "connections" => "--connections",
            "duration" => "-z",
            "total" => "-n",
            "rps" => "--rps",
            "skipFirst" => "--skipFirst",
            "protoset" => "--protoset",
            "format" => "-O",
            other => return Err(format!("ghz config key '{other}' is not supported by paymesh-bench; remove it or run ghz")),
        };
        flags.extend([flag.to_owned(), scalar()?]);
    }
    flags.extend(host);
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::to_flags;

    #[test]
    fn a_ghz_config_becomes_flags() {
        let f = to_flags(
            r#"{"proto": "p.proto", "import-paths": ["proto"], "call": "a.B/C", "host": "127.0.0.1:1", "insecure": true,
                "concurrency": 8, "duration": "3s", "skipFirst": 10, "data": {"k": "{{.UUID}}"}, "metadata": {"x-a": "1"}}"#,
        )
        .expect("valid");
        let has = |a: &str, b: &str| f.windows(2).any(|w| w[0] == a && w[1] == b);
        assert!(has("--call", "a.B/C") && has("-c", "8") && has("-z", "3s") && has("--skipFirst", "10"), "{f:?}");
        assert!(has("-d", r#"{"k":"{{.UUID}}"}"#) && has("-m", "x-a=1"), "{f:?}");
        assert_eq!(f.last().map(String::as_str), Some("127.0.0.1:1"));
    }

    #[test]
    fn unsupported_keys_are_errors_not_ignored() {
        assert!(to_flags(r#"{"call": "a.B/C", "cacert": "ca.pem"}"#).expect_err("cacert is not supported").contains("cacert"));
        assert!(to_flags(r#"{"insecure": false}"#).is_err());
        assert!(to_flags("[1]").is_err());
        assert!(to_flags("{").is_err());
    }

    #[test]
    fn the_shipped_configs_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ghz");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("bench/ghz") {
            let path = entry.expect("entry").path();
            let flags = to_flags(&std::fs::read_to_string(&path).expect("read")).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(flags.iter().any(|f| f == "--call"), "{}", path.display());
            n += 1;
        }
        assert!(n >= 3, "expected the shipped ghz configs in {}", dir.display());
    }
}
