//! The libopus calls Tutti's Opus elements make: the one-stream API only.
//!
//! Why not GStreamer's opusenc/opusdec: they drive libopus through its
//! multistream API, and in Debian 12's libopus 1.3.1 (built with custom
//! modes) every `opus_multistream_encode`/`_decode` call asks
//! `opus_encoder_get_size`/`opus_decoder_get_size`, which runs `cpuid`
//! twice. On a virtual machine each `cpuid` traps to the hypervisor: 38 µs
//! more per 20 ms encode and 48 µs more per decode, measured here, which was
//! a quarter of an audio caller's whole cost. `opus_encode`/`opus_decode`
//! do not call them.

use std::ffi::{CStr, c_char, c_int};

#[repr(C)]
pub struct OpusEncoder {
    _opaque: [u8; 0],
}

#[repr(C)]
pub struct OpusDecoder {
    _opaque: [u8; 0],
}

pub const OPUS_OK: c_int = 0;
pub const OPUS_APPLICATION_AUDIO: c_int = 2049;
pub const OPUS_SET_BITRATE_REQUEST: c_int = 4002;
pub const OPUS_SET_BANDWIDTH_REQUEST: c_int = 4008;
pub const OPUS_SET_COMPLEXITY_REQUEST: c_int = 4010;
pub const OPUS_RESET_STATE: c_int = 4028;
pub const OPUS_BANDWIDTH_FULLBAND: c_int = 1105;

#[link(name = "opus")]
unsafe extern "C" {
    pub fn opus_encoder_create(fs: i32, channels: c_int, application: c_int, error: *mut c_int) -> *mut OpusEncoder;
    pub fn opus_encode(st: *mut OpusEncoder, pcm: *const i16, frame_size: c_int, data: *mut u8, max_data_bytes: i32) -> i32;
    pub fn opus_encoder_ctl(st: *mut OpusEncoder, request: c_int, ...) -> c_int;
    pub fn opus_encoder_destroy(st: *mut OpusEncoder);
    pub fn opus_decoder_create(fs: i32, channels: c_int, error: *mut c_int) -> *mut OpusDecoder;
    pub fn opus_decode(st: *mut OpusDecoder, data: *const u8, len: i32, pcm: *mut i16, frame_size: c_int, decode_fec: c_int) -> c_int;
    pub fn opus_decoder_destroy(st: *mut OpusDecoder);
    fn opus_strerror(error: c_int) -> *const c_char;
}

/// libopus's words for one of its error codes.
pub fn error_text(code: c_int) -> String {
    // SAFETY: opus_strerror returns a static, NUL-terminated string for any code.
    unsafe { CStr::from_ptr(opus_strerror(code)) }.to_string_lossy().into_owned()
}
