//! Integration tests: one binary with submodules (cheaper to build on 2 cores).
//!
//! S3 tests need `PV_TEST_LOCALSTACK` and `PV_TEST_S3S` (set by `scripts/test.sh`, which
//! starts both servers); without them they FAIL rather than skip.

// A whole save's future, awaited inside a store hook's thread, is deeper than the default.
#![recursion_limit = "256"]

mod common;

mod api;
mod chunked;
mod cli;
mod cluster;
mod contract;
mod crash;
mod deploy;
mod display;
mod display_io;
mod faults;
mod formats;
mod heads;
mod hostile;
mod kms;
mod live;
mod nodes;
mod operations;
mod profile_data;
mod retention;
mod room;
mod s3;
mod sandbox;
mod screen;
mod sdk;
mod sdk_app;
mod sdk_session;
mod transfer;
mod travel;
mod trust;
mod upgrade;
mod vault;
mod viewers;
