//! The Kubernetes Container Runtime Interface (CRI), `runtime.v1`, as of
//! Kubernetes v1.36 (kubelet v1.36.2): prost messages, tonic clients
//! (`runtime_service_client`, `image_service_client`) and servers
//! (`runtime_service_server`, `image_service_server`), generated at build time
//! from `proto/runtime/v1/api.proto` (see README.md for its origin).
//!
//! Every generated type derives `serde::Serialize` and `serde::Deserialize`,
//! exactly as k8s-cri 0.11 configures it, so JSON state written with k8s-cri
//! types keeps its shape. `KeyValue.value` became `bytes` (`Vec<u8>`) in
//! v1.36; its JSON stays a string (see [`v1::KeyValue`]).

/// CRI API version v1 (`package runtime.v1`), generated from
/// `proto/runtime/v1/api.proto`.
#[allow(
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    rustdoc::all
)]
pub mod v1 {
    tonic::include_proto!("runtime.v1");
}

/// A CRI client's channel over a unix socket, the one way ucri's own
/// clients (`ucri ctl`, the bench, the tests) dial the daemon.
pub mod unix {
    use std::path::Path;

    use hyper_util::rt::TokioIo;
    use tonic::transport::{Channel, Endpoint};

    /// The endpoint to configure (timeouts) before [`connect`]: its URI only
    /// gives the `:authority`, a placeholder, as CRI clients send one.
    pub fn endpoint() -> Endpoint {
        Endpoint::from_static("http://ucri.invalid")
    }

    /// Connects `endpoint` to the CRI server on the unix socket `socket`.
    pub async fn connect(
        endpoint: Endpoint,
        socket: &Path,
    ) -> Result<Channel, tonic::transport::Error> {
        let socket = socket.to_owned();
        endpoint
            .connect_with_connector(tower::service_fn(move |_| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }))
            .await
    }
}

/// serde for `KeyValue.value` (proto `bytes`, was `string` before v1.36):
/// written as a JSON string when the bytes are UTF-8 (as k8s-cri 0.11 wrote
/// the `String`), as an array of byte values otherwise (serde's default for
/// `Vec<u8>`); either form reads back.
mod serde_env_value {
    use serde::de::{Deserializer, Error, SeqAccess, Visitor};
    use serde::Serializer;
    use std::fmt;

    pub fn serialize<S: Serializer>(value: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(value) {
            Ok(text) => serializer.serialize_str(text),
            Err(_) => serializer.collect_seq(value),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_any(BytesOrString)
    }

    struct BytesOrString;

    impl<'de> Visitor<'de> for BytesOrString {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or a sequence of bytes")
        }

        fn visit_str<E: Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        fn visit_string<E: Error>(self, v: String) -> Result<Vec<u8>, E> {
            Ok(v.into_bytes())
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_unit<E: Error>(self) -> Result<Vec<u8>, E> {
            Ok(Vec::new())
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(byte) = seq.next_element::<u8>()? {
                out.push(byte);
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::v1::KeyValue;

    #[test]
    fn env_value_json_is_a_string_when_utf8() {
        let kv = KeyValue {
            key: "A".into(),
            value: b"x y".to_vec(),
        };
        let json = serde_json::to_string(&kv).expect("serialize");
        assert_eq!(json, r#"{"key":"A","value":"x y"}"#);
        let back: KeyValue = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, kv);
    }

    #[test]
    fn env_value_json_round_trips_non_utf8() {
        let kv = KeyValue {
            key: "B".into(),
            value: vec![0xff, 0x00, b'a'],
        };
        let json = serde_json::to_string(&kv).expect("serialize");
        assert_eq!(json, r#"{"key":"B","value":[255,0,97]}"#);
        let back: KeyValue = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back, kv);
    }

    #[test]
    fn env_value_reads_k8s_cri_json() {
        let back: KeyValue =
            serde_json::from_str(r#"{"key":"C","value":"héllo"}"#).expect("deserialize");
        assert_eq!(back.value, "héllo".as_bytes());
    }
}
