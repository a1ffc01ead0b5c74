//! containers-registries.conf(5) v2, as podman and CRI-O users have it:
//! `[[registry]]` entries (prefix, location, insecure, blocked, mirrors),
//! `unqualified-search-registries` and `[aliases]`. Read from
//! `~/.config/containers/registries.conf` (else `/etc/containers/registries.conf`)
//! plus the `registries.conf.d/*.conf` drop-ins of both places.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reference::{self, ImageName, Parsed, DOCKER_HUB};

/// Errors reading or applying the registries configuration.
#[derive(Debug, thiserror::Error)]
pub enum RegistriesError {
    /// A file is unreadable or malformed.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The image's registry is blocked.
    #[error("{image}: registry {prefix} is blocked in registries.conf")]
    Blocked {
        /// The image.
        image: String,
        /// The blocking entry's prefix.
        prefix: String,
    },
    /// A short name with no way to qualify it.
    #[error("short name {name:?} cannot be resolved: no alias and no unqualified-search-registries in registries.conf")]
    Unresolvable {
        /// The short name.
        name: String,
    },
}

/// The merged configuration.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RegistriesConf {
    /// Registries tried, in order, for short names.
    #[serde(default)]
    pub unqualified_search_registries: Vec<String>,
    /// Per-registry settings.
    #[serde(default)]
    pub registry: Vec<RegistryEntry>,
    /// Short name → fully qualified repository.
    #[serde(default)]
    pub aliases: BTreeMap<String, String>,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RegistryEntry {
    /// The names it applies to (default: `location`).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Where the images really are.
    #[serde(default)]
    pub location: String,
    /// Plain HTTP or unverified TLS.
    #[serde(default)]
    pub insecure: bool,
    /// Refuse to pull.
    #[serde(default)]
    pub blocked: bool,
    /// Mirrors tried in order before the location.
    #[serde(default)]
    pub mirror: Vec<Mirror>,
}

/// One `[[registry.mirror]]`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Mirror {
    /// The mirror's location.
    pub location: String,
    /// Plain HTTP or unverified TLS.
    #[serde(default)]
    pub insecure: bool,
}

/// Where to try pulling one name from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The name as this endpoint serves it.
    pub name: ImageName,
    /// Plain HTTP / unverified TLS allowed.
    pub insecure: bool,
    /// A mirror (failures fall through to the next endpoint).
    pub mirror: bool,
}

impl RegistryEntry {
    fn effective_prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or(&self.location)
    }

    fn matches(&self, name: &ImageName) -> bool {
        let prefix = self.effective_prefix();
        if let Some(domain) = prefix.strip_prefix("*.") {
            return name.registry.ends_with(&format!(".{domain}"));
        }
        let repo = name.repo();
        repo == prefix || repo.starts_with(&format!("{prefix}/"))
    }
}

impl RegistriesConf {
    /// Loads the configuration for a user whose config home is `config_home`
    /// (`~/.config`).
    pub fn load(config_home: &Path) -> Result<RegistriesConf, RegistriesError> {
        let mut merged = RegistriesConf::default();
        for file in sources(config_home) {
            merged.merge(RegistriesConf::read(&file)?);
        }
        Ok(merged)
    }

    fn read(path: &Path) -> Result<RegistriesConf, RegistriesError> {
        let invalid = |reason: String| RegistriesError::Invalid {
            path: path.to_owned(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| invalid(e.to_string()))?;
        toml::from_str(&text).map_err(|e| invalid(e.to_string()))
    }

    /// Applies a later file: search registries replace, aliases merge,
    /// registry entries with the same prefix replace.
    fn merge(&mut self, later: RegistriesConf) {
        if !later.unqualified_search_registries.is_empty() {
            self.unqualified_search_registries = later.unqualified_search_registries;
        }
        self.aliases.extend(later.aliases);
        for entry in later.registry {
            self.registry
                .retain(|e| e.effective_prefix() != entry.effective_prefix());
            self.registry.push(entry);
        }
    }

    /// The most specific entry that applies to `name`.
    pub fn entry_for(&self, name: &ImageName) -> Option<&RegistryEntry> {
        self.registry
            .iter()
            .filter(|e| e.matches(name))
            .max_by_key(|e| e.effective_prefix().len())
    }

    /// The endpoints to try for `name`, mirrors first; fails when blocked.
    pub fn endpoints(&self, name: &ImageName) -> Result<Vec<Endpoint>, RegistriesError> {
        let Some(entry) = self.entry_for(name) else {
            let insecure = name.is_loopback_registry();
            return Ok(vec![Endpoint {
                name: name.clone(),
                insecure,
                mirror: false,
            }]);
        };
        if entry.blocked {
            return Err(RegistriesError::Blocked {
                image: name.to_string(),
                prefix: entry.effective_prefix().into(),
            });
        }
        let prefix = entry.effective_prefix();
        let rewrite = |location: &str| {
            if prefix.starts_with("*.") || location.is_empty() {
                Some(name.clone())
            } else {
                name.rewritten(prefix, location)
            }
        };
        let mut endpoints: Vec<Endpoint> = entry
            .mirror
            .iter()
            .filter_map(|m| {
                rewrite(&m.location).map(|n| Endpoint {
                    insecure: m.insecure,
                    mirror: true,
                    name: n,
                })
            })
            .collect();
        if let Some(n) = rewrite(&entry.location) {
            endpoints.push(Endpoint {
                insecure: entry.insecure,
                mirror: false,
                name: n,
            });
        }
        Ok(endpoints)
    }

    /// The fully qualified names a user-supplied reference may mean, in the
    /// order to try them.
    pub fn candidates(&self, input: &str) -> Result<Vec<ImageName>, CandidateError> {
        match reference::parse(input)? {
            Parsed::Qualified(name) => Ok(vec![name]),
            Parsed::Short {
                repository,
                tag,
                digest,
            } => {
                if let Some(target) = self.aliases.get(&repository) {
                    let aliased = format!("{target}{}", suffix(&tag, &digest));
                    return match reference::parse(&aliased)? {
                        Parsed::Qualified(name) => Ok(vec![name]),
                        Parsed::Short { .. } => {
                            Err(CandidateError::Registries(RegistriesError::Unresolvable {
                                name: input.into(),
                            }))
                        }
                    };
                }
                if self.unqualified_search_registries.is_empty() {
                    return Err(RegistriesError::Unresolvable { name: input.into() }.into());
                }
                Ok(self
                    .unqualified_search_registries
                    .iter()
                    .map(|r| ImageName::new(r, &repository, tag.clone(), digest.clone()))
                    .collect())
            }
        }
    }

    /// True when `input` is a short name without an alias, so its
    /// candidates come from the search registries.
    pub fn is_search(&self, input: &str) -> bool {
        matches!(reference::parse(input), Ok(Parsed::Short { repository, .. }) if !self.aliases.contains_key(&repository))
    }

    /// Candidates for looking up a local image (no registries.conf needed
    /// for Docker Hub short names, as crictl users expect).
    pub fn local_candidates(&self, input: &str) -> Vec<ImageName> {
        let mut out = self.candidates(input).unwrap_or_default();
        if let Ok(Parsed::Short {
            repository,
            tag,
            digest,
        }) = reference::parse(input)
        {
            let hub = ImageName::new(DOCKER_HUB, &repository, tag, digest);
            if !out.contains(&hub) {
                out.push(hub);
            }
        }
        out
    }
}

/// Why a reference has no candidates.
#[derive(Debug, thiserror::Error)]
pub enum CandidateError {
    /// Malformed reference.
    #[error(transparent)]
    Reference(#[from] reference::BadReference),
    /// Configuration problem.
    #[error(transparent)]
    Registries(#[from] RegistriesError),
}

fn suffix(tag: &Option<String>, digest: &Option<ucri_storage::digest::Digest>) -> String {
    let mut s = String::new();
    if let Some(t) = tag {
        s.push_str(&format!(":{t}"));
    }
    if let Some(d) = digest {
        s.push_str(&format!("@{d}"));
    }
    s
}

/// The files [`RegistriesConf::load`] reads, in order: the user's main file
/// (else the system's), then the drop-ins of both places.
fn sources(config_home: &Path) -> Vec<PathBuf> {
    let user = config_home.join("containers/registries.conf");
    let system = PathBuf::from("/etc/containers/registries.conf");
    let main = if user.exists() { user } else { system };
    let mut files: Vec<PathBuf> = main.exists().then_some(main).into_iter().collect();
    for dir in dropin_dirs(config_home) {
        files.extend(dropins(&dir));
    }
    files
}

fn dropin_dirs(config_home: &Path) -> [PathBuf; 2] {
    [
        PathBuf::from("/etc/containers/registries.conf.d"),
        config_home.join("containers/registries.conf.d"),
    ]
}

/// What a path looked like: its inode, size and change time, or nothing.
type Stamp = Option<(u64, u64, i64, i64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .ok()
        .map(|m| (m.ino(), m.size(), m.ctime(), m.ctime_nsec()))
}

/// Stamps of everything that decides the configuration: both main files,
/// both drop-in directories (a file added or removed changes them) and
/// each drop-in.
fn stamps(config_home: &Path) -> Vec<(PathBuf, Stamp)> {
    let mut paths = vec![
        config_home.join("containers/registries.conf"),
        PathBuf::from("/etc/containers/registries.conf"),
    ];
    for dir in dropin_dirs(config_home) {
        paths.extend(dropins(&dir));
        paths.push(dir);
    }
    paths
        .into_iter()
        .map(|p| {
            let s = stamp(&p);
            (p, s)
        })
        .collect()
}

/// The last configuration read, kept while none of its files changed: an
/// ImageStatus or CreateContainer then reads metadata, not TOML (podman
/// reads the files at every command; a daemon answers many calls).
#[derive(Debug, Default)]
pub struct RegistriesCache {
    last: std::sync::Mutex<Option<Cached>>,
}

/// The stamps a configuration was read under, and what was read.
type Cached = (Vec<(PathBuf, Stamp)>, std::sync::Arc<RegistriesConf>);

impl RegistriesCache {
    /// The configuration for `config_home`, read again when a file changed.
    pub fn load(
        &self,
        config_home: &Path,
    ) -> Result<std::sync::Arc<RegistriesConf>, RegistriesError> {
        let now = stamps(config_home);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((seen, conf)) = last.as_ref() {
            if *seen == now {
                return Ok(conf.clone());
            }
        }
        let conf = std::sync::Arc::new(RegistriesConf::load(config_home)?);
        *last = Some((now, conf.clone()));
        Ok(conf)
    }
}

fn dropins(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_rereads_only_when_a_file_changes() {
        let home = tempfile::tempdir().expect("tmp");
        let dir = home.path().join("containers");
        std::fs::create_dir_all(&dir).expect("mkdir");
        let main = dir.join("registries.conf");
        std::fs::write(&main, "unqualified-search-registries = [\"a.example\"]\n").expect("write");
        let cache = RegistriesCache::default();
        let first = cache.load(home.path()).expect("load");
        let again = cache.load(home.path()).expect("load");
        assert!(
            std::sync::Arc::ptr_eq(&first, &again),
            "unchanged: the same parse"
        );
        assert_eq!(first.unqualified_search_registries, ["a.example"]);
        // Another size: a same-size edit within one tick of the coarse
        // clock would keep the stamp (editors take longer than a tick).
        std::fs::write(&main, "unqualified-search-registries = [\"bb.example\"]\n").expect("edit");
        let edited = cache.load(home.path()).expect("load");
        assert_eq!(edited.unqualified_search_registries, ["bb.example"]);
        let dropins = dir.join("registries.conf.d");
        std::fs::create_dir_all(&dropins).expect("mkdir");
        std::fs::write(
            dropins.join("10-c.conf"),
            "unqualified-search-registries = [\"c.example\"]\n",
        )
        .expect("drop-in");
        let with_dropin = cache.load(home.path()).expect("load");
        assert_eq!(with_dropin.unqualified_search_registries, ["c.example"]);
        std::fs::write(&main, "not toml [").expect("break");
        assert!(
            cache.load(home.path()).is_err(),
            "a broken file is an error, not the old parse"
        );
    }

    const CONF: &str = r#"
unqualified-search-registries = ["127.0.0.1:5000", "docker.io"]

[aliases]
"busybox" = "docker.io/library/busybox"

[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"
[[registry.mirror]]
location = "127.0.0.1:5001/hub"
insecure = true

[[registry]]
location = "evil.example.com"
blocked = true

[[registry]]
prefix = "internal.example/team"
location = "127.0.0.1:5002/team"
insecure = true
"#;

    fn conf() -> RegistriesConf {
        toml::from_str(CONF).expect("parse")
    }

    fn name(s: &str) -> ImageName {
        match reference::parse(s).expect("parse") {
            Parsed::Qualified(n) => n,
            _ => panic!("short"),
        }
    }

    #[test]
    fn mirrors_come_before_the_location() {
        let eps = conf()
            .endpoints(&name("docker.io/library/busybox:1"))
            .expect("endpoints");
        let names: Vec<String> = eps.iter().map(|e| e.name.to_string()).collect();
        assert_eq!(
            names,
            vec![
                "127.0.0.1:5001/hub/busybox:1",
                "docker.io/library/busybox:1"
            ]
        );
        assert!(eps[0].mirror && eps[0].insecure && !eps[1].insecure);
    }

    #[test]
    fn location_rewrites_and_blocking() {
        let eps = conf()
            .endpoints(&name("internal.example/team/app:2"))
            .expect("endpoints");
        assert_eq!(eps[0].name.to_string(), "127.0.0.1:5002/team/app:2");
        let err = conf()
            .endpoints(&name("evil.example.com/x"))
            .expect_err("blocked");
        assert!(matches!(err, RegistriesError::Blocked { .. }));
        let plain = conf()
            .endpoints(&name("localhost:5000/x"))
            .expect("default");
        assert!(
            plain[0].insecure,
            "loopback registries are plain HTTP by default"
        );
    }

    #[test]
    fn short_names_use_aliases_then_search_registries() {
        let c = conf();
        let via_alias = c.candidates("busybox:1.36").expect("alias");
        assert_eq!(via_alias.len(), 1);
        assert_eq!(via_alias[0].to_string(), "docker.io/library/busybox:1.36");
        let searched = c.candidates("tools/app").expect("search");
        let names: Vec<String> = searched.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            vec![
                "127.0.0.1:5000/tools/app:latest",
                "docker.io/tools/app:latest"
            ]
        );
        let none = RegistriesConf::default().candidates("app");
        assert!(matches!(
            none,
            Err(CandidateError::Registries(
                RegistriesError::Unresolvable { .. }
            ))
        ));
    }

    #[test]
    fn later_files_override() {
        let mut a = conf();
        let b: RegistriesConf = toml::from_str(
            "unqualified-search-registries = [\"quay.io\"]\n[[registry]]\nlocation = \"evil.example.com\"\n",
        )
        .expect("parse");
        a.merge(b);
        assert_eq!(a.unqualified_search_registries, vec!["quay.io"]);
        assert!(
            a.endpoints(&name("evil.example.com/x")).is_ok(),
            "unblocked by the drop-in"
        );
    }

    mod properties {
        //! Fuzzing by properties: any registries.conf text is read or
        //! refused, and any image string resolves or is refused, without a
        //! panic.
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_text_is_read_or_refused(text in "(\\PC|\n){0,200}") {
                let _ = toml::from_str::<RegistriesConf>(&text);
            }

            #[test]
            fn any_image_string_resolves_or_is_refused(input in "\\PC{0,60}") {
                let conf: RegistriesConf = toml::from_str(CONF).expect("parse");
                if let Ok(names) = conf.candidates(&input) {
                    for name in names {
                        let _ = conf.endpoints(&name);
                    }
                }
                let _ = conf.local_candidates(&input);
            }
        }
    }
}
