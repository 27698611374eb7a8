//! gRPC services (owned by the ingest engineer; placeholder).

use crate::app::Core;

/// The gRPC services `app::serve` mounts on the gRPC listener.
pub fn routes(core: Core) -> tonic::service::Routes {
    let _ = core;
    tonic::service::Routes::default()
}

/// Maps the one error type to a gRPC status (codes documented on `Error`).
impl From<crate::error::Error> for tonic::Status {
    fn from(e: crate::error::Error) -> Self {
        use crate::error::Error as E;
        let code = match &e {
            E::InvalidInput { .. } => tonic::Code::InvalidArgument,
            E::NotFound(_) => tonic::Code::NotFound,
            E::PayloadTooLarge(_) | E::ResourceExhausted { .. } => tonic::Code::ResourceExhausted,
            E::Unauthenticated(_) => tonic::Code::Unauthenticated,
            E::PermissionDenied(_) => tonic::Code::PermissionDenied,
            E::Unavailable(_) => tonic::Code::Unavailable,
            E::DeadlineExceeded(_) => tonic::Code::DeadlineExceeded,
            E::Internal(_) => tonic::Code::Internal,
        };
        tonic::Status::new(code, e.to_string())
    }
}
