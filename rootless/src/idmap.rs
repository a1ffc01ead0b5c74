//! Writing the uid/gid maps of a new user namespace.
//!
//! With subordinate ranges the setuid helpers `newuidmap`/`newgidmap` write the
//! maps (container 0 = the user, 1..N = the ranges). Without ranges the parent
//! writes a single-id map itself, which the kernel allows for its own ids.

use std::path::PathBuf;
use std::process::Command;

use crate::subid::IdRange;

/// How ids inside the user namespace map to the host.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MapPlan {
    /// Host uid that becomes root inside.
    pub uid: u32,
    /// Host gid that becomes root's group inside.
    pub gid: u32,
    /// Subordinate uid ranges mapped from id 1 on (empty: single-id map).
    pub uid_ranges: Vec<IdRange>,
    /// Subordinate gid ranges mapped from id 1 on (empty: single-id map).
    pub gid_ranges: Vec<IdRange>,
}

/// Errors writing id maps.
#[derive(Debug, thiserror::Error)]
pub enum IdMapError {
    /// The helper program is not installed.
    #[error("{program} not found: install it (Debian/Ubuntu: `apt-get install uidmap`)")]
    MissingHelper {
        /// newuidmap or newgidmap.
        program: &'static str,
    },
    /// The helper ran and failed.
    #[error("{program} {args} failed ({status}): {stderr}")]
    HelperFailed {
        /// newuidmap or newgidmap.
        program: &'static str,
        /// Its arguments.
        args: String,
        /// Exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Writing a /proc map file failed.
    #[error("writing {path}: {source}")]
    Write {
        /// The /proc file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl MapPlan {
    /// True when the plan maps only the user's own ids (no subordinate ranges).
    pub fn is_single_id(&self) -> bool {
        self.uid_ranges.is_empty() || self.gid_ranges.is_empty()
    }

    /// The `inside outside count` triples for uids.
    pub fn uid_lines(&self) -> Vec<[u32; 3]> {
        map_lines(self.uid, &self.uid_ranges, self.is_single_id())
    }

    /// The `inside outside count` triples for gids.
    pub fn gid_lines(&self) -> Vec<[u32; 3]> {
        map_lines(self.gid, &self.gid_ranges, self.is_single_id())
    }

    /// Writes both maps for the process `pid`, which must be waiting in its
    /// fresh user namespace.
    pub fn apply(&self, pid: u32) -> Result<(), IdMapError> {
        if self.is_single_id() {
            write_single(pid, "uid_map", &self.uid_lines())?;
            write_proc(pid, "setgroups", "deny")?;
            write_single(pid, "gid_map", &self.gid_lines())
        } else {
            run_helper("newuidmap", pid, &self.uid_lines())?;
            run_helper("newgidmap", pid, &self.gid_lines())
        }
    }
}

fn map_lines(own: u32, ranges: &[IdRange], single: bool) -> Vec<[u32; 3]> {
    let mut lines = vec![[0, own, 1]];
    if single {
        return lines;
    }
    let mut next_inside = 1u32;
    for r in ranges {
        lines.push([next_inside, r.start, r.count]);
        next_inside = next_inside.saturating_add(r.count);
    }
    lines
}

fn write_single(pid: u32, file: &str, lines: &[[u32; 3]]) -> Result<(), IdMapError> {
    let text: String = lines
        .iter()
        .map(|[a, b, c]| format!("{a} {b} {c}\n"))
        .collect();
    write_proc(pid, file, &text)
}

fn write_proc(pid: u32, file: &str, text: &str) -> Result<(), IdMapError> {
    let path = PathBuf::from(format!("/proc/{pid}/{file}"));
    std::fs::write(&path, text).map_err(|source| IdMapError::Write { path, source })
}

fn run_helper(program: &'static str, pid: u32, lines: &[[u32; 3]]) -> Result<(), IdMapError> {
    let binary = crate::which(program).ok_or(IdMapError::MissingHelper { program })?;
    let mut args = vec![pid.to_string()];
    args.extend(lines.iter().flatten().map(u32::to_string));
    let output = Command::new(binary)
        .args(&args)
        .output()
        .map_err(|_| IdMapError::MissingHelper { program })?;
    if output.status.success() {
        return Ok(());
    }
    Err(IdMapError::HelperFailed {
        program,
        args: args.join(" "),
        status: output.status,
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(uid_ranges: Vec<IdRange>, gid_ranges: Vec<IdRange>) -> MapPlan {
        MapPlan {
            uid: 1000,
            gid: 1001,
            uid_ranges,
            gid_ranges,
        }
    }

    #[test]
    fn ranges_follow_root_consecutively() {
        let p = plan(
            vec![
                IdRange {
                    start: 100000,
                    count: 65536,
                },
                IdRange {
                    start: 300000,
                    count: 10,
                },
            ],
            vec![IdRange {
                start: 200000,
                count: 5,
            }],
        );
        assert_eq!(
            p.uid_lines(),
            vec![[0, 1000, 1], [1, 100000, 65536], [65537, 300000, 10]]
        );
        assert_eq!(p.gid_lines(), vec![[0, 1001, 1], [1, 200000, 5]]);
        assert!(!p.is_single_id());
    }

    #[test]
    fn a_missing_side_falls_back_to_single_ids_for_both() {
        let p = plan(
            vec![IdRange {
                start: 100000,
                count: 65536,
            }],
            vec![],
        );
        assert!(p.is_single_id());
        assert_eq!(p.uid_lines(), vec![[0, 1000, 1]]);
        assert_eq!(p.gid_lines(), vec![[0, 1001, 1]]);
    }
}
