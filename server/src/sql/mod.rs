//! SQL handling that happens before anything runs: splitting a query
//! string, classifying statements as reads or writes, and the SQLSTATEs.

pub mod classify;
mod classify_cache;
mod complexity;
pub mod deny;
mod normalize;
pub mod params;
mod pg_clauses;
mod pg_ids;
pub mod pg_syntax;
mod pragma;
pub mod result_names;
pub mod result_types;
pub mod roles;
pub use pragma::pragma_allowed_in_reads;
pub mod split;
pub mod sqlstate;

pub use classify::{classify, Class, Classified};
pub use classify_cache::ClassifyCache;
pub use split::split_statements;
