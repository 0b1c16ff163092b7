//! The daemon's side of the control socket.

use super::{ControlError, ControlResponse, MAX_REQUEST};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Answers control requests; implemented by the agent and by the hub, each with its own
/// request type.
pub trait Handler: Send + Sync + 'static {
    type Request: DeserializeOwned + Send;
    fn handle(&self, request: Self::Request) -> impl Future<Output = ControlResponse> + Send;
}

pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
}

impl ControlServer {
    /// Binds the socket at `path`, replacing a stale one. The caller holds the state-directory
    /// lock, so no other daemon can be using it.
    pub fn bind(path: &Path) -> Result<ControlServer, ControlError> {
        let err = |source| ControlError::Bind { path: path.to_path_buf(), source };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let listener = UnixListener::bind(path).map_err(err)?;
        // The state directory is 0700, so nobody else could reach the socket between bind and
        // chmod; the mode matters when an operator loosens the directory.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
        Ok(ControlServer { listener, path: path.to_path_buf() })
    }

    /// Serves until `cancel` fires, then removes the socket file.
    pub async fn serve<H: Handler>(self, handler: Arc<H>, cancel: CancellationToken) {
        let tasks = TaskTracker::new();
        let own_uid = nix::unistd::geteuid().as_raw();
        loop {
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "control socket: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            // Defence in depth behind the file mode: only root and the agent's own user.
            match stream.peer_cred() {
                Ok(cred) if cred.uid() == 0 || cred.uid() == own_uid => {}
                Ok(cred) => {
                    tracing::warn!(uid = cred.uid(), "control socket: refused a peer of another user");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: cannot read peer credentials");
                    continue;
                }
            }
            let handler = Arc::clone(&handler);
            let cancel = cancel.clone();
            tasks.spawn(async move {
                tokio::select! {
                    _ = cancel.cancelled() => {}
                    _ = serve_connection(stream, handler.as_ref()) => {}
                }
            });
        }
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
        tasks.close();
        tasks.wait().await;
    }
}

async fn serve_connection<H: Handler>(stream: UnixStream, handler: &H) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line).await {
            Ok(0) => return,
            Ok(_) if !line.ends_with('\n') => {
                let _ =
                    send(&mut write, &ControlResponse::error("request too long or not terminated by a newline")).await;
                return;
            }
            Ok(_) => {}
            Err(e) => {
                let _ = send(&mut write, &ControlResponse::error(format!("unreadable request: {e}"))).await;
                return;
            }
        }
        let response = match serde_json::from_str::<H::Request>(line.trim_end()) {
            Ok(request) => handler.handle(request).await,
            Err(e) => ControlResponse::error(format!("bad request: {e}")),
        };
        if send(&mut write, &response).await.is_err() {
            return;
        }
    }
}

async fn send(write: &mut tokio::net::unix::OwnedWriteHalf, response: &ControlResponse) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(response).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    write.write_all(&bytes).await
}
