//! A database outage on demand: a TCP relay in front of the test's
//! PostgreSQL that the app's pool connects through. [`Relay::cut`] drops
//! every open connection (including ones a request is using) and refuses
//! new ones, as a crashed or failing-over server does; [`Relay::restore`]
//! lets connections through again. [`Relay::to`] puts one in front of
//! any TCP server (the test SMTP server).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

pub struct Relay {
    addr: SocketAddr,
    open: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<AbortHandle>>>,
    accept: AbortHandle,
}

impl Relay {
    /// Relays to the server `db` connects to; the returned pool (same
    /// database, user and password) goes through the relay and gives up
    /// acquiring after `acquire_timeout`.
    pub async fn in_front_of(db: &PgPool, acquire_timeout: Duration) -> (Relay, PgPool) {
        let options: PgConnectOptions = (*db.connect_options()).clone();
        let relay = Relay::to(format!("{}:{}", options.get_host(), options.get_port())).await;
        let addr = relay.addr;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(acquire_timeout)
            .connect_lazy_with(options.host("127.0.0.1").port(addr.port()));
        (relay, pool)
    }

    /// A relay to any TCP server at `upstream` (`host:port`): an SMTP
    /// server that goes away and comes back, say.
    pub async fn to(upstream: impl Into<String>) -> Relay {
        let upstream = upstream.into();
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let open = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let accept = {
            let (open, connections) = (open.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(Ordering::Acquire) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            })
            .abort_handle()
        };
        Relay {
            addr,
            open,
            connections,
            accept,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The database is gone: open connections drop, new ones are refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::Release);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    pub fn restore(&self) {
        self.open.store(true, Ordering::Release);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}
