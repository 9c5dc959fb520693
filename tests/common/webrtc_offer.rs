//! A browser-like WebRTC offer written by hand: what the API sees of a
//! browser without a browser, for tests of answers, errors and churn (its
//! peer never connects: nothing answers ICE on the other side).

/// DTLS-SRTP with ICE credentials and rtcp-mux: an audio m-line with
/// `audio_codec` (e.g. `opus/48000/2`), a VP8 and H.264 video m-line if
/// `video`, in `direction` (`sendrecv`, `sendonly` for a WHIP client,
/// `recvonly` for a WHEP one). `fingerprint: false` leaves the DTLS
/// fingerprint out.
pub fn webrtc_offer(audio_codec: &str, video: bool, direction: &str, fingerprint: bool) -> String {
    let fingerprint = if fingerprint { format!("a=fingerprint:sha-256 {}\r\n", vec!["AB"; 32].join(":")) } else { String::new() };
    let bundle = if video { "0 1" } else { "0" };
    let mut sdp = format!(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE {bundle}\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\n{fingerprint}\
         a=setup:actpass\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=rtcp-mux\r\na={direction}\r\na=rtpmap:111 {audio_codec}\r\n"
    );
    if video {
        sdp += &format!(
            "m=video 9 UDP/TLS/RTP/SAVPF 96 102\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=rtcp-mux\r\na={direction}\r\n\
             a=rtpmap:96 VP8/90000\r\na=rtcp-fb:96 nack\r\na=rtcp-fb:96 nack pli\r\n\
             a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
             a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n"
        );
    }
    sdp
}
