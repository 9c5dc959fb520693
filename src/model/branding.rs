//! What a layout's branding asks for, read from its checked strings: the
//! background as a colour or an image, and every image file it needs (for
//! the engine to check they exist before the layout is applied).

use crate::model::layout::LayoutConfig;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Background {
    Colour([u8; 3]),
    /// A file name in the branding directory.
    Image(String),
}

/// The layout's background; `None` is the compositor's black.
pub fn background(layout: &LayoutConfig) -> Option<Background> {
    let text = layout.background.as_deref()?;
    Some(match parse_colour(text) {
        Some(rgb) => Background::Colour(rgb),
        None => Background::Image(text.to_string()),
    })
}

/// Every image file the layout shows, background first, then overlays in order.
pub fn images(layout: &LayoutConfig) -> impl Iterator<Item = &str> {
    let background = layout.background.as_deref().filter(|b| parse_colour(b).is_none());
    background.into_iter().chain(layout.overlays.iter().map(|o| o.image.as_str()))
}

/// `#rrggbb` → its bytes.
fn parse_colour(text: &str) -> Option<[u8; 3]> {
    let hex = text.strip_prefix('#').filter(|h| h.len() == 6)?;
    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
    Some([byte(0)?, byte(2)?, byte(4)?])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(json: &str) -> LayoutConfig {
        serde_json::from_str(json).expect("a valid layout")
    }

    #[test]
    fn a_hex_background_is_a_colour() {
        assert_eq!(background(&layout(r##"{"background": "#1a2B3c"}"##)), Some(Background::Colour([0x1a, 0x2b, 0x3c])));
    }

    #[test]
    fn a_file_name_background_is_an_image() {
        assert_eq!(background(&layout(r#"{"background": "stage.jpg"}"#)), Some(Background::Image("stage.jpg".into())));
        assert_eq!(background(&layout("{}")), None);
    }

    #[test]
    fn images_lists_the_background_image_then_the_overlays() {
        let l = layout(
            r#"{"background": "stage.png", "overlays": [
                {"image": "logo.png", "x": 0.8, "y": 0.05, "width": 0.15},
                {"image": "third.png", "x": 0.0, "y": 0.8, "width": 1.0, "height": 0.2}]}"#,
        );
        assert_eq!(images(&l).collect::<Vec<_>>(), ["stage.png", "logo.png", "third.png"]);
    }

    #[test]
    fn a_colour_background_needs_no_file() {
        let l = layout(r##"{"background": "#000000", "overlays": [{"image": "logo.png", "x": 0, "y": 0, "width": 0.1}]}"##);
        assert_eq!(images(&l).collect::<Vec<_>>(), ["logo.png"]);
    }
}
