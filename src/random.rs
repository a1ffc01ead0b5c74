//! Random identifiers from the kernel's generator. Failing closed: an id or
//! a streaming token is never made of anything but random bytes.

use std::io::Read;

/// `n` random bytes from `/dev/urandom`, hex-encoded.
pub fn hex(n: usize) -> std::io::Result<String> {
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex::encode(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_random_hex_of_the_asked_length() {
        let (a, b) = (super::hex(16).expect("a"), super::hex(16).expect("b"));
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }
}
