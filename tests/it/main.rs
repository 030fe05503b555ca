//! Integration tests: the real server on `127.0.0.1:0`, spoken to over sockets.
//!
//! One behaviour per test, named as a sentence; negative cases first in each module.
//! `support` starts the server and holds the MCP clients of both protocol eras.

mod support;

/// `pysqlbridge` and free ports, shared with the other test crates.
#[path = "../common/mod.rs"]
mod common;

mod bench_loadgen;
mod guard_oracle;
mod hidden;
mod legacy_sse;
mod modern;
mod mutated;
mod read_only;
mod resources_prompts;
mod search_fetch;
mod sql_tools;
mod transport;
