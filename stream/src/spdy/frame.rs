//! SPDY/3 frame codec.
//!
//! Control frame: `1 | version(15) | type(16) | flags(8) | length(24) | payload`.
//! Data frame: `0 | stream id(31) | flags(8) | length(24) | payload`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use super::headers::{HeaderCompressor, HeaderDecompressor};
use super::protocol::{Headers, SpdyError};

/// The protocol version carried by control frames.
pub const VERSION: u16 = 3;
/// FLAG_FIN (DATA, SYN_STREAM, SYN_REPLY, HEADERS).
pub const FLAG_FIN: u8 = 0x01;
/// FLAG_UNIDIRECTIONAL (SYN_STREAM).
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// FLAG_SETTINGS_CLEAR_SETTINGS (SETTINGS).
pub const FLAG_SETTINGS_CLEAR: u8 = 0x01;
/// The largest payload a frame can carry (24-bit length).
pub const MAX_PAYLOAD: usize = 0xff_ffff;

/// SYN_STREAM control frame type.
pub const TYPE_SYN_STREAM: u16 = 1;
/// SYN_REPLY control frame type.
pub const TYPE_SYN_REPLY: u16 = 2;
/// RST_STREAM control frame type.
pub const TYPE_RST_STREAM: u16 = 3;
/// SETTINGS control frame type.
pub const TYPE_SETTINGS: u16 = 4;
/// PING control frame type.
pub const TYPE_PING: u16 = 6;
/// GOAWAY control frame type.
pub const TYPE_GOAWAY: u16 = 7;
/// HEADERS control frame type.
pub const TYPE_HEADERS: u16 = 8;
/// WINDOW_UPDATE control frame type.
pub const TYPE_WINDOW_UPDATE: u16 = 9;

const ID_MASK: u32 = 0x7fff_ffff;

/// One SETTINGS entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Entry flags (8 bits).
    pub flags: u8,
    /// Setting id (24 bits).
    pub id: u32,
    /// Setting value.
    pub value: u32,
}

/// A decoded SPDY/3 frame (header blocks already decompressed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// DATA.
    Data {
        /// Stream id.
        stream_id: u32,
        /// Flags (FIN).
        flags: u8,
        /// Payload.
        data: Bytes,
    },
    /// SYN_STREAM: opens a stream.
    SynStream {
        /// New stream id.
        stream_id: u32,
        /// Associated-to stream id (0 = none).
        associated_to: u32,
        /// Priority (3 bits, 0 highest).
        priority: u8,
        /// Credential slot.
        slot: u8,
        /// Flags (FIN, UNIDIRECTIONAL).
        flags: u8,
        /// Request headers.
        headers: Headers,
    },
    /// SYN_REPLY: accepts a stream.
    SynReply {
        /// Stream id.
        stream_id: u32,
        /// Flags (FIN).
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// RST_STREAM: aborts a stream.
    RstStream {
        /// Stream id.
        stream_id: u32,
        /// Status code.
        status: u32,
    },
    /// SETTINGS.
    Settings {
        /// Flags (CLEAR_SETTINGS).
        flags: u8,
        /// Entries.
        entries: Vec<Setting>,
    },
    /// PING.
    Ping {
        /// Ping id (odd from clients, even from servers).
        id: u32,
    },
    /// GOAWAY.
    GoAway {
        /// Last stream id the sender accepted.
        last_good_stream_id: u32,
        /// Status code.
        status: u32,
    },
    /// HEADERS: extra headers for a stream.
    Headers {
        /// Stream id.
        stream_id: u32,
        /// Flags (FIN).
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// WINDOW_UPDATE.
    WindowUpdate {
        /// Stream id (0 = the session).
        stream_id: u32,
        /// Window delta.
        delta: u32,
    },
    /// A control frame of a type this codec does not know (to be ignored).
    Unknown {
        /// Control frame type.
        kind: u16,
        /// Flags.
        flags: u8,
        /// Raw payload.
        payload: Bytes,
    },
}

/// Appends the wire form of `frame` to `out`, compressing header blocks with
/// `comp` (so frames must be encoded in the order they are sent).
pub fn encode(
    frame: &Frame,
    comp: &mut HeaderCompressor,
    out: &mut BytesMut,
) -> Result<(), SpdyError> {
    match frame {
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            check_len(data.len())?;
            out.put_u32(stream_id & ID_MASK);
            put_flags_len(out, *flags, data.len());
            out.put_slice(data);
        }
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            slot,
            flags,
            headers,
        } => {
            let block = comp.compress(headers)?;
            control(out, TYPE_SYN_STREAM, *flags, 10 + block.len())?;
            out.put_u32(stream_id & ID_MASK);
            out.put_u32(associated_to & ID_MASK);
            out.put_u8((priority & 0x07) << 5);
            out.put_u8(*slot);
            out.put_slice(&block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        } => header_frame(out, comp, TYPE_SYN_REPLY, *stream_id, *flags, headers)?,
        Frame::Headers {
            stream_id,
            flags,
            headers,
        } => header_frame(out, comp, TYPE_HEADERS, *stream_id, *flags, headers)?,
        Frame::Settings { flags, entries } => encode_settings(out, *flags, entries)?,
        Frame::Unknown {
            kind,
            flags,
            payload,
        } => {
            control(out, *kind, *flags, payload.len())?;
            out.put_slice(payload);
        }
        _ => encode_fixed(frame, out),
    }
    Ok(())
}

fn encode_fixed(frame: &Frame, out: &mut BytesMut) {
    let (kind, a, b) = match *frame {
        Frame::RstStream { stream_id, status } => {
            (TYPE_RST_STREAM, stream_id & ID_MASK, Some(status))
        }
        Frame::Ping { id } => (TYPE_PING, id, None),
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => (TYPE_GOAWAY, last_good_stream_id & ID_MASK, Some(status)),
        Frame::WindowUpdate { stream_id, delta } => (
            TYPE_WINDOW_UPDATE,
            stream_id & ID_MASK,
            Some(delta & ID_MASK),
        ),
        _ => unreachable!("encode_fixed only handles fixed-size control frames"),
    };
    let len = if b.is_some() { 8 } else { 4 };
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_flags_len(out, 0, len);
    out.put_u32(a);
    if let Some(b) = b {
        out.put_u32(b);
    }
}

fn header_frame(
    out: &mut BytesMut,
    comp: &mut HeaderCompressor,
    kind: u16,
    stream_id: u32,
    flags: u8,
    headers: &Headers,
) -> Result<(), SpdyError> {
    let block = comp.compress(headers)?;
    control(out, kind, flags, 4 + block.len())?;
    out.put_u32(stream_id & ID_MASK);
    out.put_slice(&block);
    Ok(())
}

fn encode_settings(out: &mut BytesMut, flags: u8, entries: &[Setting]) -> Result<(), SpdyError> {
    control(out, TYPE_SETTINGS, flags, 4 + 8 * entries.len())?;
    out.put_u32(entries.len() as u32);
    for e in entries {
        out.put_u32((u32::from(e.flags) << 24) | (e.id & 0xff_ffff));
        out.put_u32(e.value);
    }
    Ok(())
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, len: usize) -> Result<(), SpdyError> {
    check_len(len)?;
    out.reserve(8 + len);
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    put_flags_len(out, flags, len);
    Ok(())
}

fn put_flags_len(out: &mut BytesMut, flags: u8, len: usize) {
    out.put_u32((u32::from(flags) << 24) | (len as u32 & 0xff_ffff));
}

fn check_len(len: usize) -> Result<(), SpdyError> {
    if len > MAX_PAYLOAD {
        return Err(SpdyError::Protocol(format!(
            "frame payload of {len} bytes is too large"
        )));
    }
    Ok(())
}

/// Reads one frame. `Ok(None)` on a clean EOF at a frame boundary.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    dec: &mut HeaderDecompressor,
) -> Result<Option<Frame>, SpdyError> {
    let mut head = [0u8; 8];
    let n = r.read(&mut head).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut head[n..]).await?;
    let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
    let mut payload = BytesMut::zeroed(len);
    r.read_exact(&mut payload).await?;
    decode(head, payload.freeze(), dec).map(Some)
}

/// Decodes a frame from its 8-byte head and payload, decompressing header
/// blocks with `dec` (so frames must be decoded in the order received).
pub fn decode(
    head: [u8; 8],
    payload: Bytes,
    dec: &mut HeaderDecompressor,
) -> Result<Frame, SpdyError> {
    let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    let flags = head[4];
    if word & 0x8000_0000 == 0 {
        return Ok(Frame::Data {
            stream_id: word & ID_MASK,
            flags,
            data: payload,
        });
    }
    let version = ((word >> 16) & 0x7fff) as u16;
    if version != VERSION {
        return Err(SpdyError::Protocol(format!(
            "unsupported SPDY version {version}"
        )));
    }
    decode_control((word & 0xffff) as u16, flags, payload, dec)
}

fn decode_control(
    kind: u16,
    flags: u8,
    mut p: Bytes,
    dec: &mut HeaderDecompressor,
) -> Result<Frame, SpdyError> {
    let frame = match kind {
        TYPE_SYN_STREAM => {
            need(&p, 10, "SYN_STREAM")?;
            let stream_id = p.get_u32() & ID_MASK;
            let associated_to = p.get_u32() & ID_MASK;
            let priority = p.get_u8() >> 5;
            let slot = p.get_u8();
            let headers = dec.decompress(&p)?;
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            need(&p, 4, "SYN_REPLY/HEADERS")?;
            let stream_id = p.get_u32() & ID_MASK;
            let headers = dec.decompress(&p)?;
            if kind == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_SETTINGS => decode_settings(flags, p)?,
        TYPE_RST_STREAM | TYPE_PING | TYPE_GOAWAY | TYPE_WINDOW_UPDATE => decode_fixed(kind, p)?,
        _ => Frame::Unknown {
            kind,
            flags,
            payload: p,
        },
    };
    Ok(frame)
}

fn decode_fixed(kind: u16, mut p: Bytes) -> Result<Frame, SpdyError> {
    if kind == TYPE_PING {
        need(&p, 4, "PING")?;
        return Ok(Frame::Ping { id: p.get_u32() });
    }
    if kind == TYPE_GOAWAY && p.len() < 8 {
        // SPDY/2-style GOAWAY without a status.
        need(&p, 4, "GOAWAY")?;
        return Ok(Frame::GoAway {
            last_good_stream_id: p.get_u32() & ID_MASK,
            status: 0,
        });
    }
    need(&p, 8, "control frame")?;
    let a = p.get_u32() & ID_MASK;
    let b = p.get_u32();
    Ok(match kind {
        TYPE_RST_STREAM => Frame::RstStream {
            stream_id: a,
            status: b,
        },
        TYPE_GOAWAY => Frame::GoAway {
            last_good_stream_id: a,
            status: b,
        },
        _ => Frame::WindowUpdate {
            stream_id: a,
            delta: b & ID_MASK,
        },
    })
}

fn decode_settings(flags: u8, mut p: Bytes) -> Result<Frame, SpdyError> {
    need(&p, 4, "SETTINGS")?;
    let count = p.get_u32() as usize;
    if p.len() / 8 < count {
        return Err(SpdyError::Protocol("truncated SETTINGS frame".into()));
    }
    let entries = (0..count)
        .map(|_| {
            let word = p.get_u32();
            Setting {
                flags: (word >> 24) as u8,
                id: word & 0xff_ffff,
                value: p.get_u32(),
            }
        })
        .collect();
    Ok(Frame::Settings { flags, entries })
}

fn need(p: &Bytes, n: usize, what: &str) -> Result<(), SpdyError> {
    if p.len() < n {
        return Err(SpdyError::Protocol(format!("truncated {what} frame")));
    }
    Ok(())
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

    fn all_frames() -> Vec<Frame> {
        vec![
            Frame::Data {
                stream_id: 1,
                flags: 0,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 0x7fff_ffff,
                flags: FLAG_FIN,
                data: Bytes::new(),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                slot: 2,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: hs(&[("streamtype", "error"), ("requestid", "0")]),
            },
            Frame::SynReply {
                stream_id: 3,
                flags: 0,
                headers: Headers::new(),
            },
            Frame::SynReply {
                stream_id: 5,
                flags: FLAG_FIN,
                headers: hs(&[("a", "b")]),
            },
            Frame::RstStream {
                stream_id: 3,
                status: 5,
            },
            Frame::Settings {
                flags: FLAG_SETTINGS_CLEAR,
                entries: vec![
                    Setting {
                        flags: 1,
                        id: 7,
                        value: 65536,
                    },
                    Setting {
                        flags: 0,
                        id: 4,
                        value: 100,
                    },
                ],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 9,
                status: 1,
            },
            Frame::Headers {
                stream_id: 3,
                flags: FLAG_FIN,
                headers: hs(&[("x-extra", "1")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 65536,
            },
            Frame::Unknown {
                kind: 10,
                flags: 0,
                payload: Bytes::from_static(b"cred"),
            },
        ]
    }

    #[tokio::test]
    async fn every_frame_type_round_trips() {
        let mut comp = HeaderCompressor::new();
        let mut wire = BytesMut::new();
        let frames = all_frames();
        for f in &frames {
            encode(f, &mut comp, &mut wire).expect("encode");
        }
        let mut dec = HeaderDecompressor::new();
        let mut r: &[u8] = &wire;
        for f in &frames {
            let got = read_frame(&mut r, &mut dec)
                .await
                .expect("read")
                .expect("frame");
            assert_eq!(&got, f);
        }
        assert!(read_frame(&mut r, &mut dec).await.expect("eof").is_none());
    }

    #[test]
    fn fixed_layouts_match_the_spec() {
        let mut comp = HeaderCompressor::new();
        let mut out = BytesMut::new();
        encode(&Frame::Ping { id: 1 }, &mut comp, &mut out).expect("ping");
        assert_eq!(&out[..], &[0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]);
        out.clear();
        encode(
            &Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            },
            &mut comp,
            &mut out,
        )
        .expect("goaway");
        assert_eq!(
            &out[..],
            &[0x80, 3, 0, 7, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        out.clear();
        let data = Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"ab"),
        };
        encode(&data, &mut comp, &mut out).expect("data");
        assert_eq!(&out[..], &[0, 0, 0, 1, 1, 0, 0, 2, b'a', b'b']);
        out.clear();
        let syn = Frame::SynStream {
            stream_id: 1,
            associated_to: 0,
            priority: 0,
            slot: 0,
            flags: 0,
            headers: Headers::new(),
        };
        encode(&syn, &mut comp, &mut out).expect("syn");
        assert_eq!(&out[..4], &[0x80, 3, 0, 1]);
        assert_eq!(&out[8..18], &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &out[18..20],
            &[0x78, 0xf9],
            "zlib header with FDICT, best compression"
        );
    }

    #[test]
    fn rejects_bad_frames() {
        let mut dec = HeaderDecompressor::new();
        let v2 = [0x80, 2, 0, 6, 0, 0, 0, 4];
        assert!(decode(v2, Bytes::from_static(&[0, 0, 0, 1]), &mut dec).is_err());
        let short_rst = [0x80, 3, 0, 3, 0, 0, 0, 4];
        assert!(decode(short_rst, Bytes::from_static(&[0, 0, 0, 1]), &mut dec).is_err());
        let settings = [0x80, 3, 0, 4, 0, 0, 0, 4];
        assert!(decode(settings, Bytes::from_static(&[0, 0, 0, 2]), &mut dec).is_err());
    }

    mod properties {
        //! Fuzzing by properties (proptest): arbitrary wire bytes never
        //! panic the decoder, and every frame the encoder can make decodes
        //! back to itself. `PROPTEST_CASES` sets the number of cases.
        use super::*;
        use proptest::prelude::*;

        fn headers() -> impl Strategy<Value = Headers> {
            proptest::collection::vec(("[a-z0-9-]{1,12}", "[ -~]{0,40}"), 0..6)
        }

        fn frame() -> impl Strategy<Value = Frame> {
            let id = 0u32..=ID_MASK;
            prop_oneof![
                (
                    id.clone(),
                    any::<u8>(),
                    proptest::collection::vec(any::<u8>(), 0..512)
                )
                    .prop_map(|(stream_id, flags, data)| Frame::Data {
                        stream_id,
                        flags,
                        data: Bytes::from(data),
                    }),
                (
                    id.clone(),
                    id.clone(),
                    0u8..8,
                    any::<u8>(),
                    any::<u8>(),
                    headers()
                )
                    .prop_map(
                        |(stream_id, associated_to, priority, slot, flags, headers)| {
                            Frame::SynStream {
                                stream_id,
                                associated_to,
                                priority,
                                slot,
                                flags,
                                headers,
                            }
                        }
                    ),
                (id.clone(), any::<u8>(), headers()).prop_map(|(stream_id, flags, headers)| {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                }),
                (id.clone(), any::<u32>())
                    .prop_map(|(stream_id, status)| Frame::RstStream { stream_id, status }),
                any::<u32>().prop_map(|id| Frame::Ping { id }),
                (id.clone(), any::<u32>()).prop_map(|(last_good_stream_id, status)| {
                    Frame::GoAway {
                        last_good_stream_id,
                        status,
                    }
                }),
                (id.clone(), 0u32..=ID_MASK)
                    .prop_map(|(stream_id, delta)| Frame::WindowUpdate { stream_id, delta }),
            ]
        }

        /// The frame with its headers in name order (see `headers`'s
        /// properties: SPDY groups a repeated name's values).
        fn by_name_in(frame: Frame) -> Frame {
            let sort = |mut h: Headers| {
                h.sort_by(|a, b| a.0.cmp(&b.0));
                h
            };
            match frame {
                Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    headers,
                } => Frame::SynStream {
                    stream_id,
                    associated_to,
                    priority,
                    slot,
                    flags,
                    headers: sort(headers),
                },
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                } => Frame::SynReply {
                    stream_id,
                    flags,
                    headers: sort(headers),
                },
                other => other,
            }
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_the_decoder(
                head in any::<[u8; 8]>(),
                payload in proptest::collection::vec(any::<u8>(), 0..2048),
            ) {
                let mut dec = HeaderDecompressor::new();
                let _ = decode(head, Bytes::from(payload), &mut dec);
            }

            #[test]
            fn encoded_frames_decode_to_themselves(frames in proptest::collection::vec(frame(), 1..8)) {
                let mut comp = HeaderCompressor::new();
                let mut dec = HeaderDecompressor::new();
                for f in &frames {
                    let mut wire = BytesMut::new();
                    encode(f, &mut comp, &mut wire).expect("encode");
                    let head: [u8; 8] = wire[..8].try_into().expect("head");
                    let payload = wire.split_off(8).freeze();
                    let back = decode(head, payload, &mut dec).expect("decode");
                    prop_assert_eq!(by_name_in(back), by_name_in(f.clone()));
                }
            }
        }
    }
}
