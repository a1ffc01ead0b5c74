//! Running an external program whose failure is an error of its own: the
//! exit status and stderr stay in it.

use std::process::Command;

/// An external program that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The program could not be started or waited for.
    #[error("{what}: running {program}: {source}")]
    Spawn {
        /// What was being done.
        what: String,
        /// The program.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The program ran and failed.
    #[error("{what} failed ({status}): {stderr}")]
    Failed {
        /// What was being done.
        what: String,
        /// The program.
        program: String,
        /// Its exit status.
        status: String,
        /// Its stderr, trimmed.
        stderr: String,
    },
}

/// Runs `cmd` to its end: an error unless it exits with status 0.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<(), CommandError> {
    let program = format!("{:?}", cmd.get_program());
    let out = cmd.output().map_err(|source| CommandError::Spawn {
        what: what.to_owned(),
        program: program.clone(),
        source,
    })?;
    if out.status.success() {
        return Ok(());
    }
    Err(CommandError::Failed {
        what: what.to_owned(),
        program,
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_keeps_its_status_and_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo boom >&2; exit 3"]);
        match run_checked(&mut cmd, "testing") {
            Err(CommandError::Failed { status, stderr, .. }) => {
                assert!(status.contains('3'), "{status}");
                assert_eq!(stderr, "boom");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        let missing = run_checked(&mut Command::new("/nonexistent/program"), "testing");
        assert!(
            matches!(missing, Err(CommandError::Spawn { .. })),
            "{missing:?}"
        );
        run_checked(&mut Command::new("true"), "testing").expect("true succeeds");
    }
}
