//! `model.json` parsing (FORMAT.md §4.1) on arbitrary bytes: never panics; whatever it accepts
//! survives cairn's own write → read unchanged, keeps its identity, and (as FORMAT.md §4.1 and
//! `identity_of_json` promise) has the identity that `cairn id` computes from the same text.
#![no_main]

use std::path::Path;

use cairn::Model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz/model.json");
    let Ok(model) = Model::from_json_bytes(data, path) else {
        return;
    };
    let bytes = model.to_json_bytes();
    let again = match Model::from_json_bytes(&bytes, path) {
        Ok(m) => m,
        Err(e) => panic!(
            "cairn cannot read the model.json it wrote: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        ),
    };
    assert_eq!(again, model, "model.json changed in a write → read round trip");
    assert_eq!(again.to_json_bytes(), bytes, "model.json bytes are not stable");

    match model.identity() {
        Ok(id) => {
            assert_eq!(again.identity().ok(), Some(id), "identity changed in a round trip");
            match cairn::identity_of_json(data) {
                Ok(from_text) => assert_eq!(from_text, id, "cairn id disagrees with the model"),
                Err(e) => panic!("model has identity {id} but its text is no request: {e}"),
            }
        }
        Err(_) => assert!(again.identity().is_err()),
    }
});
