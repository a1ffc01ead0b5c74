//! The typed handshake between the ucri parent on the host and the processes
//! it starts inside the user namespace: newline-delimited JSON over pipes.
//!
//! Reads go a byte at a time so that no message is buffered past its newline:
//! the same pipe is read before and after `execve`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{OwnedFd, RawFd};

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Longest message accepted, so a confused peer cannot make us allocate without bound.
const MAX_MESSAGE: usize = 1 << 20;

/// Messages the holder sends to the parent.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum HolderMsg {
    /// The new user and mount namespaces exist; the parent may write id maps.
    Unshared,
    /// The mount namespace is prepared; the holder now only waits.
    Ready,
    /// The holder could not prepare its namespaces.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// Messages the parent sends to the holder.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ParentMsg {
    /// The id maps are written.
    MapsWritten,
    /// Writing the maps failed; the holder must exit.
    Abort {
        /// Why.
        reason: String,
    },
    /// Start serving (sent to the daemon child) with the daemon's settings.
    Start {
        /// The effective configuration, opaque to this crate.
        payload: serde_json::Value,
    },
}

/// Messages the daemon child sends to the parent.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChildMsg {
    /// The CRI server is accepting connections.
    Serving,
    /// Start-up failed.
    Failed {
        /// What went wrong.
        error: String,
    },
}

/// Errors of the handshake.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The pipe failed.
    #[error("handshake pipe: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the pipe before sending a message.
    #[error("the other side exited before completing the handshake")]
    Closed,
    /// The peer sent something that is not a message of this protocol.
    #[error("malformed handshake message: {0}")]
    Malformed(String),
}

/// One end of a handshake pipe.
#[derive(Debug)]
pub struct Channel {
    file: File,
}

impl Channel {
    /// Wraps an owned pipe end.
    pub fn new(fd: OwnedFd) -> Self {
        Channel {
            file: File::from(fd),
        }
    }

    /// Wraps a pipe end inherited from the parent (see
    /// [`crate::syscall::adopt_inherited_fds`]).
    pub fn from_inherited(file: File) -> Self {
        Channel { file }
    }

    /// Sends one message.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> Result<(), HandshakeError> {
        let mut line =
            serde_json::to_vec(msg).map_err(|e| HandshakeError::Malformed(e.to_string()))?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        Ok(())
    }

    /// Receives one message, failing with [`HandshakeError::Closed`] at end of file.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, HandshakeError> {
        let line = self.read_line()?;
        serde_json::from_slice(&line).map_err(|e| {
            HandshakeError::Malformed(format!("{e}: {}", String::from_utf8_lossy(&line)))
        })
    }

    fn read_line(&mut self) -> Result<Vec<u8>, HandshakeError> {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            match self.file.read(&mut byte) {
                Ok(0) => return Err(HandshakeError::Closed),
                Ok(_) if byte[0] == b'\n' => return Ok(line),
                Ok(_) if line.len() >= MAX_MESSAGE => {
                    return Err(HandshakeError::Malformed("message too long".into()))
                }
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// A unidirectional pipe as two channels (read end, write end).
pub fn pipe() -> Result<(Channel, Channel), HandshakeError> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
    Ok((Channel::new(r), Channel::new(w)))
}

impl std::os::fd::AsRawFd for Channel {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        c.file.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_one_per_line() {
        let (mut r, mut w) = pipe().expect("pipe");
        w.send(&HolderMsg::Unshared).expect("send");
        w.send(&HolderMsg::Failed {
            error: "x\ny".into(),
        })
        .expect("send");
        drop(w);
        assert_eq!(r.recv::<HolderMsg>().expect("recv"), HolderMsg::Unshared);
        assert_eq!(
            r.recv::<HolderMsg>().expect("recv"),
            HolderMsg::Failed {
                error: "x\ny".into()
            }
        );
        assert!(matches!(r.recv::<HolderMsg>(), Err(HandshakeError::Closed)));
    }

    #[test]
    fn garbage_is_malformed() {
        let (mut r, w) = pipe().expect("pipe");
        let mut f = File::from(OwnedFd::from(w));
        f.write_all(b"{\"type\":\"nope\"}\n").expect("write");
        assert!(matches!(
            r.recv::<ChildMsg>(),
            Err(HandshakeError::Malformed(_))
        ));
    }
}
