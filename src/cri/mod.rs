//! The CRI v1 gRPC services. Handlers stay thin: they validate, call the
//! domain code, and convert errors through [`crate::error::CriError`].

pub mod authority;
mod hpack;
pub mod image;
pub mod runtime;
pub mod server;

/// Emits an `#[async_trait]` impl of a CRI service with the given methods,
/// plus methods that answer `Unimplemented` naming each listed RPC.
macro_rules! cri_service {
    (
        impl $service:ident for $ty:ident {
            $($implemented:tt)*
        }
        unimplemented {
            $($method:ident($req:ty) -> $resp:ty = $rpc:literal;)*
        }
    ) => {
        #[tonic::async_trait]
        impl $service for $ty {
            $($implemented)*
            $(
                async fn $method(
                    &self,
                    _request: tonic::Request<$req>,
                ) -> Result<tonic::Response<$resp>, tonic::Status> {
                    Err($crate::error::CriError::Unimplemented { rpc: $rpc }.into())
                }
            )*
        }
    };
}
pub(crate) use cri_service;
