//! Image names: `[registry/]repository[:tag][@digest]`, normalized as the
//! docker reference grammar does (`busybox` is a short name; `docker.io`
//! single-component repositories live under `library/`).

use std::fmt;

use ucri_storage::digest::Digest;

/// The default registry for names that resolve through Docker Hub.
pub const DOCKER_HUB: &str = "docker.io";

/// A fully qualified image name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageName {
    /// Registry host[:port].
    pub registry: String,
    /// Repository path.
    pub repository: String,
    /// Tag, when not pinned by digest alone.
    pub tag: Option<String>,
    /// Digest, when pinned.
    pub digest: Option<Digest>,
}

/// What a user-supplied image string is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// It names its registry.
    Qualified(ImageName),
    /// A short name (`busybox`, `library/busybox:1.36`): the registry comes
    /// from aliases or the search registries.
    Short {
        /// The repository part.
        repository: String,
        /// Its tag.
        tag: Option<String>,
        /// Its digest.
        digest: Option<Digest>,
    },
}

/// A malformed image reference.
#[derive(Debug, thiserror::Error)]
#[error("invalid image reference {input:?}: {reason}")]
pub struct BadReference {
    /// What was given.
    pub input: String,
    /// What is wrong.
    pub reason: String,
}

/// Parses an image reference.
pub fn parse(input: &str) -> Result<Parsed, BadReference> {
    let bad = |reason: &str| BadReference {
        input: input.into(),
        reason: reason.into(),
    };
    if input.is_empty() {
        return Err(bad("empty"));
    }
    let (rest, digest) = match input.split_once('@') {
        Some((r, d)) => (
            r,
            Some(d.parse::<Digest>().map_err(|e| bad(&e.to_string()))?),
        ),
        None => (input, None),
    };
    let (name, tag) = split_tag(rest);
    validate_tag(tag).map_err(bad)?;
    let (registry, repository) = split_registry(name);
    validate_repository(repository).map_err(bad)?;
    let tag = tag.map(str::to_owned);
    Ok(match registry {
        Some(registry) => Parsed::Qualified(ImageName::new(registry, repository, tag, digest)),
        None => Parsed::Short {
            repository: repository.into(),
            tag,
            digest,
        },
    })
}

/// A tag is after the last `:` that follows the last `/`.
fn split_tag(s: &str) -> (&str, Option<&str>) {
    let slash = s.rfind('/').map(|i| i + 1).unwrap_or(0);
    match s[slash..].rfind(':') {
        Some(i) => (&s[..slash + i], Some(&s[slash + i + 1..])),
        None => (s, None),
    }
}

fn split_registry(name: &str) -> (Option<&str>, &str) {
    match name.split_once('/') {
        Some((first, rest))
            if first.contains('.') || first.contains(':') || first == "localhost" =>
        {
            (Some(first), rest)
        }
        _ => (None, name),
    }
}

fn validate_tag(tag: Option<&str>) -> Result<(), &'static str> {
    match tag {
        Some(t) if t.is_empty() || t.len() > 128 => Err("bad tag length"),
        Some(t)
            if !t
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) =>
        {
            Err("tags may only hold letters, digits, '.', '_' and '-'")
        }
        _ => Ok(()),
    }
}

fn validate_repository(repo: &str) -> Result<(), &'static str> {
    let ok_char = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-/".contains(&b);
    if repo.is_empty() || repo.starts_with('/') || repo.ends_with('/') || repo.contains("//") {
        Err("bad repository path")
    } else if !repo.bytes().all(ok_char) {
        Err("repositories are lowercase letters, digits and '._-/'")
    } else {
        Ok(())
    }
}

impl ImageName {
    /// Builds a name, adding `library/` for Docker Hub official images and
    /// `latest` when neither tag nor digest is given.
    pub fn new(
        registry: &str,
        repository: &str,
        tag: Option<String>,
        digest: Option<Digest>,
    ) -> ImageName {
        let registry = match registry {
            "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB,
            r => r,
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository.to_owned()
        };
        let tag = tag.or_else(|| digest.is_none().then(|| "latest".to_owned()));
        ImageName {
            registry: registry.into(),
            repository,
            tag,
            digest,
        }
    }

    /// `registry/repository`.
    pub fn repo(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// `registry/repository:tag`, when tagged.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.repo()))
    }

    /// `registry/repository@digest` for `digest`.
    pub fn with_digest(&self, digest: &Digest) -> String {
        format!("{}@{digest}", self.repo())
    }

    /// True for registries that are plain HTTP by default, as Docker treats
    /// loopback (the kind local-registry pattern).
    pub fn is_loopback_registry(&self) -> bool {
        let host = self
            .registry
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(&self.registry);
        host == "localhost" || host.starts_with("127.") || host == "[::1]"
    }

    /// The same name with `repo()` rewritten from `prefix` to `location`.
    pub fn rewritten(&self, prefix: &str, location: &str) -> Option<ImageName> {
        let repo = self.repo();
        let rest = repo.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        let new_repo = format!("{location}{rest}");
        let (registry, repository) = new_repo.split_once('/')?;
        Some(ImageName {
            registry: registry.into(),
            repository: repository.into(),
            tag: self.tag.clone(),
            digest: self.digest.clone(),
        })
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.repo())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qualified(s: &str) -> ImageName {
        match parse(s).expect("parse") {
            Parsed::Qualified(n) => n,
            other => panic!("not qualified: {other:?}"),
        }
    }

    #[test]
    fn qualified_names_normalize() {
        let n = qualified("docker.io/busybox");
        assert_eq!(n.to_string(), "docker.io/library/busybox:latest");
        let n = qualified("localhost:5000/a/b:v1");
        assert_eq!(
            (n.registry.as_str(), n.repository.as_str(), n.tag.as_deref()),
            ("localhost:5000", "a/b", Some("v1"))
        );
        assert!(n.is_loopback_registry());
        let d = format!("sha256:{}", "a".repeat(64));
        let n = qualified(&format!("127.0.0.1:5000/x@{d}"));
        assert_eq!(n.tag, None);
        assert_eq!(n.digest.expect("digest").to_string(), d);
        assert!(!qualified("quay.io/x").is_loopback_registry());
    }

    #[test]
    fn short_names_stay_short() {
        assert_eq!(
            parse("busybox:1.36").expect("parse"),
            Parsed::Short {
                repository: "busybox".into(),
                tag: Some("1.36".into()),
                digest: None
            }
        );
        assert!(matches!(
            parse("library/busybox").expect("parse"),
            Parsed::Short { .. }
        ));
    }

    #[test]
    fn bad_references_are_rejected() {
        for bad in ["", "UPPER/case", "a//b", "x:", "x@sha256:12", "x:t@g"] {
            assert!(parse(bad).is_err(), "{bad} should fail");
        }
    }

    #[test]
    fn rewriting_by_prefix() {
        let n = qualified("docker.io/library/busybox:1");
        let m = n
            .rewritten("docker.io/library", "127.0.0.1:5000/mirror")
            .expect("rewrite");
        assert_eq!(m.to_string(), "127.0.0.1:5000/mirror/busybox:1");
        assert!(n.rewritten("quay.io", "x").is_none());
        assert!(
            n.rewritten("docker.io/lib", "x").is_none(),
            "prefixes end at a path boundary"
        );
    }

    mod properties {
        //! Fuzzing by properties: any text parses or is refused without a
        //! panic, and a qualified name parses back to itself.
        use super::*;
        use proptest::prelude::*;

        fn reference() -> impl Strategy<Value = String> {
            let registry = "[a-z0-9]{1,8}\\.[a-z]{2,4}(:[1-9][0-9]{0,3})?";
            let repository = "[a-z0-9]{1,8}(/[a-z0-9._-]{1,8}){0,3}";
            let tag = proptest::option::of("[A-Za-z0-9_][A-Za-z0-9._-]{0,20}");
            let digest = proptest::option::of("[0-9a-f]{64}");
            (registry, repository, tag, digest).prop_map(|(r, p, t, d)| {
                let mut s = format!("{r}/{p}");
                if let Some(t) = t {
                    s.push_str(&format!(":{t}"));
                }
                if let Some(d) = d {
                    s.push_str(&format!("@sha256:{d}"));
                }
                s
            })
        }

        proptest! {
            #[test]
            fn any_text_parses_or_is_refused(input in "\\PC{0,80}") {
                let _ = parse(&input);
            }

            #[test]
            fn qualified_names_parse_back_to_themselves(input in reference()) {
                let Ok(Parsed::Qualified(name)) = parse(&input) else {
                    return Err(TestCaseError::fail(format!("{input} should parse as qualified")));
                };
                prop_assert_eq!(parse(&name.to_string()).expect("again"), Parsed::Qualified(name));
            }
        }
    }
}
