//! The access control list the kernel checks path walks into a vault folder
//! against. Without it, the folder root's dentry could not be cached (every
//! walk would wait for a gated LOOKUP, ~15 µs); with it, the kernel decides
//! each walk itself from a list the daemon hands it and takes back (an
//! inode invalidation) whenever the folder's sessions change.
//!
//! The list names the uids with live sessions on the folder: `r-x` for
//! readers, `rwx` for writers; the owning group and others get nothing. The
//! root's mode shows the list's mask as its group bits (`rwx`) and `---` for
//! others, so whoever the list does not name is refused, with `EACCES`,
//! before any request reaches the daemon. The owner (root, who made the
//! folder) passes on its owner bits, and root passes any list anyway.

use crate::vault::Walker;

/// The one extended attribute name the kernel asks for permission checks.
pub const ACCESS_XATTR: &[u8] = b"system.posix_acl_access";
/// Directories' inherited lists: none here (and none may be set).
pub const DEFAULT_XATTR: &[u8] = b"system.posix_acl_default";

// include/uapi/linux/posix_acl_xattr.h and posix_acl.h
const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// The permission bits a folder root reports: the owner's as stored, the
/// list's mask for the group, nothing for others.
pub fn folder_root_perm(perm: u32) -> u32 {
    perm & !0o077 | 0o070
}

/// The xattr value (`posix_acl_xattr_header` and entries, little-endian)
/// for a folder root with permission bits `perm` and these walkers.
pub fn encode(perm: u32, walkers: &[Walker]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 8 * (walkers.len() + 4));
    out.extend_from_slice(&VERSION.to_le_bytes());
    let mut entry = |tag: u16, perm: u32, id: u32| {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&(perm as u16 & 7).to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    };
    entry(USER_OBJ, perm >> 6, UNDEFINED_ID);
    // Named users must be in ascending uid order (the kernel refuses others).
    let mut sorted = walkers.to_vec();
    sorted.sort_by_key(|w| w.uid);
    sorted.dedup_by_key(|w| w.uid);
    for w in sorted {
        entry(USER, if w.write { 0o7 } else { 0o5 }, w.uid);
    }
    entry(GROUP_OBJ, 0, UNDEFINED_ID);
    entry(MASK, 0o7, UNDEFINED_ID);
    entry(OTHER, 0, UNDEFINED_ID);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(v: &[u8]) -> Vec<(u16, u16, u32)> {
        assert_eq!(u32::from_le_bytes(v[..4].try_into().unwrap()), VERSION);
        v[4..]
            .chunks(8)
            .map(|e| {
                (
                    u16::from_le_bytes([e[0], e[1]]),
                    u16::from_le_bytes([e[2], e[3]]),
                    u32::from_le_bytes(e[4..8].try_into().unwrap()),
                )
            })
            .collect()
    }

    #[test]
    fn lists_walkers_in_uid_order_with_their_rights() {
        let w = [Walker { uid: 1002, write: false }, Walker { uid: 1001, write: true }];
        assert_eq!(
            entries(&encode(0o755, &w)),
            vec![
                (USER_OBJ, 7, UNDEFINED_ID),
                (USER, 7, 1001),
                (USER, 5, 1002),
                (GROUP_OBJ, 0, UNDEFINED_ID),
                (MASK, 7, UNDEFINED_ID),
                (OTHER, 0, UNDEFINED_ID),
            ]
        );
    }

    #[test]
    fn without_sessions_only_the_owner_gets_in() {
        let e = entries(&encode(0o700, &[]));
        assert_eq!(e.len(), 4);
        assert!(e.iter().all(|&(tag, perm, _)| tag == USER_OBJ || tag == MASK || perm == 0));
    }

    #[test]
    fn the_most_walkers_fit_the_page_the_kernel_reads() {
        let w: Vec<Walker> =
            (0..crate::vault::MAX_FOLDER_UIDS as u32).map(|uid| Walker { uid: uid + 1000, write: true }).collect();
        assert!(encode(0o777, &w).len() <= 4096);
    }

    #[test]
    fn root_mode_shows_the_mask_and_nothing_for_others() {
        assert_eq!(folder_root_perm(0o777), 0o770);
        assert_eq!(folder_root_perm(0o1700), 0o1770);
        assert_eq!(folder_root_perm(0o755), 0o770);
    }
}
