//! RFC 5168 media control in SIP INFO (`application/media_control+xml`):
//! how Polycom, Cisco and FreeSWITCH ask for a keyframe instead of RTCP PLI.
//!
//! ```xml
//! <?xml version="1.0" encoding="utf-8"?>
//! <media_control><vc_primitive><to_encoder><picture_fast_update/></to_encoder></vc_primitive></media_control>
//! ```
//!
//! The schema is four elements deep and carries no text that matters, so a
//! small tag scanner reads it: elements must nest properly under one
//! `media_control` root; declarations, comments, attributes, namespace
//! prefixes and text are skipped. Anything else is malformed (400), never a
//! panic.

/// What an INFO asks of Tutti's encoder.
#[derive(Debug, PartialEq, Eq)]
pub enum MediaControl {
    /// A keyframe, now (`vc_primitive/to_encoder/picture_fast_update`).
    PictureFastUpdate,
    /// Well-formed, but nothing Tutti acts on (a stream id only, say).
    Other,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed media_control XML: {0}")]
pub struct MalformedMediaControl(&'static str);

const FAST_UPDATE_PATH: [&str; 4] = ["media_control", "vc_primitive", "to_encoder", "picture_fast_update"];
/// Deeper than any media_control document; bounds the stack.
const MAX_DEPTH: usize = 16;

pub fn parse(body: &str) -> Result<MediaControl, MalformedMediaControl> {
    let mut open: Vec<&str> = Vec::new();
    let mut seen_root = false;
    let mut fast_update = false;
    let mut rest = body;
    while let Some(start) = rest.find('<') {
        if !open.is_empty() || rest[..start].trim().is_empty() {
            rest = &rest[start..];
        } else {
            return Err(MalformedMediaControl("text outside the root element"));
        }
        if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or(MalformedMediaControl("an unterminated comment"))?;
            rest = &after[end + 3..];
            continue;
        }
        let end = rest.find('>').ok_or(MalformedMediaControl("an unterminated tag"))?;
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let name = local_name(name).ok_or(MalformedMediaControl("an empty closing tag"))?;
            if open.pop() != Some(name) {
                return Err(MalformedMediaControl("a closing tag that matches no open element"));
            }
            continue;
        }
        let self_closing = tag.ends_with('/');
        let name = local_name(tag.trim_end_matches('/')).ok_or(MalformedMediaControl("an element without a name"))?;
        if open.is_empty() {
            if seen_root || name != FAST_UPDATE_PATH[0] {
                return Err(MalformedMediaControl("the root element is not one media_control"));
            }
            seen_root = true;
        }
        if open.len() >= MAX_DEPTH {
            return Err(MalformedMediaControl("elements nested too deep"));
        }
        open.push(name);
        fast_update |= open == FAST_UPDATE_PATH;
        if self_closing {
            open.pop();
        }
    }
    if !open.is_empty() {
        return Err(MalformedMediaControl("an element is not closed"));
    }
    if !seen_root {
        return Err(MalformedMediaControl("no media_control element"));
    }
    if !rest.trim().is_empty() {
        return Err(MalformedMediaControl("text after the root element"));
    }
    Ok(if fast_update { MediaControl::PictureFastUpdate } else { MediaControl::Other })
}

/// An element's name without attributes or namespace prefix.
fn local_name(tag: &str) -> Option<&str> {
    let name = tag.split_whitespace().next()?;
    let local = name.rsplit(':').next().unwrap_or(name);
    (!local.is_empty()).then_some(local)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLYCOM: &str = "<?xml version=\"1.0\" encoding=\"utf-8\" ?>\r\n<media_control>\r\n  <vc_primitive>\r\n    <to_encoder>\r\n      \
        <picture_fast_update>\r\n      </picture_fast_update>\r\n    </to_encoder>\r\n  </vc_primitive>\r\n</media_control>\r\n";

    #[test]
    fn a_picture_fast_update_is_read_as_room_systems_write_it() {
        assert_eq!(parse(POLYCOM), Ok(MediaControl::PictureFastUpdate));
        let compact = "<media_control><vc_primitive><to_encoder><picture_fast_update/></to_encoder></vc_primitive></media_control>";
        assert_eq!(parse(compact), Ok(MediaControl::PictureFastUpdate));
        let with_stream = "<media_control><!-- x --><vc_primitive><stream_id>1</stream_id><to_encoder><picture_fast_update/>\
            </to_encoder></vc_primitive></media_control>";
        assert_eq!(parse(with_stream), Ok(MediaControl::PictureFastUpdate));
    }

    #[test]
    fn other_primitives_are_well_formed_but_ask_nothing() {
        assert_eq!(parse("<media_control><general_error>x</general_error></media_control>"), Ok(MediaControl::Other));
        assert_eq!(parse("<media_control><picture_fast_update/></media_control>"), Ok(MediaControl::Other), "only at its place");
    }

    #[test]
    fn garbage_is_malformed_never_a_panic() {
        for body in [
            "",
            "picture_fast_update",
            "<media_control>",
            "<media_control></vc_primitive>",
            "<other/>",
            "<media_control/><media_control/>",
            "<media_control><",
            "<>",
            "</>",
            "<media_control><!-- </media_control>",
            "<media_control/>trailing",
            &"<a>".repeat(100),
            "<media_control>\u{1F600}<é/></media_control>é",
        ] {
            assert!(parse(body).is_err(), "{body:?}");
        }
        assert!(parse(&format!("<media_control>{}</media_control>", "<x>".repeat(20))).is_err());
    }
}
