//! The MessagePack hub-protocol decoder: incremental equals one-shot, and round trips.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    signalr_fuzz::check_hub_decoder(hub_protocol::Protocol::MessagePack, data);
});
