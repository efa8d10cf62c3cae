//! HTTPS clients for the drivers that speak HTTP to a machine (a Redfish
//! BMC, the ramdisk agent): how the peer's certificate is checked, and one
//! `reqwest::Client` per setting, built once and shared.

use super::DriverError;
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use tracing::warn;

/// How to check the peer's certificate (Ironic's `*_verify_ca` values).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Verify {
    /// The platform's trusted roots (`true`, the default).
    System,
    /// No check (`false`; logged as a warning when the client is built).
    Insecure,
    /// Only the roots of this PEM bundle (a path).
    Bundle(PathBuf),
    /// Only this PEM certificate, given inline (what an agent with
    /// automatic TLS sends as `agent_verify_ca`).
    Pem(String),
}

impl Verify {
    /// Parse a `*_verify_ca` value: a boolean, a boolean-like string, a PEM
    /// certificate, or the path of a PEM bundle. `key` names the setting in
    /// the error.
    pub fn parse(value: Option<&Value>, key: &str) -> Result<Verify, String> {
        Ok(match value {
            None | Some(Value::Null) | Some(Value::Bool(true)) => Verify::System,
            Some(Value::Bool(false)) => Verify::Insecure,
            Some(Value::String(s)) => {
                let t = s.trim();
                match t.to_ascii_lowercase().as_str() {
                    "" | "true" | "yes" | "1" | "on" => Verify::System,
                    "false" | "no" | "0" | "off" => Verify::Insecure,
                    _ if t.starts_with("-----BEGIN") => Verify::Pem(t.to_string()),
                    _ => Verify::Bundle(PathBuf::from(t)),
                }
            }
            Some(_) => {
                return Err(format!(
                    "{key} must be true, false, a CA bundle path or a PEM certificate"
                ))
            }
        })
    }
}

/// Timeouts of every client a [`Clients`] builds.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// Whole-request timeout.
    pub request: Duration,
    /// TCP/TLS connect timeout.
    pub connect: Duration,
}

/// One shared client per [`Verify`] setting. `what` names the peer in
/// warnings and errors ("BMC", "agent").
#[derive(Debug)]
pub struct Clients {
    what: &'static str,
    timeouts: Timeouts,
    built: Mutex<HashMap<Verify, reqwest::Client>>,
}

impl Clients {
    /// Clients for peers called `what`, with these timeouts.
    pub fn new(what: &'static str, timeouts: Timeouts) -> Self {
        Clients {
            what,
            timeouts,
            built: Mutex::new(HashMap::new()),
        }
    }

    /// The client for `verify` (built at the first use).
    pub fn get(&self, verify: &Verify) -> Result<reqwest::Client, DriverError> {
        let mut built = match self.built.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Some(c) = built.get(verify) {
            return Ok(c.clone());
        }
        let mut b = reqwest::Client::builder()
            .timeout(self.timeouts.request)
            .connect_timeout(self.timeouts.connect)
            .user_agent(concat!("ferric/", env!("CARGO_PKG_VERSION")));
        let what = self.what;
        match verify {
            Verify::System => {}
            Verify::Insecure => {
                warn!("{what} certificates are not checked (verify_ca is false)");
                b = b.tls_danger_accept_invalid_certs(true);
            }
            Verify::Bundle(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    DriverError::permanent(format!(
                        "cannot read the CA bundle {}: {e}",
                        path.display()
                    ))
                })?;
                let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                    DriverError::permanent(format!("invalid CA bundle {}: {e}", path.display()))
                })?;
                b = b.tls_certs_only(certs);
            }
            Verify::Pem(pem) => {
                let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes()).map_err(|e| {
                    DriverError::permanent(format!("invalid {what} certificate: {e}"))
                })?;
                b = b.tls_certs_only(certs);
            }
        }
        let c = b.build().map_err(|e| {
            DriverError::permanent(format!("cannot build the {what} HTTP client: {e}"))
        })?;
        built.insert(verify.clone(), c.clone());
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn verify_values() {
        let p = |v: Value| Verify::parse(Some(&v), "x_verify_ca");
        assert_eq!(Verify::parse(None, "k").unwrap(), Verify::System);
        assert_eq!(p(json!(true)).unwrap(), Verify::System);
        assert_eq!(p(json!("False")).unwrap(), Verify::Insecure);
        assert_eq!(p(json!(false)).unwrap(), Verify::Insecure);
        assert_eq!(
            p(json!("/etc/ca.pem")).unwrap(),
            Verify::Bundle("/etc/ca.pem".into())
        );
        assert!(matches!(
            p(json!(
                "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----"
            ))
            .unwrap(),
            Verify::Pem(_)
        ));
        assert!(p(json!(3)).unwrap_err().contains("x_verify_ca"));
    }
}
