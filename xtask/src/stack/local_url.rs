//! The parts of a database URL that `xtask up` needs to start the server it points at.

/// The parts of a local `postgres://user@127.0.0.1:PORT/DB` URL that xtask needs.
#[derive(Debug, PartialEq)]
pub struct LocalUrl {
    pub port: u16,
    pub database: String,
}

impl LocalUrl {
    pub fn parse(url: &str) -> Result<Self, String> {
        let rest = url.split_once("://").map(|(_, r)| r).ok_or("not a URL")?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = hostport.rsplit_once(':').ok_or("has no port; xtask starts each database server on the URL's port")?;
        if host != "127.0.0.1" && host != "localhost" {
            return Err(format!("points at {host}; xtask up starts only local databases (127.0.0.1)"));
        }
        let port = port.parse().map_err(|_| format!("'{port}' is not a port"))?;
        let database = path.split('?').next().filter(|d| !d.is_empty()).unwrap_or("postgres").to_owned();
        Ok(Self { port, database })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_local_urls() {
        assert_eq!(
            LocalUrl::parse("postgres://postgres@127.0.0.1:15432/paymesh"),
            Ok(LocalUrl { port: 15432, database: "paymesh".into() })
        );
        assert_eq!(LocalUrl::parse("postgresql://localhost:5/x?sslmode=disable"), Ok(LocalUrl { port: 5, database: "x".into() }));
        assert_eq!(LocalUrl::parse("postgres://u@127.0.0.1:7"), Ok(LocalUrl { port: 7, database: "postgres".into() }));
        assert!(LocalUrl::parse("postgres://db.example.com:5432/x").expect_err("remote").contains("only local"));
        assert!(LocalUrl::parse("postgres://127.0.0.1/x").is_err());
    }
}
