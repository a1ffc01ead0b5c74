//! SPDY/3 header blocks: the uncompressed name/value block format and the
//! per-direction zlib contexts (one compressor for everything a side sends,
//! one decompressor for everything it receives, both primed with
//! [`DICTIONARY`] and sync-flushed after each block).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

use super::dictionary::DICTIONARY;
use super::protocol::{Headers, SpdyError};

/// The largest decompressed header block accepted (guards against zlib bombs).
pub const MAX_HEADER_BLOCK: usize = 4 << 20;

/// Serializes `headers` into the uncompressed SPDY/3 block: u32 count, then
/// u32-length-prefixed name and value. Names are lowercased; repeated names
/// are merged into one NUL-separated value (SPDY forbids duplicate names).
pub fn encode_block(headers: &Headers) -> Vec<u8> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    let mut out = Vec::with_capacity(64);
    put_u32(&mut out, merged.len());
    for (name, value) in &merged {
        put_u32(&mut out, name.len());
        out.extend_from_slice(name.as_bytes());
        put_u32(&mut out, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Header blocks are bounded far below 4 GiB; saturate rather than wrap.
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_be_bytes());
}

/// Parses an uncompressed SPDY/3 header block. NUL-separated values become
/// separate pairs with the same name, in order.
pub fn decode_block(data: &[u8]) -> Result<Headers, SpdyError> {
    let mut cur = data;
    let count = take_u32(&mut cur)?;
    let mut headers = Headers::new();
    for _ in 0..count {
        let name = take_str(&mut cur)?;
        let value = take_str(&mut cur)?;
        for v in value.split('\0') {
            headers.push((name.clone(), v.to_string()));
        }
    }
    if !cur.is_empty() {
        return Err(SpdyError::Protocol(
            "trailing bytes after header block".into(),
        ));
    }
    Ok(headers)
}

fn take_u32(cur: &mut &[u8]) -> Result<u32, SpdyError> {
    let (head, rest) = cur
        .split_first_chunk::<4>()
        .ok_or_else(|| SpdyError::Protocol("truncated header block".into()))?;
    *cur = rest;
    Ok(u32::from_be_bytes(*head))
}

fn take_str(cur: &mut &[u8]) -> Result<String, SpdyError> {
    let len = take_u32(cur)? as usize;
    if cur.len() < len {
        return Err(SpdyError::Protocol("truncated header block".into()));
    }
    let (s, rest) = cur.split_at(len);
    *cur = rest;
    String::from_utf8(s.to_vec()).map_err(|_| SpdyError::Protocol("header is not UTF-8".into()))
}

/// The sending side's zlib context: every header block a session sends goes
/// through the same one, in wire order.
pub struct HeaderCompressor {
    z: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    /// A fresh context (zlib format, best compression like Go's spdystream)
    /// primed with the SPDY/3 dictionary.
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY)
            .expect("setting the dictionary on a fresh zlib compressor succeeds");
        Self { z }
    }

    /// Encodes and compresses `headers` as the next block of this context.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, SpdyError> {
        self.compress_raw(&encode_block(headers))
    }

    /// Compresses an already encoded block, ending with a zlib sync flush.
    pub fn compress_raw(&mut self, block: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(block.len() / 2 + 64);
        let mut pos = 0;
        loop {
            if out.capacity() - out.len() < 16 {
                out.reserve(out.capacity().max(64));
            }
            let before = self.z.total_in();
            self.z
                .compress_vec(&block[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Protocol(format!("header compression: {e}")))?;
            pos += (self.z.total_in() - before) as usize;
            // The flush is complete once all input is in and zlib left room.
            if pos == block.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

/// The receiving side's zlib context, shared by all header blocks a session
/// receives.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    /// A fresh context (zlib format); the dictionary is supplied when the
    /// stream asks for it.
    pub fn new() -> Self {
        Self {
            z: Decompress::new(true),
        }
    }

    /// Decompresses and parses the next header block of this context.
    pub fn decompress(&mut self, data: &[u8]) -> Result<Headers, SpdyError> {
        decode_block(&self.decompress_raw(data)?)
    }

    /// Decompresses the next block of this context into its raw encoding.
    pub fn decompress_raw(&mut self, data: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(data.len() * 4 + 64);
        let mut pos = 0;
        loop {
            if out.len() == out.capacity() {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(SpdyError::Protocol("header block too large".into()));
                }
                out.reserve(out.capacity());
            }
            let (in0, out0) = (self.z.total_in(), self.z.total_out());
            let res = self
                .z
                .decompress_vec(&data[pos..], &mut out, FlushDecompress::Sync);
            pos += (self.z.total_in() - in0) as usize;
            match res {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(DICTIONARY).map_err(zerr)?;
                    continue;
                }
                Err(e) => return Err(zerr(e)),
            }
            if pos == data.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if self.z.total_in() == in0 && self.z.total_out() == out0 && out.len() < out.capacity()
            {
                return Err(SpdyError::Protocol(
                    "truncated compressed header block".into(),
                ));
            }
        }
    }
}

fn zerr(e: flate2::DecompressError) -> SpdyError {
    SpdyError::Protocol(format!("header decompression: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn adler32(data: &[u8]) -> u32 {
        let (a, b) = data.iter().fold((1u32, 0u32), |(a, b), &x| {
            let a = (a + u32::from(x)) % 65521;
            (a, (b + a) % 65521)
        });
        (b << 16) | a
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        assert_eq!(DICTIONARY.len(), 1423);
        assert!(DICTIONARY.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(DICTIONARY.ends_with(b"charset=iso-8859-1,utf-,*,enq=0."));
        // The DICTID every SPDY/3 zlib stream carries (78 f9 e3 c6 a7 c2 ...).
        assert_eq!(adler32(DICTIONARY), 0xe3c6_a7c2);
    }

    #[test]
    fn block_encoding_lowercases_merges_and_splits() {
        let h = hs(&[("StreamType", "data"), ("Port", "80"), ("port", "81")]);
        let raw = encode_block(&h);
        assert_eq!(&raw[..4], &2u32.to_be_bytes());
        let back = decode_block(&raw).expect("decode");
        assert_eq!(
            back,
            hs(&[("streamtype", "data"), ("port", "80"), ("port", "81")])
        );
        assert!(decode_block(&raw[..raw.len() - 1]).is_err());
        assert_eq!(
            decode_block(&encode_block(&Headers::new())).expect("empty"),
            vec![]
        );
    }

    #[test]
    fn one_context_spans_many_blocks() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        let blocks = [
            hs(&[("streamtype", "error"), ("requestid", "0")]),
            hs(&[("streamtype", "stdout"), ("requestid", "0")]),
            hs(&[("streamtype", "stderr"), ("requestid", "0")]),
            Headers::new(),
            hs(&[("x", &"v".repeat(70_000))]),
            hs(&[("streamtype", "data"), ("port", "8080")]),
        ];
        let mut sizes = Vec::new();
        for h in &blocks {
            let z = c.compress(h).expect("compress");
            sizes.push(z.len());
            assert_eq!(&d.decompress(&z).expect("decompress"), h);
        }
        // Later blocks reuse the earlier ones' strings: the context is shared.
        assert!(sizes[2] < sizes[0], "{sizes:?}");
        // A fresh decompressor cannot read a block from the middle of a context.
        let mut c2 = HeaderCompressor::new();
        c2.compress(&blocks[0]).expect("compress");
        let second = c2.compress(&blocks[1]).expect("compress");
        assert!(HeaderDecompressor::new().decompress(&second).is_err());
    }

    #[test]
    fn first_block_is_zlib_with_the_dictionary_id() {
        let z = HeaderCompressor::new()
            .compress(&hs(&[("a", "1")]))
            .expect("compress");
        assert_eq!(z[0], 0x78);
        assert_eq!(z[1] & 0x20, 0x20, "FDICT set");
        assert_eq!(&z[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        assert!(z.ends_with(&[0x00, 0x00, 0xff, 0xff]), "sync flushed");
    }

    #[test]
    fn reads_a_block_from_a_fresh_flate2_compressor() {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(DICTIONARY).expect("dictionary");
        let raw = encode_block(&hs(&[("streamtype", "error")]));
        let mut out = Vec::with_capacity(1024);
        z.compress_vec(&raw, &mut out, FlushCompress::Sync)
            .expect("compress");
        let h = HeaderDecompressor::new()
            .decompress(&out)
            .expect("decompress");
        assert_eq!(h, hs(&[("streamtype", "error")]));
    }

    /// Two blocks as Go's spdystream would send them (zlib, level 9, SPDY/3
    /// dictionary, one context, sync flush), produced independently with
    /// CPython's zlib (`compressobj(9, zdict=DICTIONARY)` + `Z_SYNC_FLUSH`).
    #[test]
    fn known_answer_blocks_from_reference_zlib() {
        let mut d = HeaderDecompressor::new();
        let first = d.decompress(&hex(KAT_1)).expect("first block");
        assert_eq!(first, hs(&[("streamtype", "error")]));
        let second = d.decompress(&hex(KAT_2)).expect("second block");
        assert_eq!(second, hs(&[("streamtype", "stdout"), ("requestid", "1")]));
    }

    const KAT_1: &str = "78f9e3c6a7c202a62346703a2b294a4dcc851625aca9a08006000000ffff";
    const KAT_2: &str = "02651c0c2960624ec90797d19c459028cd042575464300000000ffff";

    mod properties {
        //! Fuzzing by properties: header blocks from arbitrary bytes, raw
        //! and compressed, never panic; encoded blocks decode back (a
        //! repeated name's values together, in their order).
        use super::*;
        use proptest::prelude::*;

        /// Headers as HTTP means them: SPDY sends a repeated name once with
        /// its values joined, so only the order of each name's values counts.
        fn by_name(mut headers: Headers) -> Headers {
            headers.sort_by(|a, b| a.0.cmp(&b.0));
            headers
        }

        proptest! {
            #[test]
            fn arbitrary_blocks_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
                let _ = decode_block(&data);
                let _ = HeaderDecompressor::new().decompress(&data);
            }

            #[test]
            fn encoded_blocks_decode_to_themselves(
                headers in proptest::collection::vec(("[a-z0-9-]{1,16}", "[ -~]{0,64}"), 0..10),
            ) {
                let decoded = decode_block(&encode_block(&headers)).expect("decode");
                prop_assert_eq!(by_name(decoded), by_name(headers.clone()));
                let mut comp = HeaderCompressor::new();
                let mut dec = HeaderDecompressor::new();
                let wire = comp.compress(&headers).expect("compress");
                prop_assert_eq!(by_name(dec.decompress(&wire).expect("decompress")), by_name(headers));
            }
        }
    }
}
