//! The emulator's own thread, runtime, listener and connections.
//!
//! Role: serve the router on a socket from a dedicated thread with its own tokio
//! runtime, so the emulator works the same from synchronous tests and from inside
//! another runtime; close and reopen the port on command ([`crate::Outage::ClosedPort`]);
//! drop single connections when the fault script says so.
//! Inputs: a bound listener, the router, control commands. Outputs: served
//! connections.
//! Invariants: while the port is closed no socket listens on it and no
//! connection accepted before the closing stays open; reopening binds the same
//! address; a command returns only once it has taken effect.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tower::ServiceExt;

use crate::routes::ConnectionKill;

/// How long a control command may take before the caller gives up on it.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// Reopening the port retries while the old socket's address is still held.
const REBIND_ATTEMPTS: u32 = 100;
const REBIND_PAUSE: Duration = Duration::from_millis(20);
/// Pause after a failed `accept` (e.g. out of file descriptors), to not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

enum Command {
    /// Listen (`true`) or close the port and drop every connection (`false`).
    SetListening(bool, std_mpsc::Sender<io::Result<()>>),
}

/// Handle on the serving thread; dropping it stops the thread.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    commands: Option<mpsc::UnboundedSender<Command>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::SetListening(on, _) => write!(f, "SetListening({on})"),
        }
    }
}

impl Server {
    /// Binds `listen` and serves `app` from a new thread; returns once listening.
    pub(crate) fn start(listen: SocketAddr, app: Router) -> io::Result<Server> {
        let listener = std::net::TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (ready_tx, ready_rx) = std_mpsc::channel::<io::Result<()>>();
        let (commands, command_rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("mixpeek-mock".to_string())
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("mixpeek-mock-worker")
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        // The receiver only disappears if `start` already returned.
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    match TcpListener::from_std(listener) {
                        Ok(listener) => {
                            let _ = ready_tx.send(Ok(()));
                            serve(listener, addr, app, command_rx).await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
            })?;
        let started = ready_rx.recv().unwrap_or_else(|_| {
            Err(io::Error::other(
                "the emulator thread ended before it was listening",
            ))
        });
        let server = Server {
            addr,
            commands: Some(commands),
            thread: Some(thread),
        };
        // On failure, dropping `server` joins the thread that already gave up.
        started.map(|()| server)
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Closes (`false`) or reopens (`true`) the port; returns once done.
    pub(crate) fn set_listening(&self, listening: bool) -> io::Result<()> {
        let (reply_tx, reply_rx) = std_mpsc::channel();
        self.commands
            .as_ref()
            .ok_or_else(|| io::Error::other("the emulator is shut down"))?
            .send(Command::SetListening(listening, reply_tx))
            .map_err(|_| io::Error::other("the emulator thread has stopped"))?;
        reply_rx
            .recv_timeout(COMMAND_TIMEOUT)
            .map_err(|_| io::Error::other("the emulator thread did not answer"))?
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Closing the command channel ends `serve`, which drops every connection.
        self.commands.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the emulator thread panicked");
        }
    }
}

/// Accepts connections and carries out commands until the command channel closes.
async fn serve(
    listener: TcpListener,
    addr: SocketAddr,
    app: Router,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut listener = Some(listener);
    // Connections end when the sender of their generation is dropped; replacing
    // it drops every connection accepted so far.
    let mut generation = watch::channel(()).0;
    loop {
        tokio::select! {
            accepted = accept(listener.as_ref()) => match accepted {
                Ok(stream) => spawn_connection(stream, app.clone(), generation.subscribe()),
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            command = commands.recv() => match command {
                None => return,
                Some(Command::SetListening(true, reply)) => {
                    let result = match listener {
                        Some(_) => Ok(()),
                        None => rebind(addr).await.map(|l| listener = Some(l)),
                    };
                    let _ = reply.send(result);
                }
                Some(Command::SetListening(false, reply)) => {
                    listener = None;
                    generation = watch::channel(()).0;
                    let _ = reply.send(Ok(()));
                }
            },
        }
    }
}

async fn accept(listener: Option<&TcpListener>) -> io::Result<TcpStream> {
    match listener {
        Some(listener) => listener.accept().await.map(|(stream, _)| stream),
        None => std::future::pending().await,
    }
}

/// Binds `addr` again, retrying while the address is still in use.
async fn rebind(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut attempt = 1;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < REBIND_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            other => return other,
        }
    }
}

fn spawn_connection(stream: TcpStream, app: Router, mut generation: watch::Receiver<()>) {
    tokio::spawn(async move {
        // Small JSON answers: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        let kill = Arc::new(Notify::new());
        let handle = ConnectionKill(Arc::clone(&kill));
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(handle.clone());
            app.clone().oneshot(request)
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .serve_connection(TokioIo::new(stream), service);
        tokio::select! {
            result = connection => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            () = kill.notified() => tracing::debug!("connection dropped as scripted"),
            // Err: the generation's sender was dropped (port closed or shutdown).
            _ = generation.changed() => {}
        }
    });
}
