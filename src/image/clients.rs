//! The registry clients pulls share (see [`RegistryClients`]).

use std::collections::HashMap;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Client;
use ucri_storage::digest::Digest;

use super::registries::Endpoint;

/// The registry clients kept from pull to pull. Building one loads the
/// system's CA roots (milliseconds, twice for an insecure endpoint that is
/// tried over HTTPS first), and a kept client keeps its connections open
/// for the next pull instead of closing them as this one ends. An OCI
/// client caches the tokens its credentials earned, so it is kept per
/// registry, scheme and credentials (by digest): another pull's
/// credentials never reach its tokens.
#[derive(Default)]
pub struct RegistryClients {
    oci: std::sync::Mutex<HashMap<ClientKey, Client>>,
    /// The manifest clients, by `insecure` (they hold no credentials).
    http: std::sync::Mutex<HashMap<bool, reqwest::Client>>,
    /// The scheme each insecure registry answered on, tried first next time.
    schemes: std::sync::Mutex<HashMap<String, &'static str>>,
}

/// At most this many OCI clients are kept (one per registry and set of
/// credentials); past it they are all dropped and built again as needed.
const KEPT_CLIENTS_MAX: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ClientKey {
    registry: String,
    scheme: &'static str,
    insecure: bool,
    credentials: String,
}

impl std::fmt::Debug for RegistryClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kept = self.oci.lock().map(|m| m.len()).unwrap_or_default();
        f.debug_struct("RegistryClients")
            .field("kept", &kept)
            .finish()
    }
}

impl RegistryClients {
    /// The OCI client for `endpoint` with `auth` over `protocol`.
    pub fn oci(
        &self,
        endpoint: &Endpoint,
        auth: &RegistryAuth,
        protocol: &ClientProtocol,
        scheme: &'static str,
    ) -> Client {
        let credentials = match auth {
            RegistryAuth::Anonymous => String::new(),
            RegistryAuth::Basic(user, password) => {
                Digest::of(format!("basic\0{user}\0{password}").as_bytes()).to_string()
            }
            RegistryAuth::Bearer(token) => {
                Digest::of(format!("bearer\0{token}").as_bytes()).to_string()
            }
        };
        let key = ClientKey {
            registry: endpoint.name.registry.clone(),
            scheme,
            insecure: endpoint.insecure,
            credentials,
        };
        let mut kept = self.oci.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = kept.get(&key) {
            return client.clone();
        }
        if kept.len() >= KEPT_CLIENTS_MAX {
            kept.clear();
        }
        let client = make_client(protocol.clone(), endpoint.insecure);
        kept.insert(key, client.clone());
        client
    }

    /// The manifest client for `insecure` endpoints or the others.
    pub fn http(&self, insecure: bool) -> Result<reqwest::Client, reqwest::Error> {
        let mut kept = self.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = kept.get(&insecure) {
            return Ok(client.clone());
        }
        let client = make_http_client(insecure)?;
        kept.insert(insecure, client.clone());
        Ok(client)
    }

    /// The scheme `registry` answered on last.
    pub fn answered_on(&self, registry: &str) -> Option<&'static str> {
        let schemes = self.schemes.lock().unwrap_or_else(|p| p.into_inner());
        schemes.get(registry).copied()
    }

    /// Remembers that `registry` answered on `scheme`.
    pub fn remember_scheme(&self, registry: &str, scheme: &'static str) {
        let mut schemes = self.schemes.lock().unwrap_or_else(|p| p.into_inner());
        if schemes.len() >= KEPT_CLIENTS_MAX {
            schemes.clear();
        }
        schemes.insert(registry.to_owned(), scheme);
    }
}

fn make_http_client(insecure: bool) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .build()
}

fn make_client(protocol: ClientProtocol, insecure: bool) -> Client {
    Client::new(ClientConfig {
        protocol,
        accept_invalid_certificates: insecure,
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..Default::default()
    })
}
