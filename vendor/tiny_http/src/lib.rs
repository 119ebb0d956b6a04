// promgres patch: newer rustc warns about two unused items of this release.
#![allow(dead_code, unused_imports)]
//! # Simple usage
//!
//! ## Creating the server
//!
//! The easiest way to create a server is to call `Server::http()`.
//!
//! The `http()` function returns an `IoResult<Server>` which will return an error
//! in the case where the server creation fails (for example if the listening port is already
//! occupied).
//!
//! ```no_run
//! let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! ```
//!
//! A newly-created `Server` will immediately start listening for incoming connections and HTTP
//! requests.
//!
//! ## Receiving requests
//!
//! Calling `server.recv()` will block until the next request is available.
//! This function returns an `IoResult<Request>`, so you need to handle the possible errors.
//!
//! ```no_run
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//!
//! loop {
//!     // blocks until the next request is received
//!     let request = match server.recv() {
//!         Ok(rq) => rq,
//!         Err(e) => { println!("error: {}", e); break }
//!     };
//!
//!     // do something with the request
//!     // ...
//! }
//! ```
//!
//! In a real-case scenario, you will probably want to spawn multiple worker tasks and call
//! `server.recv()` on all of them. Like this:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use std::thread;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! let server = Arc::new(server);
//! let mut guards = Vec::with_capacity(4);
//!
//! for _ in (0 .. 4) {
//!     let server = server.clone();
//!
//!     let guard = thread::spawn(move || {
//!         loop {
//!             let rq = server.recv().unwrap();
//!
//!             // ...
//!         }
//!     });
//!
//!     guards.push(guard);
//! }
//! ```
//!
//! If you don't want to block, you can call `server.try_recv()` instead.
//!
//! ## Handling requests
//!
//! The `Request` object returned by `server.recv()` contains informations about the client's request.
//! The most useful methods are probably `request.method()` and `request.url()` which return
//! the requested method (`GET`, `POST`, etc.) and url.
//!
//! To handle a request, you need to create a `Response` object. See the docs of this object for
//! more infos. Here is an example of creating a `Response` from a file:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! ```
//!
//! All that remains to do is call `request.respond()`:
//!
//! ```no_run
//! # use std::fs::File;
//! # use std::path::Path;
//! # let server = tiny_http::Server::http("0.0.0.0:0").unwrap();
//! # let request = server.recv().unwrap();
//! # let response = tiny_http::Response::from_file(File::open(&Path::new("image.png")).unwrap());
//! let _ = request.respond(response);
//! ```
#![forbid(unsafe_code)]
#![deny(rust_2018_idioms)]
#![allow(clippy::match_like_matches_macro)]

#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
use zeroize::Zeroizing;

use std::error::Error;
use std::io::Error as IoError;
use std::io::ErrorKind as IoErrorKind;
use std::io::Result as IoResult;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::atomic::AtomicBool;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use client::ClientConnection;
pub use client::HeadLimits;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::time::Instant;
use connection::Connection;
use util::MessagesQueue;

pub use common::{HTTPVersion, Header, HeaderField, Method, StatusCode};
pub use connection::{ConfigListenAddr, ListenAddr, Listener};
pub use request::{ReadWrite, Request};
pub use response::{Response, ResponseBox};
pub use test::TestRequest;
#[cfg(feature = "ssl-rustls")]
pub use ssl::TlsConfigSource;

mod client;
mod common;
mod connection;
mod request;
mod response;
mod ssl;
mod test;
mod util;

/// The main class of this library.
///
/// Destroying this object will immediately close the listening socket and the reading
///  part of all the client's connections. Requests that have already been returned by
///  the `recv()` function will not close and the responses will be transferred to the client.
pub struct Server {
    // should be false as long as the server exists
    // when set to true, all the subtasks will close within a few hundreds ms
    close: Arc<AtomicBool>,

    // queue for messages received by child threads
    messages: Arc<MessagesQueue<Message>>,

    // result of TcpListener::local_addr()
    listening_addr: ListenAddr,

    // promgres patch: what the accept loop has seen
    stats: Arc<ListenerStats>,
}

enum Message {
    Error(IoError),
    NewRequest(Request),
}

impl From<IoError> for Message {
    fn from(e: IoError) -> Message {
        Message::Error(e)
    }
}

impl From<Request> for Message {
    fn from(rq: Request) -> Message {
        Message::NewRequest(rq)
    }
}

// this trait is to make sure that Server implements Share and Send
#[doc(hidden)]
trait MustBeShareDummy: Sync + Send {}
#[doc(hidden)]
impl MustBeShareDummy for Server {}

pub struct IncomingRequests<'a> {
    server: &'a Server,
}

/// Represents the parameters required to create a server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The addresses to try to listen to.
    pub addr: ConfigListenAddr,

    /// If `Some`, then the server will use SSL to encode the communications.
    pub ssl: Option<SslConfig>,
}

/// Configuration of the server for SSL.
#[derive(Debug, Clone)]
pub struct SslConfig {
    /// Contains the public certificate to send to clients.
    pub certificate: Vec<u8>,
    /// Contains the ultra-secret private key used to decode communications.
    pub private_key: Vec<u8>,
}

impl Server {
    /// Shortcut for a simple server on a specific address.
    #[inline]
    pub fn http<A>(addr: A) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: None,
        })
    }

    /// Shortcut for an HTTPS server on a specific address.
    #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
    #[inline]
    pub fn https<A>(
        addr: A,
        config: SslConfig,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>>
    where
        A: ToSocketAddrs,
    {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::from_socket_addrs(addr)?,
            ssl: Some(config),
        })
    }

    #[cfg(unix)]
    #[inline]
    /// Shortcut for a UNIX socket server at a specific path
    pub fn http_unix(
        path: &std::path::Path,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Server::new(ServerConfig {
            addr: ConfigListenAddr::unix_from_path(path),
            ssl: None,
        })
    }

    /// Builds a new server that listens on the specified address.
    pub fn new(config: ServerConfig) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = config.addr.bind()?;
        Self::from_listener(listener, config.ssl)
    }

    /// Builds a new server using the specified TCP listener.
    ///
    /// This is useful if you've constructed TcpListener using some less usual method
    /// such as from systemd. For other cases, you probably want the `new()` function.
    pub fn from_listener<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::from_listener_with_limits(listener, ssl_config, ConnectionLimits::default())
    }

    /// promgres patch: a TLS server whose rustls configuration `source` gives per accepted
    /// connection (so certificates can be swapped while it runs), bounded by `limits`.
    #[cfg(feature = "ssl-rustls")]
    pub fn from_listener_with_tls<L: Into<Listener>>(
        listener: L,
        source: TlsConfigSource,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        Self::start(
            listener.into(),
            Some(crate::ssl::SslContextImpl::from_source(source)),
            limits,
        )
    }

    /// promgres patch: a server whose accepted connections are bounded by `limits`.
    pub fn from_listener_with_limits<L: Into<Listener>>(
        listener: L,
        ssl_config: Option<SslConfig>,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        let listener = listener.into();
        // building the SSL capabilities
        #[cfg(all(feature = "ssl-openssl", feature = "ssl-rustls"))]
        compile_error!(
            "Features 'ssl-openssl' and 'ssl-rustls' must not be enabled at the same time"
        );
        let ssl: Option<SslContext> = {
            match ssl_config {
                #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
                Some(config) => Some(SslContext::from_pem(
                    config.certificate,
                    Zeroizing::new(config.private_key),
                )?),
                #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
                Some(_) => return Err(
                    "Building a server with SSL requires enabling the `ssl` feature in tiny-http"
                        .into(),
                ),
                None => None,
            }
        };
        Self::start(listener, ssl, limits)
    }

    fn start(
        listener: Listener,
        ssl: Option<SslContext>,
        limits: ConnectionLimits,
    ) -> Result<Server, Box<dyn Error + Send + Sync + 'static>> {
        // building the "close" variable
        let close_trigger = Arc::new(AtomicBool::new(false));

        // building the TcpListener
        let (server, local_addr) = {
            let local_addr = listener.local_addr()?;
            log::debug!("Server listening on {}", local_addr);
            (listener, local_addr)
        };

        // creating a task where server.accept() is continuously called
        // and ClientConnection objects are pushed in the messages queue
        let messages = MessagesQueue::with_capacity(8);
        let stats = Arc::new(ListenerStats::default());

        let inside_close_trigger = close_trigger.clone();
        let inside_messages = messages.clone();
        let inside_stats = stats.clone();
        thread::Builder::new()
            .name("tiny-http-accept".into())
            .spawn(move || {
                accept_loop(
                    server,
                    ssl,
                    limits,
                    inside_stats,
                    inside_close_trigger,
                    inside_messages,
                )
            })?;

        // result
        Ok(Server {
            messages,
            close: close_trigger,
            listening_addr: local_addr,
            stats,
        })
    }

    /// Returns an iterator for all the incoming requests.
    ///
    /// The iterator will return `None` if the server socket is shutdown.
    #[inline]
    pub fn incoming_requests(&self) -> IncomingRequests<'_> {
        IncomingRequests { server: self }
    }

    /// Returns the address the server is listening to.
    /// promgres patch: counts of the accept loop and of the connections it served.
    pub fn stats(&self) -> Arc<ListenerStats> {
        self.stats.clone()
    }

    #[inline]
    pub fn server_addr(&self) -> ListenAddr {
        self.listening_addr.clone()
    }

    /// Returns the number of clients currently connected to the server.
    pub fn num_connections(&self) -> usize {
        unimplemented!()
        //self.requests_receiver.lock().len()
    }

    /// Blocks until an HTTP request has been submitted and returns it.
    pub fn recv(&self) -> IoResult<Request> {
        match self.messages.pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(rq),
            None => Err(IoError::new(IoErrorKind::Other, "thread unblocked")),
        }
    }

    /// Same as `recv()` but doesn't block longer than timeout
    pub fn recv_timeout(&self, timeout: Duration) -> IoResult<Option<Request>> {
        match self.messages.pop_timeout(timeout) {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Same as `recv()` but doesn't block.
    pub fn try_recv(&self) -> IoResult<Option<Request>> {
        match self.messages.try_pop() {
            Some(Message::Error(err)) => Err(err),
            Some(Message::NewRequest(rq)) => Ok(Some(rq)),
            None => Ok(None),
        }
    }

    /// Unblock thread stuck in recv() or incoming_requests().
    /// If there are several such threads, only one is unblocked.
    /// This method allows graceful shutdown of server.
    pub fn unblock(&self) {
        self.messages.unblock();
    }
}

impl Iterator for IncomingRequests<'_> {
    type Item = Request;
    fn next(&mut self) -> Option<Request> {
        self.server.recv().ok()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.close.store(true, Relaxed);
        // Connect briefly to ourselves to unblock the accept thread
        let maybe_stream = match &self.listening_addr {
            ListenAddr::IP(addr) => TcpStream::connect(addr).map(Connection::from),
            #[cfg(unix)]
            ListenAddr::Unix(addr) => {
                // TODO: use connect_addr when its stabilized.
                let path = addr.as_pathname().unwrap();
                std::os::unix::net::UnixStream::connect(path).map(Connection::from)
            }
        };
        if let Ok(stream) = maybe_stream {
            let _ = stream.shutdown(Shutdown::Both);
        }

        #[cfg(unix)]
        if let ListenAddr::Unix(addr) = &self.listening_addr {
            if let Some(path) = addr.as_pathname() {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// promgres patch: bounds on accepted connections. The defaults keep tiny_http's behaviour
/// (no timeouts, no connection limit) apart from the bounded request head.
#[derive(Debug, Clone)]
pub struct ConnectionLimits {
    /// Read timeout of each accepted socket: a client silent this long (idle between
    /// requests or mid-request) is disconnected.
    pub read_timeout: Option<Duration>,
    /// Write timeout of each accepted socket: a client that stops reading its answer.
    pub write_timeout: Option<Duration>,
    /// Connections served at once; further ones get a 503 and are closed at once.
    pub max_connections: usize,
    pub head: HeadLimits,
    /// Stack of each connection thread (None: the platform default).
    pub thread_stack_bytes: Option<usize>,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            read_timeout: None,
            write_timeout: None,
            max_connections: usize::MAX,
            head: HeadLimits::default(),
            thread_stack_bytes: None,
        }
    }
}

/// promgres patch: what the accept loop has seen, for the embedding server's metrics.
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Connections accepted (refused ones included).
    pub accepted: AtomicU64,
    /// Connections refused because `max_connections` were open.
    pub refused: AtomicU64,
    /// Failed accept() calls and accepted sockets that could not be set up.
    pub accept_errors: AtomicU64,
    /// Request heads answered 431.
    pub heads_too_large: AtomicU64,
    /// Connections open now.
    pub open: AtomicUsize,
}

/// Decrements the open-connection count when the connection's task ends (or is dropped
/// unrun).
struct OpenConnection(Arc<ListenerStats>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Relaxed);
    }
}

/// Logs at most one line per period, with the number of events it stood for.
struct RateLimitedLog {
    period: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimitedLog {
    fn new(period: Duration) -> Self {
        RateLimitedLog {
            period,
            last: None,
            suppressed: 0,
        }
    }

    fn log(&mut self, message: std::fmt::Arguments<'_>) {
        if self.last.map_or(true, |l| l.elapsed() >= self.period) {
            if self.suppressed > 0 {
                log::warn!("{} (and {} more since the last report)", message, self.suppressed);
            } else {
                log::warn!("{}", message);
            }
            self.last = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

const REFUSAL_BODY: &str = "too many open connections; retry later\n";

/// The pause after a failed accept: none for errors of one connection (it is gone; the next
/// may be fine), growing from 5 ms to 1 s for errors of the process or system (out of file
/// descriptors, memory or buffers), which a busy loop would only make worse.
fn accept_backoff(e: &IoError, previous: Duration) -> Duration {
    match e.kind() {
        IoErrorKind::ConnectionAborted | IoErrorKind::ConnectionReset | IoErrorKind::Interrupted => {
            Duration::ZERO
        }
        _ => (previous * 2).clamp(Duration::from_millis(5), Duration::from_secs(1)),
    }
}

/// promgres patch: the accept loop. It ends only when the server is dropped: every accept
/// error is counted, logged (at most once per 10 s) and backed off from, never fatal; tiny_http
/// used to end the loop on the first error (EMFILE, or EAGAIN from a listener timeout), after
/// which the server never accepted again.
#[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
type SslContext = ();
#[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
type SslContext = crate::ssl::SslContextImpl;

fn accept_loop(
    server: Listener,
    ssl: Option<SslContext>,
    limits: ConnectionLimits,
    stats: Arc<ListenerStats>,
    close: Arc<AtomicBool>,
    messages: Arc<MessagesQueue<Message>>,
) {
    // a tasks pool is used to dispatch the connections into threads
    let tasks_pool = util::TaskPool::with_stack_size(limits.thread_stack_bytes);
    let mut errors = RateLimitedLog::new(Duration::from_secs(10));
    let mut refusals = RateLimitedLog::new(Duration::from_secs(10));
    let mut backoff = Duration::ZERO;

    log::debug!("Running accept thread");
    while !close.load(Relaxed) {
        let sock = match server.accept() {
            Ok((sock, _)) => sock,
            Err(e) => {
                stats.accept_errors.fetch_add(1, Relaxed);
                backoff = accept_backoff(&e, backoff);
                errors.log(format_args!(
                    "HTTP accept failed: {}; accepting again in {:?}",
                    e, backoff
                ));
                thread::sleep(backoff);
                continue;
            }
        };
        if close.load(Relaxed) {
            break;
        }
        stats.accepted.fetch_add(1, Relaxed);
        if stats.open.load(Relaxed) >= limits.max_connections {
            stats.refused.fetch_add(1, Relaxed);
            refusals.log(format_args!(
                "HTTP connection refused: {} connections are open, the limit",
                limits.max_connections
            ));
            refuse(sock);
            continue;
        }
        match serve_connection(sock, &ssl, &limits, &stats, &messages, &tasks_pool) {
            Ok(()) => backoff = Duration::ZERO,
            Err(e) => {
                // Setting up the accepted socket failed: out of descriptors for its clone,
                // or of threads. The connection is closed; back off as for accept errors.
                stats.accept_errors.fetch_add(1, Relaxed);
                backoff = accept_backoff(&e, backoff);
                errors.log(format_args!(
                    "HTTP connection dropped: {}; accepting again in {:?}",
                    e, backoff
                ));
                thread::sleep(backoff);
            }
        }
    }
    log::debug!("Terminating accept thread");
}

/// Answers a connection over the limit with a 503 and closes it, without waiting on it.
fn refuse(sock: Connection) {
    use std::io::Write;
    let _ = sock.configure(None, Some(Duration::from_millis(100)));
    let mut sock = sock;
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{}",
        REFUSAL_BODY.len(),
        REFUSAL_BODY
    );
    let _ = sock.write_all(answer.as_bytes());
    let _ = sock.shutdown(Shutdown::Both);
}

fn serve_connection(
    sock: Connection,
    ssl: &Option<SslContext>,
    limits: &ConnectionLimits,
    stats: &Arc<ListenerStats>,
    messages: &Arc<MessagesQueue<Message>>,
    tasks_pool: &util::TaskPool,
) -> IoResult<()> {
    use util::RefinedTcpStream;
    sock.configure(limits.read_timeout, limits.write_timeout)?;
    let (read_closable, write_closable) = match ssl {
        None => RefinedTcpStream::new(sock)?,
        #[cfg(any(feature = "ssl-openssl", feature = "ssl-rustls"))]
        Some(ssl) => RefinedTcpStream::new(
            ssl.accept(sock)
                .map_err(|e| IoError::new(IoErrorKind::Other, e.to_string()))?,
        )?,
        #[cfg(not(any(feature = "ssl-openssl", feature = "ssl-rustls")))]
        Some(()) => RefinedTcpStream::new(sock)?,
    };
    stats.open.fetch_add(1, Relaxed);
    let open = OpenConnection(stats.clone());
    let client = ClientConnection::with_limits(
        write_closable,
        read_closable,
        limits.head,
        Some(stats.clone()),
    );
    let messages = messages.clone();
    let mut task = Some((client, open));
    tasks_pool.spawn(Box::new(move || {
        if let Some((client, _open)) = task.take() {
            // Synchronization is needed for HTTPS requests to avoid a deadlock
            if client.secure() {
                let (sender, receiver) = mpsc::channel();
                for rq in client {
                    messages.push(rq.with_notify_sender(sender.clone()).into());
                    if receiver.recv().is_err() {
                        break;
                    }
                }
            } else {
                for rq in client {
                    messages.push(rq.into());
                }
            }
        }
    }))
}
