//! Registry credentials: the CRI `AuthConfig` first, then the auth files
//! podman and docker users already have (`REGISTRY_AUTH_FILE`,
//! `$XDG_RUNTIME_DIR/containers/auth.json`, `~/.config/containers/auth.json`,
//! `~/.docker/config.json`).

use std::path::{Path, PathBuf};

use base64::Engine;
use oci_client::secrets::RegistryAuth;

use super::reference::{ImageName, DOCKER_HUB};

/// Credentials a pull request carried (the CRI `AuthConfig`).
#[derive(Debug, Clone, Default)]
pub struct RequestAuth {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// base64 `user:password`.
    pub auth: String,
    /// The registry these are for (empty: the image's registry).
    pub server_address: String,
    /// An identity token (sent as the password of user `<token>`, as docker does).
    pub identity_token: String,
    /// A bearer token for the registry.
    pub registry_token: String,
}

/// Where the auth files are.
#[derive(Debug, Clone)]
pub struct AuthFiles {
    files: Vec<PathBuf>,
}

impl AuthFiles {
    /// The standard files for a user with home `home`, in lookup order.
    pub fn standard(home: &Path) -> AuthFiles {
        let mut files = Vec::new();
        if let Some(f) = std::env::var_os("REGISTRY_AUTH_FILE") {
            files.push(PathBuf::from(f));
        }
        if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR") {
            files.push(Path::new(&run).join("containers/auth.json"));
        }
        files.push(home.join(".config/containers/auth.json"));
        files.push(home.join(".docker/config.json"));
        AuthFiles { files }
    }

    /// The credentials for `name`: most specific key first
    /// (`registry/repo/path`, …, `registry`), file by file.
    pub fn lookup(&self, name: &ImageName) -> Option<(String, String)> {
        let keys = lookup_keys(name);
        self.files.iter().find_map(|f| lookup_in_file(f, &keys))
    }
}

fn lookup_keys(name: &ImageName) -> Vec<String> {
    let mut keys = Vec::new();
    let mut path = name.repo();
    loop {
        keys.push(path.clone());
        match path.rfind('/') {
            Some(i) => path.truncate(i),
            None => break,
        }
    }
    keys.push(format!("https://{}", name.registry));
    keys.push(format!("http://{}", name.registry));
    if name.registry == DOCKER_HUB {
        keys.push("https://index.docker.io/v1/".into());
        keys.push("index.docker.io".into());
    }
    keys
}

fn lookup_in_file(file: &Path, keys: &[String]) -> Option<(String, String)> {
    let text = std::fs::read(file).ok()?;
    let json: serde_json::Value = match serde_json::from_slice(&text) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(file = %file.display(), %e, "ignoring an unreadable auth file");
            return None;
        }
    };
    let auths = json.get("auths")?.as_object()?;
    keys.iter().find_map(|k| {
        let entry = auths.get(k).or_else(|| auths.get(&format!("{k}/")))?;
        decode_basic(entry.get("auth")?.as_str()?)
    })
}

/// Decodes a base64 `user:password`.
pub fn decode_basic(auth: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

/// The credentials to use for `endpoint`: the request's when they are for
/// this registry, else the auth files', else anonymous.
pub fn resolve(
    request: Option<&RequestAuth>,
    files: &AuthFiles,
    endpoint: &ImageName,
) -> RegistryAuth {
    if let Some(auth) = request.and_then(|r| from_request(r, endpoint)) {
        return auth;
    }
    match files.lookup(endpoint) {
        Some((user, pass)) => RegistryAuth::Basic(user, pass),
        None => RegistryAuth::Anonymous,
    }
}

fn from_request(r: &RequestAuth, endpoint: &ImageName) -> Option<RegistryAuth> {
    let server = r
        .server_address
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let server = server.trim_end_matches('/');
    if !server.is_empty() && server != endpoint.registry && !endpoint.repo().starts_with(server) {
        return None;
    }
    if !r.registry_token.is_empty() {
        return Some(RegistryAuth::Bearer(r.registry_token.clone()));
    }
    if !r.identity_token.is_empty() {
        return Some(RegistryAuth::Basic(
            "<token>".into(),
            r.identity_token.clone(),
        ));
    }
    if !r.username.is_empty() {
        return Some(RegistryAuth::Basic(r.username.clone(), r.password.clone()));
    }
    if !r.auth.is_empty() {
        return decode_basic(&r.auth).map(|(u, p)| RegistryAuth::Basic(u, p));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::reference::{parse, Parsed};

    fn name(s: &str) -> ImageName {
        match parse(s).expect("parse") {
            Parsed::Qualified(n) => n,
            _ => panic!("short"),
        }
    }

    fn basic(a: &RegistryAuth) -> Option<(&str, &str)> {
        match a {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        }
    }

    #[test]
    fn most_specific_file_entry_wins() {
        let dir = tempfile::tempdir().expect("tmp");
        let file = dir.path().join("auth.json");
        let enc = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let json = serde_json::json!({"auths": {
            "127.0.0.1:5000": {"auth": enc("all:one")},
            "127.0.0.1:5000/team": {"auth": enc("team:two")},
            "https://index.docker.io/v1/": {"auth": enc("hub:three")},
        }});
        std::fs::write(&file, json.to_string()).expect("write");
        let files = AuthFiles { files: vec![file] };
        let a = resolve(None, &files, &name("127.0.0.1:5000/team/app"));
        assert_eq!(basic(&a), Some(("team", "two")));
        let a = resolve(None, &files, &name("127.0.0.1:5000/other"));
        assert_eq!(basic(&a), Some(("all", "one")));
        let a = resolve(None, &files, &name("docker.io/busybox"));
        assert_eq!(basic(&a), Some(("hub", "three")));
        assert!(matches!(
            resolve(None, &files, &name("quay.io/x")),
            RegistryAuth::Anonymous
        ));
    }

    #[test]
    fn request_credentials_come_first_for_their_registry() {
        let files = AuthFiles { files: vec![] };
        let req = RequestAuth {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p"),
            ..Default::default()
        };
        assert_eq!(
            basic(&resolve(Some(&req), &files, &name("quay.io/x"))),
            Some(("u", "p"))
        );
        let other = RequestAuth {
            username: "a".into(),
            password: "b".into(),
            server_address: "https://quay.io".into(),
            ..Default::default()
        };
        assert!(matches!(
            resolve(Some(&other), &files, &name("ghcr.io/x")),
            RegistryAuth::Anonymous
        ));
    }
}
