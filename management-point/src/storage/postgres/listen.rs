//! The notification listener: one connection of its own that `LISTEN`s on `dm_changes` and
//! bumps the store's data version for every change another writer notified. A lost connection
//! is retried with capped, jittered back-off, and each (re)connection bumps the version too:
//! what was missed meanwhile is picked up by a full reload.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, NoTls};

/// The longest wait between two connection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Changed actions and devices kept for the next refresh; more than this is a full reload.
const MAX_CHANGED: usize = 10_000;

/// What the listener heard, for the store's readers.
#[derive(Debug, Default)]
pub(super) struct Heard {
    /// Bumped by each change that needs a full reload, and by each (re)connection.
    pub version: AtomicI64,
    /// Whether the notification connection is up.
    pub listening: AtomicBool,
    /// Actions and devices other writers made or changed since the last look.
    pub rows: Mutex<crate::storage::interface::Changed>,
}

impl Heard {
    /// Takes in one notification's payload: `<writer>` or `<writer> action <id>`.
    fn note(&self, payload: &str, me: &str) {
        let (writer, what) = payload.split_once(' ').unwrap_or((payload, ""));
        if writer == me {
            return;
        }
        let (kind, id) = what.split_once(' ').unwrap_or((what, ""));
        if let Ok(id) = id.parse::<i64>() {
            let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
            if rows.actions.len() + rows.devices.len() < MAX_CHANGED {
                match kind {
                    "action" => return rows.actions.push(id),
                    "device" => return rows.devices.push(id),
                    _ => {}
                }
            }
        }
        self.version.fetch_add(1, Ordering::SeqCst);
    }
}

/// A wait of about `d`, give or take a quarter, so instances do not reconnect in step.
fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 1];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    let quarter = d / 4;
    d - quarter + quarter * 2 * u32::from(b[0]) / 255
}

/// Listens until the runtime stops, over TLS when `tls` is given.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    me: String,
    heard: Arc<Heard>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let up = match &tls {
            Some(t) => match config.connect(t.clone()).await {
                Ok((client, conn)) => Ok(session(client, conn, &me, &heard).await),
                Err(e) => Err(e),
            },
            None => match config.connect(NoTls).await {
                Ok((client, conn)) => Ok(session(client, conn, &me, &heard).await),
                Err(e) => Err(e),
            },
        };
        match up {
            Ok(true) => backoff = Duration::from_millis(100),
            Ok(false) => {}
            Err(e) => log::warn!("cannot reach PostgreSQL for notifications: {e}"),
        }
        tokio::time::sleep(jittered(backoff)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// One notification connection, until it is lost; whether it listened.
async fn session<S, T>(
    client: tokio_postgres::Client,
    mut conn: tokio_postgres::Connection<S, T>,
    me: &str,
    heard: &Heard,
) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
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
    if let Err(e) = client.batch_execute("LISTEN dm_changes").await {
        driver.abort();
        log::warn!("LISTEN dm_changes failed: {e}");
        return false;
    }
    heard.version.fetch_add(1, Ordering::SeqCst);
    heard.listening.store(true, Ordering::SeqCst);
    log::info!("listening for changes by other dmmp instances (dm_changes)");
    while let Some(payload) = rx.recv().await {
        heard.note(&payload, me);
    }
    heard.listening.store(false, Ordering::SeqCst);
    log::warn!("lost the PostgreSQL notification connection: reconnecting, then reloading");
    driver.abort();
    drop(client);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_name_actions_or_ask_for_a_reload_and_own_ones_are_ignored() {
        let h = Heard::default();
        h.note("dmmp-serve-1-aa action 42", "dmmp-serve-2-bb");
        h.note("dmmp-serve-1-aa device 7", "dmmp-serve-2-bb");
        h.note("dmmp-serve-2-bb action 43", "dmmp-serve-2-bb");
        h.note("dmmp-serve-2-bb", "dmmp-serve-2-bb");
        assert_eq!(h.rows.lock().unwrap().actions, vec![42]);
        assert_eq!(h.rows.lock().unwrap().devices, vec![7]);
        assert_eq!(h.version.load(Ordering::SeqCst), 0);
        h.note("dmmp-admin-3-cc", "dmmp-serve-2-bb");
        h.note("dmmp-serve-1-aa action x", "dmmp-serve-2-bb");
        assert_eq!(h.version.load(Ordering::SeqCst), 2);
        for i in 0..MAX_CHANGED as i64 - 1 {
            h.note(&format!("w action {i}"), "me");
        }
        assert_eq!(h.version.load(Ordering::SeqCst), 3, "too many actions: a full reload");
    }
}
