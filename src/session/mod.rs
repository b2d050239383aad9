//! Identities and the authenticated session handshake (DESIGN.md §3).
//!
//! Pairing-based, identity-based cryptography on BLS12-381: the admin's
//! master secret `s` issues identity keys `d_ID = s·H1(ID)` in G1; Cha–Cheon
//! identity-based signatures authenticate a SIGMA-style Diffie–Hellman
//! handshake between a user and the fog node. The control socket, policy and
//! folder-key transport that use it arrive with issue 4's later parts.

pub mod control;
mod handshake;
mod ibs;
mod identity;
mod keyfile;
mod wire;

pub use handshake::{FogResponder, HandshakeError, ReplayCache, SessionKeys, UserInitiator};
pub use ibs::Signature;
pub use identity::{IdentityKey, MasterPublic, MasterSecret};
pub use keyfile::{read_admin_key, read_identity_key, write_admin_key, write_identity_key};
