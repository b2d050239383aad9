//! The daemon's control socket: login (the handshake), session listing and
//! logout. Sessions are bound to the caller's uid (`SO_PEERCRED`) and expire.
//!
//! Frames are `len u32 LE ‖ payload` (at most 64 KiB). A request frame starts
//! with an op byte; every reply starts with a status byte (0 ok, 1 error
//! followed by a UTF-8 message).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use super::handshake::{FogResponder, ReplayCache, SessionKeys, UserInitiator};
use super::identity::{IdentityKey, MasterPublic};
use crate::error::{Error, Result};

const OP_LOGIN: u8 = 1;
const OP_LIST: u8 = 2;
const OP_LOGOUT: u8 = 3;
const MAX_FRAME: usize = 64 * 1024;
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the control socket of the mount at `mountpoint` lives.
pub fn socket_path(mountpoint: &Path) -> PathBuf {
    let canon = mountpoint.canonicalize().unwrap_or_else(|_| mountpoint.to_path_buf());
    let h = blake3::hash(canon.as_os_str().as_encoded_bytes());
    PathBuf::from("/run/fogvault").join(format!("{}.sock", &h.to_hex()[..16]))
}

/// A live session as listed by `fogvault sessions` (no secrets).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SessionInfo {
    pub session: String,
    pub user: String,
    pub uid: u32,
    pub started: u64,
    pub expires: u64,
}

struct Live {
    info: SessionInfo,
    _keys: SessionKeys,
}

pub struct ControlServer {
    mpk: MasterPublic,
    fog: IdentityKey,
    ttl: Duration,
    sessions: Mutex<Vec<Live>>,
    replay: Mutex<ReplayCache>,
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn read_frame(s: &mut UnixStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "frame too large"));
    }
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn write_frame(s: &mut UnixStream, payload: &[u8]) -> std::io::Result<()> {
    s.write_all(&(payload.len() as u32).to_le_bytes())?;
    s.write_all(payload)
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8];
    v.extend_from_slice(body);
    v
}

fn err(msg: &str) -> Vec<u8> {
    let mut v = vec![1u8];
    v.extend_from_slice(msg.as_bytes());
    v
}

impl ControlServer {
    /// Bind the socket for `mountpoint` and serve it on a background thread.
    pub fn start(mountpoint: &Path, mpk: MasterPublic, fog: IdentityKey, ttl: Duration) -> Result<Arc<Self>> {
        let path = socket_path(mountpoint);
        std::fs::create_dir_all(path.parent().expect("socket path has a parent"))?;
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)
            .map_err(|e| Error::Repo(format!("cannot create control socket {}: {e}", path.display())))?;
        // Anyone may connect: the handshake authenticates, SO_PEERCRED binds the uid.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
        let server = Arc::new(ControlServer {
            mpk,
            fog,
            ttl,
            sessions: Mutex::new(Vec::new()),
            replay: Mutex::new(ReplayCache::new(Duration::from_secs(300), 100_000)),
        });
        let me = Arc::clone(&server);
        std::thread::Builder::new().name("fogvault-control".into()).spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let me = Arc::clone(&me);
                let _ = std::thread::Builder::new().name("fogvault-control-conn".into()).spawn(move || {
                    if let Err(e) = me.serve(conn) {
                        tracing::info!(error = %e, "control connection ended with an error");
                    }
                });
            }
        })?;
        Ok(server)
    }

    /// Live (unexpired) sessions; expired ones are dropped.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        let t = now();
        let mut s = self.sessions.lock();
        s.retain(|l| l.info.expires > t);
        s.iter().map(|l| l.info.clone()).collect()
    }

    fn serve(&self, mut conn: UnixStream) -> Result<()> {
        conn.set_read_timeout(Some(IO_TIMEOUT))?;
        conn.set_write_timeout(Some(IO_TIMEOUT))?;
        let cred = nix::sys::socket::getsockopt(&conn, nix::sys::socket::sockopt::PeerCredentials)
            .map_err(|e| Error::Repo(format!("no peer credentials: {e}")))?;
        let uid = cred.uid();
        let req = read_frame(&mut conn)?;
        let Some((&op, body)) = req.split_first() else {
            return Ok(write_frame(&mut conn, &err("empty request"))?);
        };
        match op {
            OP_LOGIN => self.login(&mut conn, uid, body),
            OP_LIST => {
                let mine: Vec<SessionInfo> = self.sessions().into_iter().filter(|s| uid == 0 || s.uid == uid).collect();
                Ok(write_frame(&mut conn, &ok(&serde_json::to_vec(&mine).expect("serializes")))?)
            }
            OP_LOGOUT => {
                let mut s = self.sessions.lock();
                let before = s.len();
                s.retain(|l| l.info.uid != uid);
                let n = before - s.len();
                drop(s);
                Ok(write_frame(&mut conn, &ok(n.to_string().as_bytes()))?)
            }
            _ => Ok(write_frame(&mut conn, &err("unknown request"))?),
        }
    }

    fn login(&self, conn: &mut UnixStream, uid: u32, msg1: &[u8]) -> Result<()> {
        let responder = FogResponder::respond(&self.fog, &mut self.replay.lock(), msg1, |_| Ok(()));
        let (responder, msg2) = match responder {
            Ok(r) => r,
            Err(e) => return Ok(write_frame(conn, &err(&e.to_string()))?),
        };
        write_frame(conn, &ok(&msg2))?;
        let msg3 = read_frame(conn)?;
        let keys = match responder.finish(&self.mpk, &msg3) {
            Ok(k) => k,
            Err(e) => return Ok(write_frame(conn, &err(&e.to_string()))?),
        };
        let started = now();
        let info = SessionInfo {
            session: hex::encode(keys.session_id),
            user: keys.user.clone(),
            uid,
            started,
            expires: started + self.ttl.as_secs(),
        };
        tracing::info!(uid, "session established");
        self.sessions.lock().push(Live { info: info.clone(), _keys: keys });
        Ok(write_frame(conn, &ok(&serde_json::to_vec(&info).expect("serializes")))?)
    }
}

fn connect(mountpoint: &Path) -> Result<UnixStream> {
    let path = socket_path(mountpoint);
    let s = UnixStream::connect(&path).map_err(|e| {
        Error::Repo(format!(
            "no fogvault daemon with sessions at {} ({e}); is it mounted from a repository with an admin authority?",
            mountpoint.display()
        ))
    })?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    Ok(s)
}

fn reply(s: &mut UnixStream) -> Result<Vec<u8>> {
    let r = read_frame(s)?;
    match r.split_first() {
        Some((0, body)) => Ok(body.to_vec()),
        Some((1, msg)) => Err(Error::Repo(format!("refused by the fog node: {}", String::from_utf8_lossy(msg)))),
        _ => Err(Error::Repo("malformed reply from the fog node".into())),
    }
}

/// Run the handshake with the daemon serving `mountpoint`.
pub fn login(mountpoint: &Path, key: &IdentityKey, mpk: &MasterPublic) -> Result<SessionInfo> {
    let mut s = connect(mountpoint)?;
    let (user, msg1) = UserInitiator::start(key);
    let mut req = vec![OP_LOGIN];
    req.extend_from_slice(&msg1);
    write_frame(&mut s, &req)?;
    let msg2 = reply(&mut s)?;
    let (msg3, _keys) =
        user.finish(mpk, None, &msg2).map_err(|e| Error::Repo(format!("the fog node failed authentication: {e}")))?;
    write_frame(&mut s, &msg3)?;
    let info = reply(&mut s)?;
    serde_json::from_slice(&info).map_err(|_| Error::Repo("malformed reply from the fog node".into()))
}

pub fn list(mountpoint: &Path) -> Result<Vec<SessionInfo>> {
    let mut s = connect(mountpoint)?;
    write_frame(&mut s, &[OP_LIST])?;
    serde_json::from_slice(&reply(&mut s)?).map_err(|_| Error::Repo("malformed reply from the fog node".into()))
}

pub fn logout(mountpoint: &Path) -> Result<usize> {
    let mut s = connect(mountpoint)?;
    write_frame(&mut s, &[OP_LOGOUT])?;
    String::from_utf8_lossy(&reply(&mut s)?)
        .parse()
        .map_err(|_| Error::Repo("malformed reply from the fog node".into()))
}
