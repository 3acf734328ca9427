//! Line protocol encoding: HA-compatible and clean schemas. (In progress.)
