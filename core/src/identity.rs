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

/// The scope that lets a caller read any merchant's payments and balances.
pub const ADMIN_SCOPE: &str = "payments:admin";

/// The scope that lets a caller change the mesh through the edge's admin API (force a
/// breaker, reload the config): the dashboard's buttons, `paymesh-mcp`'s `force_breaker`.
pub const MESH_ADMIN_SCOPE: &str = "mesh:admin";

/// The caller of a service call, as the edge forwarded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    pub subject: String,
    pub merchant: Option<String>,
    pub scopes: Vec<String>,
}

/// What a service requires of its callers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// The mesh authenticates at the edge: every call must carry an identity, and acts only
    /// for its own merchant.
    Scoped,
    /// No authentication configured (local development): calls carry no identity.
    Open,
}

impl Policy {
    /// Scoped exactly when the edge authenticates callers.
    pub fn of(config: &crate::config::MeshConfig) -> Self {
        if config.edge.as_ref().is_some_and(|e| e.auth.is_some()) { Policy::Scoped } else { Policy::Open }
    }

    /// The caller of a call whose metadata `get` reads; `Ok(None)` when the policy is open.
    /// A scoped call without an identity is refused (it did not come through the edge).
    pub fn caller<'a>(self, get: impl Fn(&str) -> Option<&'a str>) -> Result<Option<Caller>, String> {
        if self == Policy::Open {
            return Ok(None);
        }
        let subject = get(SUBJECT)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| "the call carries no caller identity; call through the edge with a token or API key".to_owned())?;
        Ok(Some(Caller {
            subject: subject.to_owned(),
            merchant: get(MERCHANT).filter(|m| !m.is_empty()).map(str::to_owned),
            scopes: get(SCOPES).map(|s| s.split_ascii_whitespace().map(str::to_owned).collect()).unwrap_or_default(),
        }))
    }
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.scopes.iter().any(|s| s == ADMIN_SCOPE)
    }

    /// Whether the caller may change `merchant`'s payments: only its own merchant's.
    pub fn may_write(&self, merchant: &str) -> Result<(), String> {
        match &self.merchant {
            Some(m) if m == merchant => Ok(()),
            Some(m) => Err(format!("the caller acts for merchant {m}, not {merchant}")),
            None => Err(format!("the caller's credential names no merchant, so it cannot act for {merchant}")),
        }
    }

    /// Whether the caller may read `merchant`'s payments: its own, or any with the admin scope.
    pub fn may_read(&self, merchant: &str) -> Result<(), String> {
        if self.is_admin() {
            return Ok(());
        }
        self.may_write(merchant).map_err(|e| format!("{e} (reading another merchant's data needs the {ADMIN_SCOPE} scope)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<&'a str> {
        move |k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| *v)
    }

    #[test]
    fn a_scoped_service_requires_an_identity_and_an_open_one_ignores_it() {
        assert_eq!(Policy::Open.caller(headers(&[(SUBJECT, "u")])), Ok(None));
        assert!(Policy::Scoped.caller(headers(&[])).is_err());
        let c =
            Policy::Scoped.caller(headers(&[(SUBJECT, "u"), (MERCHANT, "m-1"), (SCOPES, "a payments:admin")])).expect("ok").expect("some");
        assert_eq!((c.merchant.as_deref(), c.is_admin()), (Some("m-1"), true));
    }

    #[test]
    fn writes_need_the_own_merchant_and_reads_of_others_need_admin() {
        let own = Caller { subject: "u".into(), merchant: Some("m-1".into()), scopes: vec![] };
        assert!(own.may_write("m-1").is_ok() && own.may_read("m-1").is_ok());
        assert!(own.may_write("m-2").is_err() && own.may_read("m-2").is_err());
        let admin = Caller { scopes: vec![ADMIN_SCOPE.into()], ..own.clone() };
        assert!(admin.may_read("m-2").is_ok(), "admins read across merchants");
        assert!(admin.may_write("m-2").is_err(), "but write only for their own");
        let nobody = Caller { merchant: None, ..own };
        assert!(nobody.may_write("m-1").is_err() && nobody.may_read("m-1").is_err());
    }
}
