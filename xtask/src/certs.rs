//! `cargo xtask certs`: the mesh CA and a certificate for every process of the config (and
//! for `operator`, xtask's own probes), for `[mesh_tls]`. The CA is kept (`ca.pem`,
//! `ca.key`) so certificates issued later chain to the same root; existing certificates are
//! kept unless asked to be rotated.

use std::path::Path;

use paymesh_core::config::MeshConfig;
use paymesh_testkit::certs::MeshCa;

/// The name of xtask's own client certificate.
pub const OPERATOR: &str = "operator";

/// Every name that needs a certificate under `config`.
pub fn names(config: &MeshConfig) -> Vec<String> {
    let mut names: Vec<String> = config.payments.instances.iter().map(|i| i.name.clone()).collect();
    names.extend(config.query.iter().flat_map(|q| q.instances.iter().map(|i| i.name.clone())));
    names.extend(config.repair.iter().flat_map(|r| r.services().flat_map(|(_, s)| s.instances.iter().map(|i| i.name.clone()))));
    names.push("edge".into());
    names.push(OPERATOR.into());
    names
}

/// Makes what is missing (the CA, then each certificate), and re-issues `rotate`.
pub fn ensure(config: &MeshConfig, rotate: &[String]) -> Result<Vec<String>, String> {
    let Some(tls) = &config.mesh_tls else { return Ok(Vec::new()) };
    let ca_dir = tls.ca.parent().unwrap_or(Path::new("."));
    if tls.ca.file_name().is_none_or(|n| n != "ca.pem") {
        return Err(format!("mesh_tls.ca is {}; xtask keeps its CA as ca.pem (next to ca.key)", tls.ca.display()));
    }
    let ca = MeshCa::load_or_create(ca_dir, "Paymesh local mesh CA")?;
    let mut issued = Vec::new();
    for name in names(config) {
        let have = tls.dir.join(format!("{name}.pem")).exists() && tls.dir.join(format!("{name}.key")).exists();
        if !have || rotate.contains(&name) {
            ca.write_issued(&tls.dir, &name)?;
            issued.push(name);
        }
    }
    Ok(issued)
}

/// `cargo xtask certs [--config FILE] [--rotate NAME ...]`.
pub fn command(root: &Path, args: &[String]) -> Result<(), String> {
    let mut config = root.join("mesh-config/paymesh.toml");
    let mut rotate = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => config = it.next().ok_or("--config needs a file")?.into(),
            "--rotate" => rotate.push(it.next().ok_or("--rotate needs a name")?.clone()),
            other => return Err(format!("unknown option '{other}' for certs\n{}", crate::USAGE)),
        }
    }
    let cfg = MeshConfig::load(&config).map_err(|e| e.to_string())?;
    let Some(tls) = &cfg.mesh_tls else {
        return Err(format!("{} has no [mesh_tls]: its processes talk plaintext and need no certificates", config.display()));
    };
    let issued = ensure(&cfg, &rotate)?;
    println!("mesh CA {}; certificates in {}", tls.ca.display(), tls.dir.display());
    println!("issued: {}", if issued.is_empty() { "none (all present)".to_owned() } else { issued.join(", ") });
    Ok(())
}
