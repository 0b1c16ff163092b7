//! The hubs' doorbell on PostgreSQL: `NOTIFY` on one channel, and a connection of its own per
//! hub that `LISTEN`s and hands the payloads on, connecting again (after a second) whenever it is
//! lost. Notifications are delivered only to sessions listening at the time: the doorbell is a
//! hint, the tables the truth.

use super::super::StoreError;
use super::super::domain::Doorbell;
use super::PgStore;
use std::time::Duration;

const CHANNEL: &str = "redtether_doorbell";
const RECONNECT: Duration = Duration::from_secs(1);

impl Doorbell for PgStore {
    fn ring(&self, payload: &str) -> Result<(), StoreError> {
        self.wait(async {
            self.soft_client()
                .await?
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map_err(StoreError::from)
        })?;
        Ok(())
    }

    fn listen(&self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let (config, tls) = self.listen.clone();
        // On the store's runtime, which lives as long as the store; ends when no one listens.
        self.handle.spawn(async move {
            while !tx.is_closed() {
                match listen_once(&config, tls.clone(), &tx).await {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(error = %e, "hub store: the doorbell's connection ended; again in 1 s"),
                }
                tokio::time::sleep(RECONNECT).await;
            }
        });
        rx
    }
}

/// Listens until the connection ends (an error) or no one listens any more (`Ok`).
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    tx: &tokio::sync::mpsc::UnboundedSender<String>,
) -> Result<(), tokio_postgres::Error> {
    use futures_util::StreamExt;
    let (client, mut connection) = config.connect(tls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    // The LISTEN goes out as the connection is polled below.
    let statement = format!("LISTEN {CHANNEL}");
    let listening = client.batch_execute(&statement);
    tokio::pin!(listening);
    let mut listened = false;
    loop {
        tokio::select! {
            result = &mut listening, if !listened => {
                result?;
                listened = true;
            }
            message = messages.next() => match message {
                Some(Ok(tokio_postgres::AsyncMessage::Notification(n))) => {
                    if tx.send(n.payload().to_string()).is_err() {
                        return Ok(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e),
                None => return Ok(()),
            },
        }
    }
}
