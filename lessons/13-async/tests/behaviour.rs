//! One behaviour suite, two servers: lesson 07's tests, compiled in this package, run against
//! lesson13-server and lesson13-client (each file's `under_test` module names the binaries of
//! the package that compiles it). Not a copy: lesson 07's files themselves, by `#[path]`.

// In lesson 07 each file is a test crate of its own and declares `mod under_test;` (and
// graceful_shutdown.rs `mod common;`); gathered here as modules, each keeps its own copy.
#![allow(clippy::duplicate_mod)]

#[path = "../../07-worker-pool/tests/abstract_names.rs"]
mod abstract_names;
#[path = "../../07-worker-pool/tests/client.rs"]
mod client;
#[path = "../../07-worker-pool/tests/deadlines.rs"]
mod deadlines;
#[path = "../../07-worker-pool/tests/graceful_shutdown.rs"]
mod graceful_shutdown;
#[path = "../../07-worker-pool/tests/permissions.rs"]
mod permissions;
#[path = "../../07-worker-pool/tests/server.rs"]
mod server;
#[path = "../../07-worker-pool/tests/stale_socket.rs"]
mod stale_socket;
#[path = "../../07-worker-pool/tests/worker_pool.rs"]
mod worker_pool;
