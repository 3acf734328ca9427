//! The PostgreSQL sink. (In progress.)
