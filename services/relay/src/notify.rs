//! `LISTEN outbox_event`: a wake-up whenever a payments transaction adds outbox rows.
//!
//! A background task keeps the listening connection: when it drops (the database restarts,
//! an administrator terminates it) the task reconnects with a capped backoff and LISTENs
//! again, waking the relay once on every (re)connect in case a notification was missed.
//! Meanwhile [`Wake::wait`] still waits its full timeout, so the relay keeps polling at its
//! poll interval instead of spinning.

use std::time::Duration;

use paymesh_core::backoff::Backoff;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

/// `application_name` of the listening connection (visible in `pg_stat_activity`).
pub const APPLICATION_NAME: &str = "paymesh-relay-listen";

/// Wake-ups, and the task that keeps the connection delivering them.
pub struct Wake {
    rx: mpsc::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Wake {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Wake {
    /// Waits for a notification or `timeout`, whichever comes first.
    pub async fn wait(&mut self, timeout: Duration) {
        // The sender lives as long as the task, which lives as long as `self`: `recv` never
        // returns `None` early, so this never returns at once in a loop.
        let _ = tokio::time::timeout(timeout, self.rx.recv()).await;
        // Coalesce a burst of notifications into one wake-up.
        while self.rx.try_recv().is_ok() {}
    }
}

/// Starts listening on the database at `url` (in the background; never fails).
pub fn listen(url: &str, password: Option<String>) -> Wake {
    let (tx, rx) = mpsc::channel(1);
    let cfg = url.parse::<tokio_postgres::Config>().map(|mut c| {
        if let Some(p) = password {
            c.password(p);
        }
        c.application_name(APPLICATION_NAME);
        c.connect_timeout(Duration::from_secs(5));
        c
    });
    let task = tokio::spawn(async move {
        let cfg = match cfg {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "the database URL does not parse; polling only");
                return std::future::pending().await;
            }
        };
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
        loop {
            match session(&cfg, &tx, &mut backoff).await {
                Ok(()) => tracing::warn!(retry_in = ?backoff.peek(), "LISTEN connection closed; reconnecting (polling meanwhile)"),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.peek(), "LISTEN connection failed; reconnecting (polling meanwhile)")
                }
            }
            tokio::time::sleep(backoff.next_wait()).await;
        }
    });
    Wake { rx, task }
}

/// One listening connection, until it ends (resetting `backoff` once it listens).
async fn session(cfg: &tokio_postgres::Config, tx: &mpsc::Sender<()>, backoff: &mut Backoff) -> Result<(), tokio_postgres::Error> {
    let (client, mut conn) = cfg.connect(tokio_postgres::NoTls).await?;
    let mut drive = std::pin::pin!(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    let _ = tx.try_send(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            }
        }
    });
    tokio::select! {
        r = client.batch_execute("LISTEN outbox_event") => r?,
        r = &mut drive => return r,
    }
    tracing::info!("listening for outbox notifications");
    backoff.reset();
    // Rows may have been added while nobody listened: look once now.
    let _ = tx.try_send(());
    let ended = drive.await;
    drop(client);
    ended
}
