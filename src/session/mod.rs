//! Identities and the authenticated session handshake (DESIGN.md §3).
//!
//! Pairing-based, identity-based cryptography on BLS12-381: the admin's
//! master secret `s` issues identity keys `d_ID = s·H1(ID)` in G1; Cha–Cheon
//! identity-based signatures authenticate a SIGMA-style Diffie–Hellman
//! handshake between a user and the fog node. Over the session channel the
//! user hands the fog node the folder keys the signed policy wraps to them;
//! the control server keeps the sessions and is the vault's access gate.

mod admin;
pub mod control;
mod handshake;
pub mod ibs;
mod identity;
mod keyfile;
mod login_budget;
pub mod policy;
pub mod transport;
mod wire;
pub mod wrap;

pub use admin::{Admin, GrantRequest};
pub use handshake::{FogResponder, HandshakeError, ReplayCache, SessionKeys, UserInitiator};
pub use ibs::Signature;
pub use identity::{IdentityKey, MasterPublic, MasterSecret};
pub use keyfile::{UserKey, read_admin_key, read_identity_key, write_admin_key, write_identity_key};
pub use policy::{Grant, Policy, PolicyError, Rights, Subject};
pub use wrap::EnrolSecret;
