//! The security settings' rules: the cluster secret (or running alone, or insecure on
//! purpose), mutual TLS for internal gRPC and TLS on the HTTP API.

use std::path::PathBuf;
use std::sync::Arc;

use super::{invalid, ConfigError};
use crate::cluster_keys::{ClusterKeys, KeyError};
use crate::tls::{HttpTls, InternalTls, TlsFiles};

/// Mutual TLS on internal gRPC: all three files or none.
pub(super) fn internal_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
) -> Result<Option<InternalTls>, ConfigError> {
    let server_name = server_name.unwrap_or_else(|| "ringtail-internal".to_owned());
    if rustls::pki_types::ServerName::try_from(server_name.as_str()).is_err() {
        return Err(invalid(
            "internal_tls_server_name",
            "is not a DNS name or IP address",
        ));
    }
    match (cert, key, ca) {
        (Some(cert), Some(key), Some(ca)) => Ok(Some(InternalTls {
            cert,
            key,
            ca,
            server_name,
        })),
        (None, None, None) => Ok(None),
        _ => Err(invalid(
            "internal_tls_cert_file",
            "set together with internal_tls_key_file and internal_tls_ca_file (all or none)",
        )),
    }
}

/// TLS on the HTTP API: the certificate and key together; the CA and the server name
/// only say how callers check it, so they need the certificate.
pub(super) fn http_tls(
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    server_name: Option<String>,
) -> Result<Option<HttpTls>, ConfigError> {
    if let Some(name) = &server_name {
        if rustls::pki_types::ServerName::try_from(name.as_str()).is_err() {
            return Err(invalid(
                "http_tls_server_name",
                "is not a DNS name or IP address",
            ));
        }
    }
    match (cert, key) {
        (Some(cert), Some(key)) => Ok(Some(HttpTls {
            server: TlsFiles {
                cert,
                key,
                client_ca: None,
            },
            ca,
            server_name,
        })),
        (None, None) if ca.is_none() && server_name.is_none() => Ok(None),
        (None, None) => Err(invalid(
            "http_tls_ca_file",
            "and http_tls_server_name need http_tls_cert_file and http_tls_key_file",
        )),
        _ => Err(invalid(
            "http_tls_cert_file",
            "set together with http_tls_key_file (both or neither)",
        )),
    }
}

/// The keyring from `cluster_secret`. Without one, a node that joins others is refused
/// unless `insecure_cluster` says so; a node with no seeds runs alone under a random
/// secret (nobody can join it, and it needs none to talk to itself).
pub(super) fn cluster_keys(
    secrets: Option<&[String]>,
    label: Option<&str>,
    insecure: bool,
    seeds: &[String],
) -> Result<Option<Arc<ClusterKeys>>, ConfigError> {
    let secrets: Vec<String> = secrets
        .unwrap_or_default()
        .iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    match (secrets.is_empty(), insecure) {
        (false, true) => Err(invalid(
            "insecure_cluster",
            "is set together with cluster_secret; choose one",
        )),
        (true, true) => Ok(None),
        (true, false) if seeds.is_empty() => {
            tracing::info!("no cluster_secret and no gossip_join: running alone under a random cluster secret");
            Ok(Some(Arc::new(ClusterKeys::random())))
        }
        (true, false) => Err(invalid(
            "cluster_secret",
            "is required to join a cluster (gossip_join is set): every gossip packet and internal call is authenticated with it; generate one with `openssl rand -base64 32`, or set insecure_cluster: true on a private network",
        )),
        (false, false) => ClusterKeys::new(&secrets, label.unwrap_or_default())
            .map(|k| Some(Arc::new(k)))
            .map_err(|e| match e {
                KeyError::Label => invalid("cluster_label", e.to_string()),
                e => invalid("cluster_secret", e.to_string()),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::super::RawConfig;

    #[test]
    fn joining_a_cluster_needs_a_secret_unless_insecure_is_said_out_loud() {
        let seeds = Some(vec!["10.0.0.1:7946".to_owned()]);
        let joining = |secret: Option<&str>, label: Option<&str>, insecure: Option<bool>| {
            RawConfig {
                gossip_join: seeds.clone(),
                cluster_secret: secret.map(|s| vec![s.to_owned()]),
                cluster_label: label.map(str::to_owned),
                insecure_cluster: insecure,
                ..Default::default()
            }
            .validate()
        };
        let err = joining(None, None, None).expect_err("no secret");
        assert!(err.to_string().contains("cluster_secret"), "{err}");
        assert!(joining(None, None, Some(true))
            .expect("insecure")
            .cluster_keys
            .is_none());
        assert!(joining(Some("a-long-enough-secret"), Some("prod"), None)
            .expect("secret")
            .cluster_keys
            .is_some());
        let err = joining(Some("short"), None, None).expect_err("short");
        assert!(err.to_string().contains("at least 16"), "{err}");
        let err = joining(Some("a-long-enough-secret"), None, Some(true)).expect_err("both");
        assert!(err.to_string().contains("choose one"), "{err}");
        let err =
            joining(Some("a-long-enough-secret"), Some("with space"), None).expect_err("label");
        assert!(err.to_string().contains("cluster_label"), "{err}");
        // A node that joins nobody runs alone under a random secret.
        assert!(RawConfig::default()
            .validate()
            .expect("alone")
            .cluster_keys
            .is_some());
    }

    #[test]
    fn tls_files_come_all_together_or_not_at_all() {
        let err = RawConfig {
            otlp_tls_cert_file: Some("c.pem".into()),
            ..Default::default()
        }
        .validate()
        .expect_err("no key");
        assert!(err.to_string().contains("otlp_tls_cert_file"), "{err}");
        let err = RawConfig {
            internal_tls_cert_file: Some("c.pem".into()),
            internal_tls_key_file: Some("c.key".into()),
            ..Default::default()
        }
        .validate()
        .expect_err("no CA");
        assert!(err.to_string().contains("internal_tls_ca_file"), "{err}");
        let c = RawConfig {
            internal_tls_cert_file: Some("c.pem".into()),
            internal_tls_key_file: Some("c.key".into()),
            internal_tls_ca_file: Some("ca.pem".into()),
            ..Default::default()
        }
        .validate()
        .expect("all three");
        assert_eq!(
            c.internal_tls.map(|t| t.server_name),
            Some("ringtail-internal".to_owned())
        );
    }

    #[test]
    fn the_http_api_needs_its_certificate_and_key_before_anything_else_about_tls() {
        let raw = |cert: bool, key: bool, ca: bool, name: Option<&str>| RawConfig {
            http_tls_cert_file: cert.then(|| "c.pem".into()),
            http_tls_key_file: key.then(|| "c.key".into()),
            http_tls_ca_file: ca.then(|| "ca.pem".into()),
            http_tls_server_name: name.map(str::to_owned),
            ..Default::default()
        };
        assert_eq!(
            raw(false, false, false, None).http_tls().expect("off"),
            None
        );
        let err = raw(true, false, false, None)
            .http_tls()
            .expect_err("no key");
        assert!(err.to_string().contains("http_tls_cert_file"), "{err}");
        let err = raw(false, false, true, None)
            .http_tls()
            .expect_err("CA alone");
        assert!(err.to_string().contains("http_tls_ca_file"), "{err}");
        let err = raw(true, true, false, Some("not a name!"))
            .http_tls()
            .expect_err("bad name");
        assert!(err.to_string().contains("http_tls_server_name"), "{err}");
        let on = raw(true, true, true, Some("ringtail.example"))
            .validate()
            .expect("all four")
            .http_tls
            .expect("on");
        assert_eq!(on.server.cert, std::path::PathBuf::from("c.pem"));
        assert_eq!(on.ca, Some("ca.pem".into()));
        assert_eq!(on.server_name.as_deref(), Some("ringtail.example"));
    }
}
