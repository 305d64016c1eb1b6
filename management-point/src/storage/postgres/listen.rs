//! The notification listener: one connection of its own that `LISTEN`s on `dm_changes` and
//! bumps the store's data version for every change another writer notified. A lost connection
//! is retried with capped, jittered back-off, and each (re)connection bumps the version too:
//! what was missed meanwhile is picked up by a full reload.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A wait of about `d`, give or take a quarter, so instances do not reconnect in step.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let quarter = d / 4;
    d - quarter + quarter * 2 * u32::from(b[0]) / 255
}

/// Listens until the runtime stops.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    me: String,
    version: Arc<AtomicI64>,
    listening: Arc<AtomicBool>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match config.connect(NoTls).await {
            Ok((client, mut conn)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
                    while let Some(m) = messages.next().await {
                        match m {
                            Ok(AsyncMessage::Notification(n)) => {
                                if tx.send(n.payload().to_string()).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(e) => {
                                log::warn!("PostgreSQL notification connection: {e}");
                                return;
                            }
                        }
                    }
                });
                match client.batch_execute("LISTEN dm_changes").await {
                    Ok(()) => {
                        version.fetch_add(1, Ordering::SeqCst);
                        listening.store(true, Ordering::SeqCst);
                        backoff = Duration::from_millis(100);
                        log::info!("listening for changes by other dmmp instances (dm_changes)");
                        while let Some(writer) = rx.recv().await {
                            if writer != me {
                                version.fetch_add(1, Ordering::SeqCst);
                            }
                        }
                        listening.store(false, Ordering::SeqCst);
                        log::warn!(
                            "lost the PostgreSQL notification connection: reconnecting, then reloading"
                        );
                    }
                    Err(e) => log::warn!("LISTEN dm_changes failed: {e}"),
                }
                driver.abort();
                drop(client);
            }
            Err(e) => log::warn!("cannot reach PostgreSQL for notifications: {e}"),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}
