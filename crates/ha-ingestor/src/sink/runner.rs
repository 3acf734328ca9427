//! The per-sink loop: read the journal from the cursor, write, advance. (In progress.)
