use zeroize::{Zeroize, ZeroizeOnDrop};

/// A 32-byte secret that is wiped from memory when dropped.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key32([u8; 32]);

impl Key32 {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key32(bytes)
    }

    pub fn random() -> Self {
        let mut k = [0u8; 32];
        random_bytes(&mut k);
        Key32(k)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Derive an independent subkey: `blake3::derive_key("fogvault v1 <purpose>", self)`.
    pub fn derive(&self, purpose: &str) -> Key32 {
        let context = format!("fogvault v1 {purpose}");
        Key32(blake3::derive_key(&context, &self.0))
    }
}

impl std::fmt::Debug for Key32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key32(<redacted>)")
    }
}

/// Fill `buf` from the operating system's CSPRNG.
pub fn random_bytes(buf: &mut [u8]) {
    // The OS RNG failing is unrecoverable and not caused by input.
    getrandom::fill(buf).expect("operating system random number generator failed");
}

/// A fresh 192-bit nonce for a random-nonce seal, from this thread's CSPRNG
/// (rand's `ThreadRng`: ChaCha12, seeded from the OS and reseeded from it
/// every 64 KiB of output). Why not the OS directly: the `getrandom` system
/// call was a third of the cost of sealing a small record (0.44 of ~1.2 µs),
/// and every inode, directory entry and audit record is sealed. Keys and
/// secrets still come from [`random_bytes`].
pub fn random_nonce() -> [u8; 24] {
    use rand::Rng;
    let mut nonce = [0u8; 24];
    rand::rng().fill_bytes(&mut nonce);
    nonce
}

/// All keys the fog node derives from the repository's root secret `K_dd`.
pub struct VaultKeys {
    /// `K_id`: keyed BLAKE3 for chunk ids (dedup identity).
    pub id: Key32,
    /// `K_ck`: chunk keys, `ck = BLAKE3-keyed(K_ck, id)`.
    pub chunk: Key32,
    /// Seals pack headers (the list of chunks in a pack).
    pub pack: Key32,
    /// Folder key of the root vault folder: seals inode and directory records.
    pub root_folder: Key32,
    /// Keyed hash of directory-entry names, so LMDB keys reveal no names.
    pub names: Key32,
    /// Seals the local stats record and other fog-node-only records.
    pub local: Key32,
    /// Seals the metadata journal, snapshots and root in the cloud.
    pub metadata: Key32,
    /// Seals the audit log (fog node's copy and the store's).
    pub audit: Key32,
    /// FastCDC gear-table seed: hides chunk boundaries from anyone without `K_dd`.
    pub gear_seed: u64,
}

impl VaultKeys {
    pub fn derive(root: &Key32) -> Self {
        let seed_key = root.derive("gear seed");
        let mut seed = [0u8; 8];
        seed.copy_from_slice(&seed_key.as_bytes()[..8]);
        VaultKeys {
            id: root.derive("chunk id"),
            chunk: root.derive("chunk key"),
            pack: root.derive("pack header"),
            root_folder: root.derive("root folder key"),
            names: root.derive("dirent name hash"),
            local: root.derive("local state"),
            metadata: root.derive("cloud metadata"),
            audit: root.derive("audit log"),
            gear_seed: u64::from_le_bytes(seed),
        }
    }
}
