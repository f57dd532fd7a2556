//! Model-based: the input is a sequence of store operations, applied to a real store in a
//! temporary directory and to a small in-memory reference, which must agree after every step
//! (see `fuzz/model/ops.rs`, shared with `tests/model_ops.rs`, which replays the seeds and
//! regressions on every `cargo test`).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../model/ops.rs"]
mod ops;

fuzz_target!(|data: &[u8]| ops::run(data));
