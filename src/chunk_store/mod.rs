//! Packs, the staging journal and the object-store backends. The only module
//! that talks to `object_store`.

mod backend;
mod file_read;
mod pack;
pub mod samples;
mod span;
mod store;

pub use backend::Backend;
pub use pack::{PackEntry, PackId, TRAILER_LEN, decode_header, parse_trailer};
pub use span::{MAX_GAP, MAX_SPAN, Span, plan_reads, plan_spans};
pub use store::{
    ChunkStore, DEFAULT_JOURNAL_LIMIT, Location, StagedBytes, TARGET_PACK_SIZE, restore_staged, staged_packs,
};
