//! The identity-based SIGMA handshake: agreement, and a specific rejection
//! for every kind of bad input (wrong key, tampering in each message, replay,
//! reflection, refused identities, arbitrary bytes).

use std::time::Duration;

use fogvault::session::{FogResponder, HandshakeError, MasterSecret, ReplayCache, UserInitiator};
use proptest::prelude::*;

fn cache() -> ReplayCache {
    ReplayCache::new(Duration::from_secs(300), 10_000)
}

fn allow(_: &str) -> Result<(), String> {
    Ok(())
}

#[test]
fn correct_run_agrees_on_keys() {
    let msk = MasterSecret::generate();
    let mpk = msk.public();
    let (alice, fog) = (msk.extract("alice"), msk.extract("fog:site-a"));
    let (u, m1) = UserInitiator::start(&alice);
    let (f, m2) = FogResponder::respond(&fog, &mut cache(), &m1, allow).unwrap();
    let (m3, uk) = u.finish(&mpk, Some("fog:site-a"), &m2).unwrap();
    let fk = f.finish(&mpk, &m3).unwrap();
    assert_eq!(uk.session_id, fk.session_id);
    assert_eq!(uk.user_to_fog.as_bytes(), fk.user_to_fog.as_bytes());
    assert_eq!(uk.fog_to_user.as_bytes(), fk.fog_to_user.as_bytes());
    assert_ne!(uk.user_to_fog.as_bytes(), uk.fog_to_user.as_bytes(), "one key per direction");
    assert_eq!((fk.user.as_str(), uk.fog.as_str()), ("alice", "fog:site-a"));
    // A second run gives fresh keys (ephemeral DH: forward secrecy).
    let (u2, m1b) = UserInitiator::start(&alice);
    let (f2, m2b) = FogResponder::respond(&fog, &mut cache(), &m1b, allow).unwrap();
    let (m3b, uk2) = u2.finish(&mpk, None, &m2b).unwrap();
    f2.finish(&mpk, &m3b).unwrap();
    assert_ne!(uk.user_to_fog.as_bytes(), uk2.user_to_fog.as_bytes());
}

#[test]
fn wrong_identity_keys_are_rejected() {
    let msk = MasterSecret::generate();
    let mpk = msk.public();
    let fog = msk.extract("fog");
    // A key for "alice" from another authority: the fog node refuses message 3.
    let forged = MasterSecret::generate().extract("alice");
    let (u, m1) = UserInitiator::start(&forged);
    let (f, m2) = FogResponder::respond(&fog, &mut cache(), &m1, allow).unwrap();
    let (m3, _) = u.finish(&mpk, None, &m2).unwrap();
    assert_eq!(f.finish(&mpk, &m3).err(), Some(HandshakeError::BadSignature("alice".into())));
    // A fake fog node: the user refuses message 2.
    let fake_fog = MasterSecret::generate().extract("fog");
    let (u, m1) = UserInitiator::start(&msk.extract("alice"));
    let (_, m2) = FogResponder::respond(&fake_fog, &mut cache(), &m1, allow).unwrap();
    assert_eq!(u.finish(&mpk, None, &m2).err(), Some(HandshakeError::BadSignature("fog".into())));
    // The right fog node but not the one the user expects.
    let (u, m1) = UserInitiator::start(&msk.extract("alice"));
    let (_, m2) = FogResponder::respond(&msk.extract("fog:other"), &mut cache(), &m1, allow).unwrap();
    assert_eq!(u.finish(&mpk, Some("fog"), &m2).err(), Some(HandshakeError::UnexpectedPeer("fog:other".into())));
}

fn flip(m: &[u8], i: usize) -> Vec<u8> {
    let mut t = m.to_vec();
    t[i] ^= 0x01;
    t
}

#[test]
fn tampering_with_any_byte_of_any_message_fails() {
    let msk = MasterSecret::generate();
    let mpk = msk.public();
    let (alice, fog) = (msk.extract("alice"), msk.extract("fog"));
    let m1_len = UserInitiator::start(&alice).1.len();
    for i in 0..m1_len {
        // The fog node sees a tampered message 1 while the user signs its own
        // view, so the run must fail somewhere (parse at F, or F's signature at U).
        let (u, m1) = UserInitiator::start(&alice);
        let r = FogResponder::respond(&fog, &mut cache(), &flip(&m1, i), allow);
        if let Ok((_, m2)) = r {
            assert!(u.finish(&mpk, None, &m2).is_err(), "msg1 byte {i} tampering went unnoticed");
        }
    }
    let (u0, m1) = UserInitiator::start(&alice);
    let (_, m2) = FogResponder::respond(&fog, &mut cache(), &m1, allow).unwrap();
    drop(u0);
    for i in 0..m2.len() {
        let (u, m1) = UserInitiator::start(&alice);
        let (_, m2) = FogResponder::respond(&fog, &mut cache(), &m1, allow).unwrap();
        let err = u.finish(&mpk, None, &flip(&m2, i)).err().unwrap_or_else(|| panic!("msg2 byte {i} accepted"));
        let n = m2.len();
        let expected_class = match i {
            0..=3 => matches!(err, HandshakeError::Malformed),
            4 => matches!(err, HandshakeError::Version(_)),
            5 => matches!(err, HandshakeError::WrongMessage { .. }),
            _ if i >= n - 32 => matches!(err, HandshakeError::BadMac),
            _ => true,
        };
        assert!(expected_class, "msg2 byte {i}: unexpected error {err:?}");
    }
    for i in 0..(6 + 96 + 32) {
        let (u, m1) = UserInitiator::start(&alice);
        let (f, m2) = FogResponder::respond(&fog, &mut cache(), &m1, allow).unwrap();
        let (m3, _) = u.finish(&mpk, None, &m2).unwrap();
        let err = f.finish(&mpk, &flip(&m3, i)).err().unwrap_or_else(|| panic!("msg3 byte {i} accepted"));
        let ok = match i {
            0..=3 => matches!(err, HandshakeError::Malformed),
            4 => matches!(err, HandshakeError::Version(_)),
            5 => matches!(err, HandshakeError::WrongMessage { .. }),
            6..=101 => matches!(err, HandshakeError::BadPoint | HandshakeError::BadSignature(_)),
            _ => matches!(err, HandshakeError::BadMac),
        };
        assert!(ok, "msg3 byte {i}: unexpected error {err:?}");
    }
}

#[test]
fn replay_and_reflection_are_rejected() {
    let msk = MasterSecret::generate();
    let mpk = msk.public();
    let (alice, fog) = (msk.extract("alice"), msk.extract("fog"));
    let mut seen = cache();
    let (u, m1) = UserInitiator::start(&alice);
    let (f, m2) = FogResponder::respond(&fog, &mut seen, &m1, allow).unwrap();
    let (m3, _) = u.finish(&mpk, None, &m2).unwrap();
    f.finish(&mpk, &m3).unwrap();
    // Replayed message 1.
    assert_eq!(FogResponder::respond(&fog, &mut seen, &m1, allow).err(), Some(HandshakeError::Replay));
    // Replayed message 3 into a new session: bound to the old transcript.
    let (_, m1b) = UserInitiator::start(&alice);
    let (fb, _) = FogResponder::respond(&fog, &mut seen, &m1b, allow).unwrap();
    assert!(matches!(fb.finish(&mpk, &m3), Err(HandshakeError::BadSignature(_))));
    // Reflection: the fog node's message 2 sent back as message 3.
    let (_, m1c) = UserInitiator::start(&alice);
    let (fc, m2c) = FogResponder::respond(&fog, &mut seen, &m1c, allow).unwrap();
    assert_eq!(fc.finish(&mpk, &m2c).err(), Some(HandshakeError::WrongMessage { got: 2, want: 3 }));
    // Reflection: a peer claiming the fog node's own identity.
    let (_, m1d) = UserInitiator::start(&fog);
    assert_eq!(FogResponder::respond(&fog, &mut seen, &m1d, allow).err(), Some(HandshakeError::Reflection));
    // Reflection at the user: a message 2 that claims the user's own identity.
    let (u_alice, _) = UserInitiator::start(&alice);
    let (_, m1_bob) = UserInitiator::start(&msk.extract("bob"));
    let (_, m2_as_alice) = FogResponder::respond(&alice, &mut seen, &m1_bob, allow).unwrap();
    assert_eq!(u_alice.finish(&mpk, None, &m2_as_alice).err(), Some(HandshakeError::Reflection));
}

#[test]
fn refused_identities_get_no_session() {
    let msk = MasterSecret::generate();
    let fog = msk.extract("fog");
    for (who, why) in [("mallory", "unknown identity"), ("bob", "identity expired"), ("carol", "identity revoked")] {
        let (_, m1) = UserInitiator::start(&msk.extract(who));
        let r =
            FogResponder::respond(&fog, &mut cache(), &m1, |id| if id == who { Err(why.to_string()) } else { Ok(()) });
        assert_eq!(r.err(), Some(HandshakeError::Refused(who.into(), why.into())));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    /// The parsers take arbitrary bytes without panicking (the fuzz target in
    /// fuzz/ runs the same entry points under libFuzzer).
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400), prefix in any::<bool>()) {
        let msk = MasterSecret::generate();
        let mpk = msk.public();
        let fog = msk.extract("fog");
        let mut input = if prefix { b"FVHS\x01\x01".to_vec() } else { Vec::new() };
        input.extend_from_slice(&bytes);
        let _ = FogResponder::respond(&fog, &mut cache(), &input, allow);
        let (u, m1) = UserInitiator::start(&msk.extract("alice"));
        let _ = u.finish(&mpk, None, &input);
        let (f, _) = FogResponder::respond(&fog, &mut cache(), &m1, allow).unwrap();
        let _ = f.finish(&mpk, &input);
    }
}
