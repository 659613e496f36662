//! One client connection as pgwire's authentication code sees it: a framed
//! socket that is also a `ClientInfo` and a sink of backend messages.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{Sink, StreamExt};
use pgwire::api::{ClientInfo, PgWireConnectionState, SessionExtensions};
use pgwire::messages::response::TransactionStatus;
use pgwire::messages::startup::SecretKey;
use pgwire::messages::{PgWireBackendMessage, ProtocolVersion};
use pgwire::tokio::server::MaybeTls;
use pgwire::tokio::tokio_rustls::rustls::pki_types::CertificateDer;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use crate::codec::{Inbound, WireCodec};

/// A client connection after TLS negotiation.
pub(crate) struct Conn {
    framed: Framed<MaybeTls, WireCodec>,
}

impl Conn {
    pub(crate) fn new(framed: Framed<MaybeTls, WireCodec>) -> Self {
        Conn { framed }
    }

    /// The next thing the client sent; None once it hung up.
    pub(crate) async fn next(&mut self) -> Option<io::Result<Inbound>> {
        self.framed.next().await
    }

    /// The client's TCP socket, watched for the client hanging up while a
    /// statement runs.
    pub(crate) fn tcp(&self) -> Option<&TcpStream> {
        match self.framed.get_ref() {
            MaybeTls::Plain(stream) => Some(stream),
            // The hang-up watch looks at the TCP socket's FIN only, which
            // TLS records above it do not hide.
            MaybeTls::Tls(stream) => Some(stream.get_ref().0),
            // A Unix socket is not watched.
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    fn info(&self) -> &pgwire::api::DefaultClient<()> {
        &self.framed.codec().client
    }

    fn info_mut(&mut self) -> &mut pgwire::api::DefaultClient<()> {
        &mut self.framed.codec_mut().client
    }
}

impl ClientInfo for Conn {
    fn socket_addr(&self) -> SocketAddr {
        self.info().socket_addr()
    }

    fn is_secure(&self) -> bool {
        self.info().is_secure()
    }

    fn protocol_version(&self) -> ProtocolVersion {
        self.info().protocol_version()
    }

    fn set_protocol_version(&mut self, version: ProtocolVersion) {
        self.info_mut().set_protocol_version(version)
    }

    fn pid_and_secret_key(&self) -> (i32, SecretKey) {
        self.info().pid_and_secret_key()
    }

    fn set_pid_and_secret_key(&mut self, pid: i32, secret_key: SecretKey) {
        self.info_mut().set_pid_and_secret_key(pid, secret_key)
    }

    fn state(&self) -> PgWireConnectionState {
        self.info().state()
    }

    fn set_state(&mut self, new_state: PgWireConnectionState) {
        self.info_mut().set_state(new_state)
    }

    fn transaction_status(&self) -> TransactionStatus {
        self.info().transaction_status()
    }

    fn set_transaction_status(&mut self, new_status: TransactionStatus) {
        self.info_mut().set_transaction_status(new_status)
    }

    fn metadata(&self) -> &HashMap<String, String> {
        self.info().metadata()
    }

    fn metadata_mut(&mut self) -> &mut HashMap<String, String> {
        self.info_mut().metadata_mut()
    }

    fn session_extensions(&self) -> &SessionExtensions {
        self.info().session_extensions()
    }

    fn sni_server_name(&self) -> Option<&str> {
        self.info().sni_server_name()
    }

    fn client_certificates<'a>(&self) -> Option<&[CertificateDer<'a>]> {
        self.info().client_certificates()
    }
}

impl Sink<PgWireBackendMessage> for Conn {
    type Error = io::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<PgWireBackendMessage>::poll_ready(Pin::new(&mut self.framed), cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: PgWireBackendMessage) -> io::Result<()> {
        Pin::new(&mut self.framed).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<PgWireBackendMessage>::poll_flush(Pin::new(&mut self.framed), cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Sink::<PgWireBackendMessage>::poll_close(Pin::new(&mut self.framed), cx)
    }
}
