//! The journal rows sinks read; the journal itself is the store's ([`crate::store::journal`]).

pub use crate::store::journal::{Journal, JournalEvent, JournalRow};
