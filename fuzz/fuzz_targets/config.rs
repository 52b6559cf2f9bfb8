//! The configuration file (`flashd::config::Config::parse`, what
//! `check-config` and `serve` both read): never a panic, and a config it
//! accepts yields every derived setting and an engine without panicking
//! (what `check-config` passes, `serve` must be able to start on).
//!
//! Input: the TOML text (invalid UTF-8 is refused before parsing, as
//! reading the file to a string would).
#![no_main]

use flashd::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let cfg = match Config::parse(text) {
        Ok(cfg) => cfg,
        Err(errors) => {
            assert!(!errors.is_empty(), "refused with no reason");
            return;
        }
    };
    let _ = cfg.reactor_config();
    let _ = cfg.kafka_config();
    let _ = cfg.sink_config();
    let _ = cfg.resolved_sub_reactors();
    let _engine = flashd_engine::Engine::new(cfg.engine_config());
});
