//! The daemon's maintenance socket (`<cache>/daemon.sock`): lets `fogvault
//! gc` run inside a live mount, where it can hold commits off while it
//! plans. Only root and the daemon's own user may use it (socket mode 0600
//! and a peer-credential check).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::vault::{GcReport, Vault};

/// A gc of a large vault may take a while; the client waits this long.
const GC_TIMEOUT: Duration = Duration::from_secs(3600);

pub fn socket_path(cache_dir: &Path) -> PathBuf {
    cache_dir.join("daemon.sock")
}

/// The socket file; removed when this is dropped (at unmount, or when the
/// mount fails after the socket was made).
pub struct SocketFile(PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Serve maintenance requests for `vault` on a background thread.
pub fn serve(vault: Arc<Vault>, cache_dir: &Path) -> Result<SocketFile> {
    let path = socket_path(cache_dir);
    // We hold the cache directory's lock: a socket file left here is stale.
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)
        .map_err(|e| Error::Repo(format!("cannot create maintenance socket {}: {e}", path.display())))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    let owner = nix::unistd::getuid().as_raw();
    std::thread::Builder::new().name("fogvault-maint".into()).spawn(move || {
        for conn in listener.incoming().flatten() {
            if let Err(e) = handle(&vault, conn, owner) {
                tracing::warn!(error = %e, "maintenance request failed");
            }
        }
    })?;
    Ok(SocketFile(path))
}

fn handle(vault: &Vault, mut conn: UnixStream, owner: u32) -> Result<()> {
    let cred = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|e| Error::Repo(format!("no peer credentials: {e}")))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new(&conn).take_line(&mut line)?;
    let reply = if cred.uid() != 0 && cred.uid() != owner {
        serde_json::json!({ "error": "only root and the mount's owner may run maintenance" })
    } else if line.trim() == "gc" {
        match vault.gc() {
            Ok(r) => serde_json::json!({ "ok": r }),
            Err(e) => serde_json::json!({ "error": e.to_string() }),
        }
    } else {
        serde_json::json!({ "error": "unknown request" })
    };
    conn.write_all(reply.to_string().as_bytes())?;
    conn.write_all(b"\n")?;
    Ok(())
}

trait TakeLine {
    fn take_line(&mut self, out: &mut String) -> std::io::Result<()>;
}

impl<R: BufRead> TakeLine for R {
    /// One request line, at most 64 bytes (requests are single words).
    fn take_line(&mut self, out: &mut String) -> std::io::Result<()> {
        let mut limited = std::io::Read::take(self, 64);
        limited.read_line(out).map(|_| ())
    }
}

/// Ask the daemon serving `cache_dir` to collect garbage. `Ok(None)`: no
/// daemon is serving that cache directory (collect in this process).
pub fn request_gc(cache_dir: &Path) -> Result<Option<GcReport>> {
    let Ok(mut conn) = UnixStream::connect(socket_path(cache_dir)) else {
        return Ok(None);
    };
    conn.set_read_timeout(Some(GC_TIMEOUT))?;
    conn.write_all(b"gc\n")?;
    let mut reply = String::new();
    BufReader::new(&conn).read_line(&mut reply)?;
    let v: serde_json::Value =
        serde_json::from_str(&reply).map_err(|_| Error::Repo("the daemon sent a malformed reply".into()))?;
    if let Some(e) = v.get("error").and_then(|e| e.as_str()) {
        return Err(Error::Repo(format!("the mounted daemon refused: {e}")));
    }
    let report = v.get("ok").cloned().ok_or_else(|| Error::Repo("the daemon sent a malformed reply".into()))?;
    Ok(Some(serde_json::from_value(report).map_err(|_| Error::Repo("the daemon sent a malformed reply".into()))?))
}
