//! `LISTEN outbox_event`: a wake-up whenever a payments transaction adds outbox rows. If the
//! listening connection fails, the relay just polls.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

/// Wake-ups, and the connection that delivers them.
pub struct Wake {
    rx: Option<mpsc::Receiver<()>>,
    _client: Option<tokio_postgres::Client>,
}

impl Wake {
    /// Waits for a notification or `timeout`, whichever comes first.
    pub async fn wait(&mut self, timeout: Duration) {
        match &mut self.rx {
            Some(rx) => {
                let _ = tokio::time::timeout(timeout, rx.recv()).await;
                // Coalesce a burst of notifications into one wake-up.
                while rx.try_recv().is_ok() {}
            }
            None => tokio::time::sleep(timeout).await,
        }
    }
}

pub async fn listen(url: &str, password: Option<String>) -> Wake {
    let polling = Wake { rx: None, _client: None };
    let mut cfg: tokio_postgres::Config = match url.parse() {
        Ok(c) => c,
        Err(_) => return polling,
    };
    if let Some(p) = password {
        cfg.password(p);
    }
    let Ok((client, mut conn)) = cfg.connect(tokio_postgres::NoTls).await else {
        tracing::warn!("cannot open the LISTEN connection; polling only");
        return polling;
    };
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| conn.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(_))) => {
                    let _ = tx.try_send(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "LISTEN connection lost; polling only");
                    return;
                }
                None => return,
            }
        }
    });
    if let Err(e) = client.batch_execute("LISTEN outbox_event").await {
        tracing::warn!(error = %e, "LISTEN failed; polling only");
        return polling;
    }
    Wake { rx: Some(rx), _client: Some(client) }
}
