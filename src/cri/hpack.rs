//! A small HPACK (RFC 7541) codec for [`super::authority`]: a decoder that
//! keeps the client's dynamic table, and a stateless encoder that writes
//! every field as a literal without indexing. h2's own codec is private,
//! and the HPACK crates on crates.io either only encode through a dynamic
//! table or copy and reallocate per field.

use std::collections::VecDeque;

use bytes::Bytes;

/// What RFC 7541 §4.1 adds to a name and a value to size a table entry.
const ENTRY_OVERHEAD: usize = 32;

/// A header block that does not decode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HpackError {
    /// The block ends inside a representation.
    #[error("the header block ends inside a field")]
    Truncated,
    /// An integer longer than the five octets h2 accepts.
    #[error("an HPACK integer is too long")]
    IntegerOverflow,
    /// An index that is in neither table.
    #[error("header table index {0} does not exist")]
    BadIndex(usize),
    /// A Huffman string with EOS, over-long or non-EOS padding.
    #[error("invalid Huffman-coded string")]
    BadHuffman,
    /// A dynamic table size update above what the server allows.
    #[error("dynamic table size update to {size} exceeds the limit {limit}")]
    TableSizeOverLimit {
        /// The size asked for.
        size: usize,
        /// The largest size allowed.
        limit: usize,
    },
    /// A dynamic table size update after a header field (RFC 7541 §4.2).
    #[error("dynamic table size update after a header field")]
    LateSizeUpdate,
    /// The decoded header list exceeds the cap.
    #[error("the decoded header list exceeds {limit} bytes")]
    ListTooLarge {
        /// The cap, in RFC 7541 entry sizes.
        limit: usize,
    },
}

/// One decoded header field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The name, as sent.
    pub name: Bytes,
    /// The value, as sent.
    pub value: Bytes,
    /// Sent as "never indexed" (a sensitive value): re-encoded the same way.
    pub sensitive: bool,
}

impl Field {
    /// Its size as RFC 7541 §4.1 counts it.
    pub fn size(&self) -> usize {
        self.name.len() + self.value.len() + ENTRY_OVERHEAD
    }
}

/// A decoded header block.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Block {
    /// The dynamic table size updates that opened the block, in order.
    pub size_updates: Vec<usize>,
    /// The header fields, in order.
    pub fields: Vec<Field>,
}

/// Decodes the header blocks of one direction of a connection, keeping the
/// dynamic table that the peer's encoder keeps.
#[derive(Debug)]
pub struct Decoder {
    /// Newest entry first (index 62 is the front).
    table: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max_size: usize,
    limit: usize,
    max_list: usize,
}

impl Decoder {
    /// A decoder whose table may grow to `limit` bytes (the
    /// SETTINGS_HEADER_TABLE_SIZE the receiving side advertised), refusing
    /// blocks that decode to more than `max_list` bytes.
    pub fn new(limit: usize, max_list: usize) -> Decoder {
        Decoder {
            table: VecDeque::new(),
            size: 0,
            max_size: limit,
            limit,
            max_list,
        }
    }

    /// Decodes one complete header block, updating the dynamic table.
    pub fn decode(&mut self, src: &Bytes) -> Result<Block, HpackError> {
        let mut cursor = Cursor { src, pos: 0 };
        let mut block = Block::default();
        let mut list = 0usize;
        while let Some(first) = cursor.peek() {
            if first & 0xe0 == 0x20 {
                if !block.fields.is_empty() {
                    return Err(HpackError::LateSizeUpdate);
                }
                let size = cursor.integer(5)?;
                self.resize(size)?;
                block.size_updates.push(size);
                continue;
            }
            let field = self.field(&mut cursor, first)?;
            list += field.size();
            if list > self.max_list {
                return Err(HpackError::ListTooLarge {
                    limit: self.max_list,
                });
            }
            block.fields.push(field);
        }
        Ok(block)
    }

    fn field(&mut self, cursor: &mut Cursor<'_>, first: u8) -> Result<Field, HpackError> {
        if first & 0x80 != 0 {
            let (name, value) = self.entry(cursor.integer(7)?)?;
            return Ok(Field {
                name,
                value,
                sensitive: false,
            });
        }
        if first & 0x40 != 0 {
            let field = self.literal(cursor, 6, false)?;
            self.insert(field.name.clone(), field.value.clone());
            return Ok(field);
        }
        self.literal(cursor, 4, first & 0x10 != 0)
    }

    fn literal(
        &self,
        cursor: &mut Cursor<'_>,
        prefix: u32,
        sensitive: bool,
    ) -> Result<Field, HpackError> {
        let index = cursor.integer(prefix)?;
        let name = match index {
            0 => cursor.string()?,
            _ => self.entry(index)?.0,
        };
        let value = cursor.string()?;
        Ok(Field {
            name,
            value,
            sensitive,
        })
    }

    /// Entry `index` of the static table (1–61) or the dynamic one (62–).
    fn entry(&self, index: usize) -> Result<(Bytes, Bytes), HpackError> {
        if let Some(&(name, value)) = index.checked_sub(1).and_then(|i| STATIC_TABLE.get(i)) {
            return Ok((Bytes::from_static(name), Bytes::from_static(value)));
        }
        index
            .checked_sub(STATIC_TABLE.len() + 1)
            .and_then(|i| self.table.get(i))
            .cloned()
            .ok_or(HpackError::BadIndex(index))
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = name.len() + value.len() + ENTRY_OVERHEAD;
        self.evict_to(self.max_size.saturating_sub(size));
        if size <= self.max_size {
            self.size += size;
            self.table.push_front((name, value));
        }
    }

    fn resize(&mut self, size: usize) -> Result<(), HpackError> {
        if size > self.limit {
            return Err(HpackError::TableSizeOverLimit {
                size,
                limit: self.limit,
            });
        }
        self.max_size = size;
        self.evict_to(size);
        Ok(())
    }

    fn evict_to(&mut self, size: usize) {
        while self.size > size {
            let Some((name, value)) = self.table.pop_back() else {
                break;
            };
            self.size -= name.len() + value.len() + ENTRY_OVERHEAD;
        }
    }
}

struct Cursor<'a> {
    src: &'a Bytes,
    pos: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn next(&mut self) -> Result<u8, HpackError> {
        let byte = self.peek().ok_or(HpackError::Truncated)?;
        self.pos += 1;
        Ok(byte)
    }

    /// An integer with an `prefix`-bit prefix (RFC 7541 §5.1), at most five
    /// octets long as h2 accepts.
    fn integer(&mut self, prefix: u32) -> Result<usize, HpackError> {
        let mask = (1u8 << prefix) - 1;
        let mut value = usize::from(self.next()? & mask);
        if value < usize::from(mask) {
            return Ok(value);
        }
        for shift in [0, 7, 14, 21] {
            let byte = self.next()?;
            value += usize::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(HpackError::IntegerOverflow)
    }

    /// A string literal (RFC 7541 §5.2), Huffman-decoded if so flagged.
    fn string(&mut self) -> Result<Bytes, HpackError> {
        let huffman = self.peek().is_some_and(|b| b & 0x80 != 0);
        let len = self.integer(7)?;
        let end = self
            .pos
            .checked_add(len)
            .filter(|&end| end <= self.src.len())
            .ok_or(HpackError::Truncated)?;
        let raw = self.src.slice(self.pos..end);
        self.pos = end;
        match huffman {
            true => huffman_decode(&raw).map(Bytes::from),
            false => Ok(raw),
        }
    }
}

/// Appends `field` as a literal without indexing ("never indexed" if it
/// was sent so), its name by static index where there is one, no Huffman:
/// the receiver's dynamic table is neither read nor changed.
pub fn encode_field(out: &mut Vec<u8>, field: &Field) {
    let first = if field.sensitive { 0x10 } else { 0x00 };
    match STATIC_TABLE
        .iter()
        .position(|(name, _)| field.name == *name)
    {
        Some(i) => encode_integer(out, first, 4, i + 1),
        None => {
            out.push(first);
            encode_string(out, &field.name);
        }
    }
    encode_string(out, &field.value);
}

/// Appends a dynamic table size update to `size`.
pub fn encode_size_update(out: &mut Vec<u8>, size: usize) {
    encode_integer(out, 0x20, 5, size);
}

fn encode_string(out: &mut Vec<u8>, value: &[u8]) {
    encode_integer(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

fn encode_integer(out: &mut Vec<u8>, first: u8, prefix: u32, value: usize) {
    let mask = (1u8 << prefix) - 1;
    let Some(mut rest) = value.checked_sub(usize::from(mask)) else {
        out.push(first | value as u8);
        return;
    };
    out.push(first | mask);
    while rest >= 0x80 {
        out.push((rest & 0x7f) as u8 | 0x80);
        rest >>= 7;
    }
    out.push(rest as u8);
}

/// Decodes a Huffman-coded string (RFC 7541 §5.2, Appendix B).
fn huffman_decode(src: &[u8]) -> Result<Vec<u8>, HpackError> {
    let mut out = Vec::with_capacity(src.len() * 8 / 5);
    let (mut code, mut len) = (0u32, 0usize);
    for byte in src {
        for bit in (0..8).rev() {
            code = code << 1 | u32::from(byte >> bit & 1);
            len += 1;
            let Some(symbol) = HUFFMAN.symbol(code, len)? else {
                continue;
            };
            let symbol = u8::try_from(symbol).map_err(|_| HpackError::BadHuffman)?;
            out.push(symbol);
            (code, len) = (0, 0);
        }
    }
    // Padding: fewer than eight bits, all ones (the start of EOS).
    match len < 8 && code == (1 << len) - 1 {
        true => Ok(out),
        false => Err(HpackError::BadHuffman),
    }
}

/// The canonical Huffman code of RFC 7541 Appendix B, built from its code
/// lengths: codes of one length are consecutive, in symbol order.
struct Canonical {
    /// The first code of each length.
    first: [u32; MAX_CODE_LEN + 1],
    /// How many codes have each length.
    count: [u32; MAX_CODE_LEN + 1],
    /// Where each length's symbols start in `symbols`.
    start: [usize; MAX_CODE_LEN + 1],
    /// Symbols ordered by code.
    symbols: [u16; 257],
}

const MAX_CODE_LEN: usize = 30;

impl Canonical {
    const fn build(lengths: &[u8; 257]) -> Canonical {
        let mut c = Canonical {
            first: [0; MAX_CODE_LEN + 1],
            count: [0; MAX_CODE_LEN + 1],
            start: [0; MAX_CODE_LEN + 1],
            symbols: [0; 257],
        };
        let mut s = 0;
        while s < 257 {
            c.count[lengths[s] as usize] += 1;
            s += 1;
        }
        let (mut len, mut code, mut next) = (1, 0u32, 0usize);
        while len <= MAX_CODE_LEN {
            c.first[len] = code;
            c.start[len] = next;
            let mut s = 0;
            while s < 257 {
                if lengths[s] as usize == len {
                    c.symbols[next] = s as u16;
                    next += 1;
                }
                s += 1;
            }
            code = (code + c.count[len]) << 1;
            len += 1;
        }
        c
    }

    /// The symbol whose code is the `len` bits `code`, if any; EOS is an error.
    fn symbol(&self, code: u32, len: usize) -> Result<Option<u16>, HpackError> {
        let (Some(&first), Some(&count)) = (self.first.get(len), self.count.get(len)) else {
            return Err(HpackError::BadHuffman);
        };
        let offset = code.wrapping_sub(first);
        if code < first || offset >= count {
            return Ok(None);
        }
        match self.symbols.get(self.start[len] + offset as usize) {
            Some(&256) | None => Err(HpackError::BadHuffman),
            Some(&symbol) => Ok(Some(symbol)),
        }
    }
}

static HUFFMAN: Canonical = Canonical::build(&HUFFMAN_LENGTHS);

/// The length of each symbol's code (256 is EOS), RFC 7541 Appendix B.
const HUFFMAN_LENGTHS: [u8; 257] = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28, //
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28, //
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6, //
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10, //
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, //
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6, //
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5, //
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28, //
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23, //
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24, //
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23, //
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23, //
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25, //
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27, //
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23, //
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26, //
    30,
];

/// RFC 7541 Appendix A.
static STATIC_TABLE: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Bytes {
        Bytes::from(hex::decode(s.replace(' ', "")).expect("hex"))
    }

    fn pairs(block: &Block) -> Vec<(String, String)> {
        let text = |b: &Bytes| String::from_utf8_lossy(b).into_owned();
        block
            .fields
            .iter()
            .map(|f| (text(&f.name), text(&f.value)))
            .collect()
    }

    fn owned(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn huffman_strings_of_rfc7541_appendix_c4_decode() {
        let cases = [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
        ];
        for (code, text) in cases {
            assert_eq!(huffman_decode(&hex(code)).expect(text), text.as_bytes());
        }
    }

    #[test]
    fn huffman_padding_and_eos_are_checked() {
        // 'a' is 00011 (5 bits): padding 000 is not EOS's leading ones.
        assert_eq!(huffman_decode(&[0x18]), Err(HpackError::BadHuffman));
        assert_eq!(huffman_decode(&[0x1f]).expect("a"), b"a");
        // Eight bits of padding, and EOS itself (30 ones).
        assert_eq!(huffman_decode(&[0xff]), Err(HpackError::BadHuffman));
        let eos = [0xff, 0xff, 0xff, 0xfc];
        assert_eq!(huffman_decode(&eos), Err(HpackError::BadHuffman));
    }

    /// RFC 7541 C.4: three requests sharing the dynamic table.
    #[test]
    fn requests_of_rfc7541_appendix_c4_decode_with_the_dynamic_table() {
        let mut d = Decoder::new(4096, 1 << 20);
        let first = d
            .decode(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff"))
            .expect("C.4.1");
        let expected = [
            (":method", "GET"),
            (":scheme", "http"),
            (":path", "/"),
            (":authority", "www.example.com"),
        ];
        assert_eq!(pairs(&first), owned(&expected));
        assert_eq!(d.size, 57);
        let second = d
            .decode(&hex("8286 84be 5886 a8eb 1064 9cbf"))
            .expect("C.4.2");
        assert_eq!(pairs(&second)[3], owned(&expected)[3]);
        assert_eq!(
            pairs(&second)[4],
            owned(&[("cache-control", "no-cache")])[0]
        );
        assert_eq!(d.size, 110);
        let third = d
            .decode(&hex(
                "8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
            ))
            .expect("C.4.3");
        assert_eq!(pairs(&third)[3], owned(&expected)[3]);
        assert_eq!(
            pairs(&third)[4],
            owned(&[("custom-key", "custom-value")])[0]
        );
        assert_eq!(d.size, 164);
    }

    #[test]
    fn size_updates_evict_and_are_bounded() {
        let mut d = Decoder::new(4096, 1 << 20);
        d.decode(&hex("418c f1e3 c2e5 f23a 6ba0 ab90 f4ff"))
            .expect("insert");
        assert_eq!(d.table.len(), 1);
        let block = d.decode(&hex("20 3fe1 1f 82")).expect("0 then 4096");
        assert_eq!(block.size_updates, [0, 4096]);
        assert!(d.table.is_empty());
        assert_eq!(d.decode(&hex("be")), Err(HpackError::BadIndex(62)));
        let over = d.decode(&hex("3fe2 1f"));
        assert!(matches!(over, Err(HpackError::TableSizeOverLimit { .. })));
        assert_eq!(d.decode(&hex("82 20")), Err(HpackError::LateSizeUpdate));
    }

    #[test]
    fn malformed_blocks_are_errors_not_panics() {
        let mut d = Decoder::new(4096, 1 << 20);
        for bad in ["80", "ff80 8080 8001", "0f", "0085 6162", "00 8161"] {
            assert!(d.decode(&hex(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_decoded_list_is_capped() {
        let mut d = Decoder::new(4096, 100);
        let block = hex("4003 6162 6303 6465 66be be");
        assert_eq!(
            d.decode(&block),
            Err(HpackError::ListTooLarge { limit: 100 })
        );
    }

    #[test]
    fn encoded_fields_decode_to_themselves_without_touching_the_table() {
        let fields = [
            (b":authority".as_slice(), b"localhost".as_slice(), false),
            (b"content-type", b"application/grpc", false),
            (b"x-a-long-name", &[b'v'; 300], true),
        ];
        let mut out = Vec::new();
        encode_size_update(&mut out, 100);
        let mut expected = Block {
            size_updates: vec![100],
            fields: vec![],
        };
        for (name, value, sensitive) in fields {
            let field = Field {
                name: Bytes::copy_from_slice(name),
                value: Bytes::copy_from_slice(value),
                sensitive,
            };
            encode_field(&mut out, &field);
            expected.fields.push(field);
        }
        let mut d = Decoder::new(4096, 1 << 20);
        assert_eq!(d.decode(&Bytes::from(out)).expect("decode"), expected);
        assert!(d.table.is_empty());
    }
}
