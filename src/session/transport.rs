//! Folder-key transport over the session channel, after the handshake:
//! the fog node offers the wraps the policy holds for the user (sealed under
//! `fog_to_user`); the user unwraps them with the enrolment secret and
//! returns the keys (sealed under `user_to_fog`). Both frames are
//! XChaCha20-Poly1305 with AAD `"fogvault v1 channel <dir> " ‖ session id`.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::handshake::SessionKeys;
use super::policy::Policy;
use super::wrap::{self, EnrolSecret, Wrap};
use crate::crypto::{self, Key32};

/// A folder key offered to the user: the wrap the policy holds for them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Offer {
    pub folder: u32,
    pub version: u32,
    pub wrap: Wrap,
}

/// What the user returns over the channel.
#[derive(Serialize, Deserialize)]
pub struct KeyDelivery {
    /// `(folder, key version, hex key)`.
    pub keys: Vec<(u32, u32, String)>,
    /// Break-glass reason, if the user asks for emergency access.
    pub break_glass: Option<String>,
    /// A shorter session lifetime than the daemon's default, in seconds.
    pub ttl: Option<u64>,
}

fn channel_aad(sid: &[u8; 16], dir: &str) -> Vec<u8> {
    let mut aad = format!("fogvault v1 channel {dir} ").into_bytes();
    aad.extend_from_slice(sid);
    aad
}

/// The wraps `user` holds in the current policy.
pub fn offers_for(p: &Policy, user: &str) -> Vec<Offer> {
    p.folders
        .iter()
        .filter_map(|f| {
            let w = f.wraps.iter().find(|w| w.recipient == user)?;
            Some(Offer { folder: f.id, version: f.version, wrap: w.clone() })
        })
        .collect()
}

pub fn seal_offers(keys: &SessionKeys, offers: &[Offer]) -> Vec<u8> {
    let body = serde_json::to_vec(offers).expect("offers serialize");
    crypto::seal(&keys.fog_to_user, &channel_aad(&keys.session_id, "f2u"), &body)
}

pub fn open_offers(keys: &SessionKeys, sealed: &[u8]) -> Option<Vec<Offer>> {
    let body = crypto::open(&keys.fog_to_user, &channel_aad(&keys.session_id, "f2u"), sealed).ok()?;
    serde_json::from_slice(&body).ok()
}

/// The user's side: unwrap every offer addressed to this enrolment key.
pub fn unwrap_offers(offers: &[Offer], enrol: &EnrolSecret) -> Vec<(u32, u32, String)> {
    offers
        .iter()
        .filter_map(|o| {
            let fk = wrap::unwrap(&o.wrap, enrol, o.folder, o.version)?;
            Some((o.folder, o.version, hex::encode(fk.as_bytes())))
        })
        .collect()
}

pub fn seal_delivery(keys: &SessionKeys, d: &KeyDelivery) -> Vec<u8> {
    let body = Zeroizing::new(serde_json::to_vec(d).expect("delivery serializes"));
    crypto::seal(&keys.user_to_fog, &channel_aad(&keys.session_id, "u2f"), &body)
}

pub fn open_delivery(keys: &SessionKeys, sealed: &[u8]) -> Option<KeyDelivery> {
    let body = Zeroizing::new(crypto::open(&keys.user_to_fog, &channel_aad(&keys.session_id, "u2f"), sealed).ok()?);
    serde_json::from_slice(&body).ok()
}

/// A delivered key as bytes (None if malformed).
pub fn delivered_key(hex_key: &str) -> Option<Key32> {
    let b = Zeroizing::new(hex::decode(hex_key).ok()?);
    Some(Key32::from_bytes(b.as_slice().try_into().ok()?))
}
