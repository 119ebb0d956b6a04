// promgres patch: rewritten for rustls 0.23. The server configuration comes from the caller
// (`TlsConfigSource`), asked once per accepted connection, so the caller can swap
// certificates and client CAs at run time (promgres reloads them on SIGHUP) and choose the
// client-certificate policy itself. The handshake runs lazily on the connection's own thread
// (rustls does no I/O in `ServerConnection::new`), never on the accept thread.
use crate::connection::Connection;
use crate::util::refined_tcp_stream::Stream as RefinedStream;
use std::error::Error;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

/// Gives the TLS configuration for the next accepted connection.
pub type TlsConfigSource = Arc<dyn Fn() -> Arc<rustls::ServerConfig> + Send + Sync>;

type Inner = rustls::StreamOwned<rustls::ServerConnection, Connection>;

/// A wrapper around an owned Rustls connection and corresponding stream.
///
/// Uses an internal Mutex to permit disparate reader & writer threads to access the stream
/// independently (tiny_http serialises them for secure connections: the next request is read
/// only after the previous response was sent).
pub(crate) struct RustlsStream(Arc<Mutex<Inner>>);

impl RustlsStream {
    // A poisoned lock means a thread panicked mid-record: the stream is unusable, but the
    // connection's other half must get an error, not a panic.
    fn lock(&self) -> std::io::Result<MutexGuard<'_, Inner>> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::Other, "TLS stream poisoned"))
    }

    pub(crate) fn peer_addr(&mut self) -> std::io::Result<Option<SocketAddr>> {
        self.lock()?.sock.peer_addr()
    }

    pub(crate) fn shutdown(&mut self, how: Shutdown) -> std::io::Result<()> {
        let mut inner = self.lock()?;
        if matches!(how, Shutdown::Write | Shutdown::Both) {
            inner.conn.send_close_notify();
            // Written directly: `StreamOwned::flush` during a handshake (one that failed, say
            // a plain-HTTP client) goes on to wait for the peer's next record, which held such
            // connections open until the read timeout.
            let Inner { conn, sock } = &mut *inner;
            while conn.wants_write() {
                match conn.write_tls(sock) {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        inner.sock.shutdown(how)
    }
}

impl Clone for RustlsStream {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl Read for RustlsStream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.lock()?.read(buf)
    }
}

impl Write for RustlsStream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.lock()?.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.lock()?.flush()
    }
}

pub(crate) struct RustlsContext(TlsConfigSource);

impl RustlsContext {
    pub(crate) fn from_source(source: TlsConfigSource) -> Self {
        Self(source)
    }

    pub(crate) fn from_pem(
        _certificates: Vec<u8>,
        _private_key: zeroize::Zeroizing<Vec<u8>>,
    ) -> Result<Self, Box<dyn Error + Send + Sync>> {
        Err("this tiny_http build takes TLS configuration from Server::from_listener_with_tls".into())
    }

    pub(crate) fn accept(
        &self,
        stream: Connection,
    ) -> Result<RustlsStream, Box<dyn Error + Send + Sync + 'static>> {
        let connection = rustls::ServerConnection::new((self.0)())?;
        Ok(RustlsStream(Arc::new(Mutex::new(rustls::StreamOwned::new(
            connection, stream,
        )))))
    }
}

impl From<RustlsStream> for RefinedStream {
    fn from(stream: RustlsStream) -> Self {
        Self::Https(stream)
    }
}
