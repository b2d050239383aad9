//! libFuzzer target for the handshake message parsers:
//! `cargo fuzz run handshake` (nightly). CI runs the same entry points with
//! random inputs through the proptest in tests/handshake.rs.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use fogvault::session::{FogResponder, IdentityKey, MasterPublic, MasterSecret, ReplayCache, UserInitiator};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (MasterPublic, IdentityKey, IdentityKey) {
    static K: OnceLock<(MasterPublic, IdentityKey, IdentityKey)> = OnceLock::new();
    K.get_or_init(|| {
        let msk = MasterSecret::generate();
        (msk.public(), msk.extract("fog"), msk.extract("alice"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (mpk, fog, alice) = keys();
    let mut cache = ReplayCache::new(Duration::from_secs(60), 1 << 16);
    let _ = FogResponder::respond(fog, &mut cache, data, |_| Ok(()));
    let (user, m1) = UserInitiator::start(alice);
    let _ = user.finish(mpk, None, data);
    if let Ok((responder, _)) = FogResponder::respond(fog, &mut cache, &m1, |_| Ok(())) {
        let _ = responder.finish(mpk, data);
    }
});
