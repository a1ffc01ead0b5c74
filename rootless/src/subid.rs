//! Subordinate ID ranges from `/etc/subuid` and `/etc/subgid`.
//!
//! The format (subuid(5)) is one `owner:start:count` per line, where the owner
//! is a user name or a numeric uid; a user may own several ranges.

use std::path::{Path, PathBuf};

/// The default subordinate uid file.
pub const SUBUID_FILE: &str = "/etc/subuid";
/// The default subordinate gid file.
pub const SUBGID_FILE: &str = "/etc/subgid";

/// A contiguous range of subordinate ids on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdRange {
    /// First host id of the range.
    pub start: u32,
    /// Number of ids in the range.
    pub count: u32,
}

/// Errors reading a subordinate id file.
#[derive(Debug, thiserror::Error)]
pub enum SubIdError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Returns the ranges `file` grants to the user named `name` with id `id`.
///
/// A missing file means no ranges. Malformed lines are skipped with a
/// warning, as shadow-utils does.
pub fn ranges_for(file: &Path, name: &str, id: u32) -> Result<Vec<IdRange>, SubIdError> {
    match std::fs::read_to_string(file) {
        Ok(text) => Ok(parse_ranges(&text, name, id)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(SubIdError::Read {
            path: file.to_owned(),
            source,
        }),
    }
}

/// Parses subuid(5) text, keeping the ranges owned by `name` or by `id`.
pub fn parse_ranges(text: &str, name: &str, id: u32) -> Vec<IdRange> {
    let id_text = id.to_string();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let owner = fields.next()?;
            if owner != name && owner != id_text {
                return None;
            }
            let range = parse_range(fields.next(), fields.next());
            if range.is_none() {
                tracing::warn!(line, "ignoring malformed subordinate id entry");
            }
            range
        })
        .collect()
}

fn parse_range(start: Option<&str>, count: Option<&str>) -> Option<IdRange> {
    let start = start?.trim().parse().ok()?;
    let count: u32 = count?.trim().parse().ok()?;
    (count > 0).then_some(IdRange { start, count })
}

/// Total number of ids in `ranges`.
pub fn total(ranges: &[IdRange]) -> u64 {
    ranges.iter().map(|r| u64::from(r.count)).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
# comment
alice:100000:65536
1000:300000:1000
bob:165536:65536
alice:500000:10
broken:line
alice:x:5
alice:7:0
";

    #[test]
    fn finds_ranges_by_name_and_uid_in_order() {
        let r = parse_ranges(SAMPLE, "alice", 1000);
        assert_eq!(
            r,
            vec![
                IdRange {
                    start: 100000,
                    count: 65536
                },
                IdRange {
                    start: 300000,
                    count: 1000
                },
                IdRange {
                    start: 500000,
                    count: 10
                },
            ]
        );
        assert_eq!(total(&r), 66546);
    }

    #[test]
    fn unknown_user_has_no_ranges() {
        assert!(parse_ranges(SAMPLE, "carol", 4242).is_empty());
    }

    #[test]
    fn missing_file_is_empty() {
        let r = ranges_for(Path::new("/nonexistent/subuid"), "a", 1).expect("no error");
        assert!(r.is_empty());
    }
}
