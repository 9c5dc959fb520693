//! What a caller's slate shows when its picture cannot: its initials and
//! its name on a colour of its own. Pure, so that the same participant
//! always gets the same colour and the same initials, on every node.

use crate::model::ids::ParticipantId;

/// Slate backgrounds: mid-dark, saturated, distinct from each other and from
/// black bars, and each with white text on it at a contrast ratio above
/// 4.5:1 (WCAG AA), so that both people and OCR read the name.
pub const SLATE_PALETTE: [[u8; 3]; 8] = [
    [0x1f, 0x5f, 0xa8], // blue
    [0x8e, 0x24, 0x4f], // wine
    [0x1d, 0x6b, 0x4e], // green
    [0x7a, 0x3e, 0x9d], // purple
    [0x9c, 0x4a, 0x12], // rust
    [0x0f, 0x66, 0x73], // teal
    [0x5b, 0x4a, 0x99], // indigo
    [0x8a, 0x2c, 0x2c], // brick
];

/// The most letters a slate's initials have.
const MAX_INITIALS: usize = 2;

/// A participant's slate colour: a stable hash of its id into the palette
/// (FNV-1a: the same on every run and every build, unlike std's hasher).
pub fn slate_colour(id: &ParticipantId) -> [u8; 3] {
    let hash = id.as_str().bytes().fold(0x811c_9dc5u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
    SLATE_PALETTE[hash as usize % SLATE_PALETTE.len()]
}

/// The first letter of the first and of the last word, upper-cased
/// ("Ada Lovelace" → "AL", "grace" → "G"); words that start with no letter
/// or digit (punctuation, emoji) are skipped; "?" when nothing is left.
pub fn initials(name: &str) -> String {
    let firsts: Vec<char> =
        name.split_whitespace().filter_map(|word| word.chars().next().filter(|c| c.is_alphanumeric())).collect();
    let picked: Vec<char> = match firsts.as_slice() {
        [] => return "?".to_string(),
        [only] => vec![*only],
        [first, .., last] => vec![*first, *last],
    };
    picked.into_iter().take(MAX_INITIALS).flat_map(char::to_uppercase).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initials_take_the_first_and_last_word() {
        assert_eq!(initials("Ada Lovelace"), "AL");
        assert_eq!(initials("Grace Brewster Murray Hopper"), "GH");
        assert_eq!(initials("  grace  "), "G");
    }

    #[test]
    fn initials_skip_words_without_a_leading_letter() {
        assert_eq!(initials("- Ada (host)"), "A");
        assert_eq!(initials("🎤 Émile Zola"), "ÉZ");
    }

    #[test]
    fn a_name_without_letters_gets_a_question_mark() {
        assert_eq!(initials(""), "?");
        assert_eq!(initials("  -- !! "), "?");
    }

    #[test]
    fn initials_are_upper_case_even_when_that_takes_two_chars() {
        assert_eq!(initials("ßtraße x"), "SSX");
    }

    #[test]
    fn the_same_participant_always_gets_the_same_colour() {
        let id = ParticipantId::from("p-123".to_string());
        assert_eq!(slate_colour(&id), slate_colour(&id.clone()));
        // FNV-1a is fixed, so this holds on every build.
        assert_eq!(slate_colour(&ParticipantId::from("a".to_string())), SLATE_PALETTE[0xe40c292c_u32 as usize % 8]);
    }

    #[test]
    fn ids_spread_over_the_palette() {
        let used: std::collections::HashSet<[u8; 3]> =
            (0..64).map(|i| slate_colour(&ParticipantId::from(format!("participant-{i}")))).collect();
        assert_eq!(used.len(), SLATE_PALETTE.len());
    }

    #[test]
    fn white_text_is_readable_on_every_slate_colour() {
        // WCAG relative luminance and contrast ratio against white.
        let linear = |c: u8| {
            let c = f64::from(c) / 255.0;
            if c <= 0.03928 { c / 12.92 } else { ((c + 0.055) / 1.055).powf(2.4) }
        };
        for [r, g, b] in SLATE_PALETTE {
            let luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
            let contrast = 1.05 / (luminance + 0.05);
            assert!(contrast > 4.5, "#{r:02x}{g:02x}{b:02x}: {contrast:.2}");
        }
    }
}
