//! Generated gRPC types for ReSQLite: the Raft RPCs between nodes and the
//! ClientCommand service for native clients.

/// Node-to-node consensus messages and the `Raft` service.
pub mod raft {
    tonic::include_proto!("resqlite.raft");
}

/// The paper's `ClientCommand` service.
pub mod client {
    tonic::include_proto!("resqlite.client");
}
