//! A latency-injecting TCP proxy for the benchmarks: `127.0.0.1:<port>` in front of
//! one loopback upstream (a PostgreSQL server), adding `rtt / 2` of one-way delay to
//! every chunk in each direction, and counting round trips.
//!
//! Delay: each direction of each connection is a reader and a writer joined by a
//! queue of timestamped chunks. The reader stamps a chunk when it reads it and queues
//! it at once; the writer writes it at `stamp + rtt / 2`. So order is kept, and the
//! delay is not serialised: a burst of chunks read within a microsecond leaves within
//! a microsecond, `rtt / 2` later, and throughput is not one chunk per delay.
//!
//! Round trips: counted when the client sends data after having received data from
//! the server since its previous send, plus the first send of a connection; i.e. the
//! client→server bursts that follow a server→client reply. A pipelined transaction
//! (four statements written before any reply) is one; four statements each waiting
//! for its reply are four. The count is the sum over all connections.
//!
//! Why threads and not tokio tasks for the forwarding: tokio's timer has a 1 ms
//! resolution, so a 0.25 ms one-way delay would become 1–2 ms. Here the writers
//! sleep with `std::thread::sleep` (nanosleep), minus the overshoot measured when the
//! proxy starts (the kernel's timer slack, about 50–60 µs), and yield for the last
//! few microseconds. The proxy is independent of any runtime, so it also carries the
//! blocking (libpq) connections of the sync store.
//!
//! Bounded: the upstream must be a loopback address, the listener is on 127.0.0.1,
//! peers that are not loopback are refused, at most [`MAX_CONNECTIONS`] connections
//! are open at once, and dropping the proxy closes every connection and joins every
//! thread.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The most connections the proxy carries at once; more are refused (closed).
pub const MAX_CONNECTIONS: usize = 64;

const CHUNK: usize = 64 * 1024;

/// A running proxy; stops (closes every connection) when dropped.
pub struct Proxy {
    addr: SocketAddr,
    rtt: Duration,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

struct Shared {
    upstream: SocketAddr,
    one_way: Duration,
    /// How much later than asked `thread::sleep` wakes, measured at start.
    overshoot: Duration,
    stop: AtomicBool,
    round_trips: AtomicU64,
    open: AtomicUsize,
    /// The sockets of every open connection, by connection number, to shut them
    /// down on drop.
    sockets: Mutex<HashMap<u64, [TcpStream; 2]>>,
    next_link: AtomicU64,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// One connection's round-trip state.
struct Link {
    id: u64,
    alive: AtomicUsize,
    /// Set when server data is delivered to the client; cleared (and counted) by the
    /// client's next send. Starts set, so the first send counts.
    replied: AtomicBool,
}

enum Item {
    Data(Instant, Vec<u8>),
    Eof(Instant),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

impl Proxy {
    /// Listens on `127.0.0.1:0` and forwards every connection to `upstream` (a
    /// loopback address), `rtt / 2` later in each direction.
    pub fn start(upstream: SocketAddr, rtt: Duration) -> Proxy {
        assert!(
            upstream.ip().is_loopback(),
            "the proxy forwards to loopback addresses only, not {upstream}"
        );
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            upstream,
            one_way: rtt / 2,
            overshoot: measure_overshoot(),
            stop: AtomicBool::new(false),
            round_trips: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            sockets: Mutex::new(HashMap::new()),
            next_link: AtomicU64::new(0),
            threads: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(format!("proxy-accept-{}", addr.port()))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn the proxy's acceptor")
        };
        Proxy {
            addr,
            rtt,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The round trip this proxy adds.
    pub fn rtt(&self) -> Duration {
        self.rtt
    }

    /// Round trips counted since the start or the last [`reset`](Proxy::reset).
    pub fn round_trips(&self) -> u64 {
        self.shared.round_trips.load(Ordering::SeqCst)
    }

    /// Sets the round-trip count to zero.
    pub fn reset(&self) {
        self.shared.round_trips.store(0, Ordering::SeqCst);
    }

    /// The `thread::sleep` overshoot the writers compensate for.
    pub fn sleep_overshoot(&self) -> Duration {
        self.shared.overshoot
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor, which then sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for (_, sockets) in self.shared.sockets.lock().expect("proxy sockets").drain() {
            for socket in sockets {
                let _ = socket.shutdown(Shutdown::Both);
            }
        }
        let threads: Vec<_> = self
            .shared
            .threads
            .lock()
            .expect("proxy threads")
            .drain(..)
            .collect();
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The median amount by which `thread::sleep(100 µs)` oversleeps here.
fn measure_overshoot() -> Duration {
    let asked = Duration::from_micros(100);
    let mut late: Vec<Duration> = (0..21)
        .map(|_| {
            let started = Instant::now();
            std::thread::sleep(asked);
            started.elapsed().saturating_sub(asked)
        })
        .collect();
    late.sort();
    late[late.len() / 2].min(Duration::from_micros(200))
}

/// Sleeps until `due`: `thread::sleep` to about the overshoot before it, then yields.
fn sleep_until(due: Instant, overshoot: Duration) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > overshoot + Duration::from_micros(10) {
            std::thread::sleep(left - overshoot);
        } else {
            std::thread::yield_now();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let loopback_peer = client.peer_addr().is_ok_and(|p| p.ip().is_loopback());
        if !loopback_peer || shared.open.load(Ordering::SeqCst) >= MAX_CONNECTIONS {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))
        else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        if let Err(err) = start_link(&shared, client, server) {
            eprintln!("proxy: cannot start a connection: {err}");
        }
    }
}

fn start_link(shared: &Arc<Shared>, client: TcpStream, server: TcpStream) -> std::io::Result<()> {
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    let id = shared.next_link.fetch_add(1, Ordering::SeqCst);
    shared
        .sockets
        .lock()
        .expect("proxy sockets")
        .insert(id, [client.try_clone()?, server.try_clone()?]);
    shared.open.fetch_add(1, Ordering::SeqCst);
    let link = Arc::new(Link {
        id,
        replied: AtomicBool::new(true),
        // The last of the four threads to finish closes the connection.
        alive: AtomicUsize::new(4),
    });
    let mut threads = shared.threads.lock().expect("proxy threads");
    for (direction, from, to) in [
        (
            Direction::ToServer,
            client.try_clone()?,
            server.try_clone()?,
        ),
        (Direction::ToClient, server, client),
    ] {
        let (tx, rx) = mpsc::channel::<Item>();
        let name = match direction {
            Direction::ToServer => "proxy-c2s",
            Direction::ToClient => "proxy-s2c",
        };
        let reader = {
            let (shared, link) = (Arc::clone(shared), Arc::clone(&link));
            let (from, to) = (from.try_clone()?, to.try_clone()?);
            std::thread::Builder::new()
                .name(format!("{name}-read"))
                .spawn(move || {
                    read_side(direction, from, to, tx, &shared, &link);
                    finish(&shared, &link);
                })?
        };
        let writer = {
            let (shared, link) = (Arc::clone(shared), Arc::clone(&link));
            std::thread::Builder::new()
                .name(format!("{name}-write"))
                .spawn(move || {
                    write_side(direction, from, to, rx, &shared, &link);
                    finish(&shared, &link);
                })?
        };
        threads.push(reader);
        threads.push(writer);
    }
    // Forget the threads of connections that have ended.
    threads.retain(|t| !t.is_finished());
    Ok(())
}

fn finish(shared: &Shared, link: &Link) {
    if link.alive.fetch_sub(1, Ordering::SeqCst) == 1 {
        shared
            .sockets
            .lock()
            .expect("proxy sockets")
            .remove(&link.id);
        shared.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Reads chunks from `from`, stamps and queues them; counts the client's sends.
fn read_side(
    direction: Direction,
    mut from: TcpStream,
    to: TcpStream,
    tx: mpsc::Sender<Item>,
    shared: &Shared,
    link: &Link,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => {
                let _ = tx.send(Item::Eof(Instant::now()));
                return;
            }
            Ok(n) => {
                let at = Instant::now();
                if direction == Direction::ToServer && link.replied.swap(false, Ordering::SeqCst) {
                    shared.round_trips.fetch_add(1, Ordering::SeqCst);
                }
                if tx.send(Item::Data(at, buf[..n].to_vec())).is_err() {
                    return;
                }
            }
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => {
                // Reset or shut down: close both sides.
                let _ = from.shutdown(Shutdown::Both);
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
}

/// Writes each queued chunk to `to` at its stamp plus the one-way delay.
fn write_side(
    direction: Direction,
    from: TcpStream,
    mut to: TcpStream,
    rx: mpsc::Receiver<Item>,
    shared: &Shared,
    link: &Link,
) {
    for item in rx {
        match item {
            Item::Data(at, data) => {
                sleep_until(at + shared.one_way, shared.overshoot);
                if direction == Direction::ToClient {
                    // Before the write: the client cannot answer data it has not got.
                    link.replied.store(true, Ordering::SeqCst);
                }
                if to.write_all(&data).is_err() {
                    let _ = from.shutdown(Shutdown::Both);
                    let _ = to.shutdown(Shutdown::Both);
                    return;
                }
            }
            Item::Eof(at) => {
                sleep_until(at + shared.one_way, shared.overshoot);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
}
