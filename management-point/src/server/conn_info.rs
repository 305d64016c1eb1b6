//! What the TLS layer learned about a connection, carried by each of its requests: the
//! device API authenticates with it, the console knows administrators by it, and logs name the
//! peer.

use std::net::SocketAddr;
use std::sync::Arc;

use rustls_pki_types::CertificateDer;

/// What the TLS layer learned about a connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The peer address.
    pub peer: SocketAddr,
    /// The client certificate chain, when one was offered.
    pub client_chain: Option<Arc<[CertificateDer<'static>]>>,
}
