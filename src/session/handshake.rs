//! The three-message identity-based SIGMA handshake (docs/SESSION_HANDSHAKE.md).
//!
//! ```text
//! 1 U→F: "FVHS" 1 1 ‖ idU ‖ X=x·g1 ‖ nU
//! 2 F→U: "FVHS" 1 2 ‖ idF ‖ Y=y·g1 ‖ nF ‖ SigF(th2) ‖ MAC(kmF, "F" ‖ th2 ‖ idF)
//! 3 U→F: "FVHS" 1 3 ‖ SigU(th3) ‖ MAC(kmU, "U" ‖ th3 ‖ idU)
//! th2 = BLAKE3(msg1 ‖ msg2 up to nF), th3 = BLAKE3(msg1 ‖ msg2)
//! K = derive_key("fogvault v1 session master", x·Y ‖ th2); kmF, kmU, k_u2f,
//! k_f2u and the session id are derived from K with their own contexts.
//! ```

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bls12_381::{G1Affine, Scalar};
use group::Curve;

use super::ibs::{self, SIGNATURE_LEN, Signature};
use super::identity::{IdentityKey, MasterPublic, random_scalar};
use super::wire::{self, MAGIC, Reader, VERSION};
use crate::crypto::{Key32, random_bytes};

const MSG1: u8 = 1;
const MSG2: u8 = 2;
const MSG3: u8 = 3;
const MAC_LEN: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("malformed handshake message")]
    Malformed,
    #[error("unsupported handshake version {0}")]
    Version(u8),
    #[error("unexpected handshake message type {got} (expected {want})")]
    WrongMessage { got: u8, want: u8 },
    #[error("invalid group element in handshake")]
    BadPoint,
    #[error("identity signature does not verify for {0:?}")]
    BadSignature(String),
    #[error("key confirmation MAC does not verify")]
    BadMac,
    #[error("reflected handshake: peer claims our own identity")]
    Reflection,
    #[error("replayed handshake message")]
    Replay,
    #[error("unexpected peer identity {0:?}")]
    UnexpectedPeer(String),
    #[error("identity {0:?} is not allowed: {1}")]
    Refused(String, String),
}

/// What both ends hold after a successful handshake.
pub struct SessionKeys {
    pub session_id: [u8; 16],
    pub user: String,
    pub fog: String,
    pub user_to_fog: Key32,
    pub fog_to_user: Key32,
}

struct Schedule {
    mac_f: Key32,
    mac_u: Key32,
    keys: (Key32, Key32),
    session_id: [u8; 16],
}

fn schedule(dh: &G1Affine, th2: &[u8; 32]) -> Schedule {
    let mut ikm = dh.to_compressed().to_vec();
    ikm.extend_from_slice(th2);
    let master = Key32::from_bytes(blake3::derive_key("fogvault v1 session master", &ikm));
    let mut sid = [0u8; 16];
    sid.copy_from_slice(&master.derive("session id").as_bytes()[..16]);
    Schedule {
        mac_f: master.derive("session mac fog"),
        mac_u: master.derive("session mac user"),
        keys: (master.derive("session key user to fog"), master.derive("session key fog to user")),
        session_id: sid,
    }
}

/// Key-confirmation MAC. `blake3::Hash` compares in constant time.
fn mac(key: &Key32, role: &[u8], th: &[u8; 32], id: &str) -> blake3::Hash {
    let mut h = blake3::Hasher::new_keyed(key.as_bytes());
    h.update(role);
    h.update(th);
    h.update(id.as_bytes());
    h.finalize()
}

fn signed_payload(role: &[u8], th: &[u8; 32]) -> Vec<u8> {
    let mut m = b"fogvault v1 handshake ".to_vec();
    m.extend_from_slice(role);
    m.extend_from_slice(th);
    m
}

fn read_header(r: &mut Reader<'_>, want: u8) -> Result<(), HandshakeError> {
    let magic = r.take(4).ok_or(HandshakeError::Malformed)?;
    if magic != MAGIC {
        return Err(HandshakeError::Malformed);
    }
    let v = r.u8().ok_or(HandshakeError::Malformed)?;
    if v != VERSION {
        return Err(HandshakeError::Version(v));
    }
    let got = r.u8().ok_or(HandshakeError::Malformed)?;
    if got != want {
        return Err(HandshakeError::WrongMessage { got, want });
    }
    Ok(())
}

/// The user's side.
pub struct UserInitiator {
    key: IdentityKey,
    x: Scalar,
    msg1: Vec<u8>,
}

impl Drop for UserInitiator {
    fn drop(&mut self) {
        self.x = Scalar::zero();
    }
}

impl UserInitiator {
    /// Start a handshake: returns the state and message 1.
    pub fn start(key: &IdentityKey) -> (Self, Vec<u8>) {
        let x = random_scalar();
        let big_x = (G1Affine::generator() * x).to_affine();
        let mut nonce = [0u8; 32];
        random_bytes(&mut nonce);
        let mut msg1 = wire::header(MSG1);
        wire::put_id(&mut msg1, &key.id);
        msg1.extend_from_slice(&big_x.to_compressed());
        msg1.extend_from_slice(&nonce);
        (UserInitiator { key: key.clone(), x, msg1: msg1.clone() }, msg1)
    }

    /// Process message 2; returns message 3 and the session keys.
    pub fn finish(
        self,
        mpk: &MasterPublic,
        expected_fog: Option<&str>,
        msg2: &[u8],
    ) -> Result<(Vec<u8>, SessionKeys), HandshakeError> {
        let mut r = Reader::new(msg2);
        read_header(&mut r, MSG2)?;
        let fog = r.id().ok_or(HandshakeError::Malformed)?;
        let y = r.point().ok_or(HandshakeError::Malformed)?.ok_or(HandshakeError::BadPoint)?;
        let _nonce: [u8; 32] = r.array().ok_or(HandshakeError::Malformed)?;
        let core_len = msg2.len() - r.remaining();
        let sig = r.take(SIGNATURE_LEN).ok_or(HandshakeError::Malformed)?;
        let tag: [u8; MAC_LEN] = r.array().ok_or(HandshakeError::Malformed)?;
        if !r.is_empty() {
            return Err(HandshakeError::Malformed);
        }
        if fog == self.key.id {
            return Err(HandshakeError::Reflection);
        }
        if expected_fog.is_some_and(|want| fog != want) {
            return Err(HandshakeError::UnexpectedPeer(fog));
        }
        let sig = Signature::from_bytes(sig).ok_or(HandshakeError::BadPoint)?;
        let th2 = transcript(&[&self.msg1, &msg2[..core_len]]);
        if !ibs::verify(mpk, &fog, &signed_payload(b"fog", &th2), &sig) {
            return Err(HandshakeError::BadSignature(fog));
        }
        let dh = (y * self.x).to_affine();
        let ks = schedule(&dh, &th2);
        if mac(&ks.mac_f, b"F", &th2, &fog) != blake3::Hash::from_bytes(tag) {
            return Err(HandshakeError::BadMac);
        }
        let th3 = transcript(&[&self.msg1, msg2]);
        let mut msg3 = wire::header(MSG3);
        msg3.extend_from_slice(&ibs::sign(&self.key, &signed_payload(b"user", &th3)).to_bytes());
        msg3.extend_from_slice(mac(&ks.mac_u, b"U", &th3, &self.key.id).as_bytes());
        let keys = SessionKeys {
            session_id: ks.session_id,
            user: self.key.id.clone(),
            fog,
            user_to_fog: ks.keys.0,
            fog_to_user: ks.keys.1,
        };
        Ok((msg3, keys))
    }
}

fn transcript(parts: &[&[u8]]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("fogvault v1 handshake transcript");
    for p in parts {
        h.update(&(p.len() as u64).to_le_bytes());
        h.update(p);
    }
    *h.finalize().as_bytes()
}

/// Remembers recent user nonces so a replayed message 1 is refused outright.
pub struct ReplayCache {
    seen: HashMap<[u8; 32], Instant>,
    window: Duration,
    max: usize,
}

impl ReplayCache {
    pub fn new(window: Duration, max: usize) -> Self {
        ReplayCache { seen: HashMap::new(), window, max }
    }
    fn check_and_insert(&mut self, nonce: [u8; 32]) -> Result<(), HandshakeError> {
        let now = Instant::now();
        self.seen.retain(|_, t| now.duration_since(*t) < self.window);
        if self.seen.contains_key(&nonce) {
            return Err(HandshakeError::Replay);
        }
        if self.seen.len() >= self.max {
            // Full: refuse rather than forget (forgetting would re-open replays).
            return Err(HandshakeError::Refused("*".into(), "too many handshakes in progress".into()));
        }
        self.seen.insert(nonce, now);
        Ok(())
    }
}

/// The fog node's side.
pub struct FogResponder {
    user: String,
    fog: String,
    msg1: Vec<u8>,
    msg2: Vec<u8>,
    schedule: Schedule,
}

impl FogResponder {
    /// Process message 1. `admit` applies the policy to the claimed identity
    /// (unknown, expired or revoked identities are refused before any work).
    pub fn respond(
        key: &IdentityKey,
        replay: &mut ReplayCache,
        msg1: &[u8],
        admit: impl FnOnce(&str) -> Result<(), String>,
    ) -> Result<(Self, Vec<u8>), HandshakeError> {
        let mut r = Reader::new(msg1);
        read_header(&mut r, MSG1)?;
        let user = r.id().ok_or(HandshakeError::Malformed)?;
        let x = r.point().ok_or(HandshakeError::Malformed)?.ok_or(HandshakeError::BadPoint)?;
        let nonce: [u8; 32] = r.array().ok_or(HandshakeError::Malformed)?;
        if !r.is_empty() {
            return Err(HandshakeError::Malformed);
        }
        if user == key.id {
            return Err(HandshakeError::Reflection);
        }
        admit(&user).map_err(|why| HandshakeError::Refused(user.clone(), why))?;
        replay.check_and_insert(nonce)?;
        let y = random_scalar();
        let big_y = (G1Affine::generator() * y).to_affine();
        let mut nf = [0u8; 32];
        random_bytes(&mut nf);
        let mut msg2 = wire::header(MSG2);
        wire::put_id(&mut msg2, &key.id);
        msg2.extend_from_slice(&big_y.to_compressed());
        msg2.extend_from_slice(&nf);
        let th2 = transcript(&[msg1, &msg2]);
        let dh = (x * y).to_affine();
        let ks = schedule(&dh, &th2);
        msg2.extend_from_slice(&ibs::sign(key, &signed_payload(b"fog", &th2)).to_bytes());
        msg2.extend_from_slice(mac(&ks.mac_f, b"F", &th2, &key.id).as_bytes());
        let me = FogResponder { user, fog: key.id.clone(), msg1: msg1.to_vec(), msg2: msg2.clone(), schedule: ks };
        Ok((me, msg2))
    }

    /// Process message 3; returns the session keys.
    pub fn finish(self, mpk: &MasterPublic, msg3: &[u8]) -> Result<SessionKeys, HandshakeError> {
        let mut r = Reader::new(msg3);
        read_header(&mut r, MSG3)?;
        let sig = r.take(SIGNATURE_LEN).ok_or(HandshakeError::Malformed)?;
        let tag: [u8; MAC_LEN] = r.array().ok_or(HandshakeError::Malformed)?;
        if !r.is_empty() {
            return Err(HandshakeError::Malformed);
        }
        let sig = Signature::from_bytes(sig).ok_or(HandshakeError::BadPoint)?;
        let th3 = transcript(&[&self.msg1, &self.msg2]);
        if !ibs::verify(mpk, &self.user, &signed_payload(b"user", &th3), &sig) {
            return Err(HandshakeError::BadSignature(self.user));
        }
        if mac(&self.schedule.mac_u, b"U", &th3, &self.user) != blake3::Hash::from_bytes(tag) {
            return Err(HandshakeError::BadMac);
        }
        Ok(SessionKeys {
            session_id: self.schedule.session_id,
            user: self.user,
            fog: self.fog,
            user_to_fog: self.schedule.keys.0.clone(),
            fog_to_user: self.schedule.keys.1.clone(),
        })
    }
}
