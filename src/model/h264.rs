//! What an H.264 receiver says it can decode, and the picture Tutti sends it.
//!
//! RFC 6184 8.1: `profile-level-id` names a level (ITU-T H.264 Table A-1:
//! macroblocks per frame and per second); `max-fs` and `max-mbps` may only
//! raise those limits, never lower them. Room systems announce low levels
//! with large `max-fs`/`max-mbps`, and old ones a CIF level only: a caller
//! whose limit is below the canvas gets the composite scaled down to the
//! largest picture at the canvas's aspect ratio that fits its limit.

/// One row of ITU-T H.264 Table A-1.
struct Level {
    idc: u8,
    /// Macroblocks per second.
    max_mbps: u64,
    /// Macroblocks per frame.
    max_fs: u64,
    /// Video bitrate in kbit/s (Baseline, Main and Extended profiles).
    max_br_kbps: u32,
}

/// Level 1b is written here as idc 9 (how High profiles write it; Baseline
/// and Main write 11 with constraint_set3, see [`DecodeLimit::from_fmtp`]).
const LEVELS: [Level; 20] = [
    Level { idc: 9, max_mbps: 1_485, max_fs: 99, max_br_kbps: 128 },
    Level { idc: 10, max_mbps: 1_485, max_fs: 99, max_br_kbps: 64 },
    Level { idc: 11, max_mbps: 3_000, max_fs: 396, max_br_kbps: 192 },
    Level { idc: 12, max_mbps: 6_000, max_fs: 396, max_br_kbps: 384 },
    Level { idc: 13, max_mbps: 11_880, max_fs: 396, max_br_kbps: 768 },
    Level { idc: 20, max_mbps: 11_880, max_fs: 396, max_br_kbps: 2_000 },
    Level { idc: 21, max_mbps: 19_800, max_fs: 792, max_br_kbps: 4_000 },
    Level { idc: 22, max_mbps: 20_250, max_fs: 1_620, max_br_kbps: 4_000 },
    Level { idc: 30, max_mbps: 40_500, max_fs: 1_620, max_br_kbps: 10_000 },
    Level { idc: 31, max_mbps: 108_000, max_fs: 3_600, max_br_kbps: 14_000 },
    Level { idc: 32, max_mbps: 216_000, max_fs: 5_120, max_br_kbps: 20_000 },
    Level { idc: 40, max_mbps: 245_760, max_fs: 8_192, max_br_kbps: 20_000 },
    Level { idc: 41, max_mbps: 245_760, max_fs: 8_192, max_br_kbps: 50_000 },
    Level { idc: 42, max_mbps: 522_240, max_fs: 8_704, max_br_kbps: 50_000 },
    Level { idc: 50, max_mbps: 589_824, max_fs: 22_080, max_br_kbps: 135_000 },
    Level { idc: 51, max_mbps: 983_040, max_fs: 36_864, max_br_kbps: 240_000 },
    Level { idc: 52, max_mbps: 2_073_600, max_fs: 36_864, max_br_kbps: 240_000 },
    Level { idc: 60, max_mbps: 4_177_920, max_fs: 139_264, max_br_kbps: 240_000 },
    Level { idc: 61, max_mbps: 8_355_840, max_fs: 139_264, max_br_kbps: 480_000 },
    Level { idc: 62, max_mbps: 16_711_680, max_fs: 139_264, max_br_kbps: 800_000 },
];

fn level(idc: u8) -> Option<&'static Level> {
    LEVELS.iter().find(|l| l.idc == idc)
}

fn macroblocks(width: u32, height: u32) -> u64 {
    u64::from(width.div_ceil(16)) * u64::from(height.div_ceil(16))
}

/// The lowest level whose limits take `width`x`height` at `fps`, as the
/// `level_idc` byte of `profile-level-id` (1b is never picked: 1 or 1.1 say it plainly).
pub fn level_idc(width: u32, height: u32, fps: u32) -> u8 {
    let frame = macroblocks(width, height);
    LEVELS
        .iter()
        .filter(|l| l.idc != 9)
        .find(|l| frame <= l.max_fs && frame * u64::from(fps) <= l.max_mbps)
        .map_or(62, |l| l.idc)
}

/// The highest bitrate the level of `size` at `fps` allows, in kbit/s: a
/// scaled-down encode for a low-level decoder must stay within it.
pub fn max_bitrate_kbps(size: FrameSize, fps: u32) -> u32 {
    level(level_idc(size.width, size.height, fps)).map_or(u32::MAX, |l| l.max_br_kbps)
}

/// A picture size in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FrameSize {
    pub width: u32,
    pub height: u32,
}

/// What an H.264 receiver can decode: its level, and the frame size and
/// macroblock rate that level and its `max-fs`/`max-mbps` allow together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DecodeLimit {
    pub level_idc: u8,
    /// Macroblocks per frame.
    pub max_fs: u64,
    /// Macroblocks per second.
    pub max_mbps: u64,
}

impl DecodeLimit {
    /// Reads `profile-level-id`, `max-fs` and `max-mbps` from an fmtp's
    /// `key=value` pairs (keys lower-cased). `None` when none of them is
    /// there: RFC 6184 then means level 1 (QCIF), but the softphones that
    /// omit them decode far more, so such a caller gets the whole canvas.
    /// Values that do not parse count as absent.
    pub fn from_fmtp(params: &[(String, String)]) -> Option<DecodeLimit> {
        let param = |key: &str| params.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        let number = |key: &str| param(key).and_then(|v| v.parse::<u64>().ok());
        let profile_level_id =
            param("profile-level-id").filter(|v| v.len() == 6).and_then(|v| u32::from_str_radix(v, 16).ok());
        let (max_fs, max_mbps) = (number("max-fs"), number("max-mbps"));
        if profile_level_id.is_none() && max_fs.is_none() && max_mbps.is_none() {
            return None;
        }
        let level_idc = match profile_level_id.map(|id| id.to_be_bytes()) {
            // Baseline, Main and Extended write level 1b as 1.1 with constraint_set3.
            Some([_, profile_idc, iop, 11]) if matches!(profile_idc, 66 | 77 | 88) && iop & 0x10 != 0 => 9,
            Some([_, _, _, idc]) if level(idc).is_some() => idc,
            _ => 10,
        };
        let base = level(level_idc).expect("level_idc comes from the table");
        Some(DecodeLimit {
            level_idc,
            // RFC 6184: these only ever raise what the level allows.
            max_fs: max_fs.map_or(base.max_fs, |v| v.max(base.max_fs)),
            max_mbps: max_mbps.map_or(base.max_mbps, |v| v.max(base.max_mbps)),
        })
    }

    /// Whether a frame of `width`x`height` at `fps` is within the limit,
    /// including A.3.1's bound on each side (√(8·MaxFS) macroblocks).
    fn takes(&self, width: u32, height: u32, fps: u32) -> bool {
        let (columns, rows) = (u64::from(width.div_ceil(16)), u64::from(height.div_ceil(16)));
        let frame = columns * rows;
        frame <= self.max_fs
            && frame * u64::from(fps) <= self.max_mbps
            && columns * columns <= 8 * self.max_fs
            && rows * rows <= 8 * self.max_fs
    }

    /// The picture to send such a receiver for a `width`x`height` canvas at
    /// `fps`: `None` when the whole canvas fits, else the largest smaller
    /// one at the canvas's aspect ratio (to the nearest even width), with
    /// even sides as 4:2:0 needs.
    pub fn fit(&self, width: u32, height: u32, fps: u32) -> Option<FrameSize> {
        if self.takes(width, height, fps) {
            return None;
        }
        let scaled = (1..height / 2).rev().map(|half| {
            let height_px = half * 2;
            // The nearest even width to height_px × width / height.
            let width_px = ((u64::from(height_px) * u64::from(width) + u64::from(height)) / (2 * u64::from(height))) * 2;
            FrameSize { width: (width_px as u32).max(2), height: height_px }
        });
        let smallest = FrameSize { width: 2, height: 2 };
        Some(scaled.into_iter().find(|s| self.takes(s.width, s.height, fps)).unwrap_or(smallest))
    }
}

/// The level part of the fmtp Tutti answers for what it sends: the level
/// of `sent` at `fps`, never above the receiver's own level; where the
/// receiver's `max-fs`/`max-mbps` let Tutti send more than that level
/// allows, they are stated too (RFC 6184 8.1). Returns `(level_idc, max_fs, max_mbps)`.
pub fn answered_level(sent: FrameSize, fps: u32, receiver: Option<&DecodeLimit>) -> (u8, Option<u64>, Option<u64>) {
    let needed = level_idc(sent.width, sent.height, fps);
    let Some(receiver) = receiver else { return (needed, None, None) };
    if needed <= receiver.level_idc {
        return (needed, None, None);
    }
    // Constrained Baseline has no idc 9; level 1 claims less than 1b.
    let idc = if receiver.level_idc == 9 { 10 } else { receiver.level_idc };
    let base = level(idc).expect("a receiver's level comes from the table");
    let frame = macroblocks(sent.width, sent.height);
    let rate = frame * u64::from(fps);
    (idc, (frame > base.max_fs).then_some(frame), (rate > base.max_mbps).then_some(rate))
}

/// NAL unit type 12: filler data (ITU-T H.264 7.3.2.7), which a strict CBR
/// encode pads its stream with and every decoder skips.
const FILLER_DATA: u8 = 12;

/// An Annex-B access unit without its filler data NAL units, or `None` when
/// it has none (nothing to copy). Each NAL unit keeps its own start code.
pub fn without_filler(access_unit: &[u8]) -> Option<Vec<u8>> {
    let starts = nal_starts(access_unit);
    let spans = starts.iter().enumerate().map(|(i, &(start, header))| {
        let end = starts.get(i + 1).map_or(access_unit.len(), |&(next, _)| next);
        (start..end, access_unit.get(header).map(|b| b & 0x1f))
    });
    let (kept, filler): (Vec<_>, Vec<_>) = spans.partition(|(_, kind)| *kind != Some(FILLER_DATA));
    if filler.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(access_unit.len() - filler.iter().map(|(span, _)| span.len()).sum::<usize>());
    out.extend_from_slice(&access_unit[..starts.first().map_or(access_unit.len(), |&(start, _)| start)]);
    for (span, _) in kept {
        out.extend_from_slice(&access_unit[span]);
    }
    Some(out)
}

/// Where each NAL unit's start code begins (with the zero byte of a 4-byte
/// `00 00 00 01`), and where its header byte is.
fn nal_starts(stream: &[u8]) -> Vec<(usize, usize)> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            let start = if i > 0 && stream[i - 1] == 0 { i - 1 } else { i };
            starts.push((start, i + 3));
            i += 3;
        } else {
            i += 1;
        }
    }
    starts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A NAL unit of `kind` with a 4-byte start code and `len` payload bytes.
    fn nal(kind: u8, len: usize) -> Vec<u8> {
        let payload = if kind == FILLER_DATA { 0xff } else { 0x42 };
        [&[0, 0, 0, 1, 0x60 | kind][..], &vec![payload; len]].concat()
    }

    #[test]
    fn filler_data_is_dropped_and_every_other_nal_unit_kept_whole() {
        let (sps, pps, idr) = (nal(7, 10), nal(8, 4), nal(5, 300));
        let au = [sps.clone(), pps.clone(), idr.clone(), nal(FILLER_DATA, 5000)].concat();
        assert_eq!(without_filler(&au), Some([sps, pps, idr].concat()));
    }

    #[test]
    fn filler_between_slices_and_3_byte_start_codes() {
        let slice = [&[0, 0, 1, 0x41][..], &[0x9a; 50]].concat();
        let filler = [&[0, 0, 1, 0x0c][..], &[0xff; 20], &[0x80]].concat();
        let au = [slice.clone(), filler.clone(), slice.clone(), filler].concat();
        assert_eq!(without_filler(&au), Some([slice.clone(), slice].concat()));
    }

    #[test]
    fn an_access_unit_without_filler_is_not_copied() {
        assert_eq!(without_filler(&[nal(9, 1), nal(1, 800)].concat()), None);
        assert_eq!(without_filler(&[]), None);
        assert_eq!(without_filler(&[0, 0, 0, 1]), None);
    }

    fn params(fmtp: &str) -> Vec<(String, String)> {
        fmtp.split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect()
    }

    fn limit(fmtp: &str) -> DecodeLimit {
        DecodeLimit::from_fmtp(&params(fmtp)).unwrap()
    }

    #[test]
    fn levels_fit_common_canvases() {
        assert_eq!(level_idc(352, 288, 30), 13);
        assert_eq!(level_idc(640, 360, 30), 30);
        assert_eq!(level_idc(1280, 720, 30), 31);
        assert_eq!(level_idc(1280, 720, 60), 32);
        assert_eq!(level_idc(1920, 1080, 30), 40);
    }

    #[test]
    fn a_cif_picture_keeps_to_level_1_3_bitrate() {
        assert_eq!(max_bitrate_kbps(FrameSize { width: 416, height: 234 }, 30), 768);
        assert_eq!(max_bitrate_kbps(FrameSize { width: 1280, height: 720 }, 30), 14_000);
    }

    #[test]
    fn no_level_and_no_sizes_is_no_limit() {
        assert_eq!(DecodeLimit::from_fmtp(&params("packetization-mode=1")), None);
    }

    #[test]
    fn max_fs_and_max_mbps_raise_the_level_but_never_lower_it() {
        // Polycom: level 4.0 with a larger max-fs, and a max-mbps below the level's.
        let l = limit("profile-level-id=428028; packetization-mode=1; max-mbps=245000; max-fs=8160; max-br=20000");
        assert_eq!(l, DecodeLimit { level_idc: 40, max_fs: 8192, max_mbps: 245_760 });
        // Cisco: level 2.2 raised to 1080p60 sizes.
        let l = limit("profile-level-id=42e016;max-mbps=490000;max-fs=8160;packetization-mode=1");
        assert_eq!(l, DecodeLimit { level_idc: 22, max_fs: 8160, max_mbps: 490_000 });
        assert_eq!(l.fit(1920, 1080, 30), None);
    }

    #[test]
    fn level_1b_is_read_from_constraint_set3() {
        assert_eq!(limit("profile-level-id=42f00b").level_idc, 9);
        assert_eq!(limit("profile-level-id=42e00b").level_idc, 11);
    }

    #[test]
    fn sizes_without_a_level_start_from_level_1() {
        assert_eq!(limit("max-fs=396"), DecodeLimit { level_idc: 10, max_fs: 396, max_mbps: 1_485 });
    }

    #[test]
    fn unreadable_values_count_as_absent() {
        assert_eq!(limit("profile-level-id=zz; max-fs=1620"), DecodeLimit { level_idc: 10, max_fs: 1620, max_mbps: 1_485 });
        assert_eq!(DecodeLimit::from_fmtp(&params("profile-level-id=42e01f00")), None);
    }

    #[test]
    fn a_cif_receiver_gets_the_largest_picture_at_the_canvas_ratio() {
        let cif = limit("profile-level-id=42e00d; max-fs=396");
        let size = cif.fit(1280, 720, 30).unwrap();
        assert_eq!(size, FrameSize { width: 416, height: 234 });
        assert!(macroblocks(size.width, size.height) <= 396);
        assert_eq!(cif.fit(640, 360, 30), Some(FrameSize { width: 416, height: 234 }));
        // 23x17 macroblocks: as many as CIF's 22x18, nearly.
        assert_eq!(cif.fit(640, 480, 30), Some(FrameSize { width: 362, height: 272 }));
    }

    #[test]
    fn the_macroblock_rate_limits_too() {
        // Level 1.2: 396 macroblocks per frame, but only 6000 a second: 200 at 30 fps.
        let size = limit("profile-level-id=42e00c").fit(1280, 720, 30).unwrap();
        assert!(macroblocks(size.width, size.height) * 30 <= 6000, "{size:?}");
        assert!(macroblocks(size.width + 32, size.height + 18) * 30 > 6000, "{size:?} is not the largest");
    }

    #[test]
    fn a_receiver_that_takes_the_canvas_gets_it_whole() {
        assert_eq!(limit("profile-level-id=42e01f").fit(1280, 720, 30), None);
        // At 60 fps level 3.1 takes 1800 macroblocks a frame: 56x32.
        assert_eq!(limit("profile-level-id=42e01f").fit(1280, 720, 60), Some(FrameSize { width: 896, height: 504 }));
    }

    proptest::proptest! {
        #![proptest_config(crate::proptest_config())]

        /// Any access unit (NAL units of any type, 3- or 4-byte start codes,
        /// payloads free of start codes as emulation prevention makes them):
        /// what is kept is exactly its NAL units other than filler, in order.
        #[test]
        fn only_filler_data_is_taken_out(
            units in proptest::collection::vec((0u8..32, proptest::bool::ANY, proptest::collection::vec(1u8..=255, 0..40)), 0..12),
        ) {
            let encode = |(kind, long, payload): &(u8, bool, Vec<u8>)| {
                let start: &[u8] = if *long { &[0, 0, 0, 1] } else { &[0, 0, 1] };
                [start, &[0x60 | kind], payload].concat()
            };
            let au: Vec<u8> = units.iter().flat_map(encode).collect();
            let expected: Vec<u8> = units.iter().filter(|(kind, ..)| *kind != FILLER_DATA).flat_map(encode).collect();
            let has_filler = units.iter().any(|(kind, ..)| *kind == FILLER_DATA);
            proptest::prop_assert_eq!(without_filler(&au), has_filler.then_some(expected));
        }

        /// Whatever the limit and the canvas: the picture sent fits the
        /// limit, has even sides and the canvas's aspect ratio (to a pixel
        /// of width), is no larger than the canvas, and the next even height
        /// up would not fit; the answer never claims a higher level than the
        /// receiver's own.
        #[test]
        fn the_fitted_picture_is_the_largest_within_the_limit(
            level_index in 0..LEVELS.len(),
            max_fs in proptest::option::of(0u64..40_000),
            max_mbps in proptest::option::of(0u64..2_000_000),
            half_width in 8u32..=960,
            half_height in 8u32..=540,
            fps in 1u32..=60,
        ) {
            let (width, height) = (half_width * 2, half_height * 2);
            let mut params = vec![("profile-level-id".to_string(), format!("4200{:02x}", LEVELS[level_index].idc))];
            params.extend(max_fs.map(|v| ("max-fs".to_string(), v.to_string())));
            params.extend(max_mbps.map(|v| ("max-mbps".to_string(), v.to_string())));
            let limit = DecodeLimit::from_fmtp(&params).unwrap();
            let sent = match limit.fit(width, height, fps) {
                None => {
                    proptest::prop_assert!(limit.takes(width, height, fps));
                    FrameSize { width, height }
                }
                Some(size) => {
                    proptest::prop_assert!(size.width % 2 == 0 && size.height % 2 == 0, "{size:?}");
                    proptest::prop_assert!(size.height < height && size.width <= width, "{size:?}");
                    if size.height > 2 {
                        proptest::prop_assert!(limit.takes(size.width, size.height, fps), "{size:?} exceeds {limit:?}");
                        let exact_width = f64::from(size.height) * f64::from(width) / f64::from(height);
                        proptest::prop_assert!((f64::from(size.width) - exact_width).abs() <= 1.0, "{size:?} for {width}x{height}");
                    }
                    let up = size.height + 2;
                    let up_width = ((u64::from(up) * u64::from(width) + u64::from(height)) / (2 * u64::from(height))) * 2;
                    proptest::prop_assert!(up >= height || !limit.takes(up_width as u32, up, fps), "{size:?} is not the largest");
                    size
                }
            };
            let (idc, _, _) = answered_level(sent, fps, Some(&limit));
            proptest::prop_assert!(idc <= limit.level_idc.max(10), "answered {idc} to {limit:?}");
        }
    }

    #[test]
    fn the_answer_claims_no_more_than_the_receiver_takes() {
        let full = FrameSize { width: 1280, height: 720 };
        assert_eq!(answered_level(full, 30, None), (31, None, None));
        let cif = limit("profile-level-id=42e00d; max-fs=396");
        assert_eq!(answered_level(FrameSize { width: 416, height: 234 }, 30, Some(&cif)), (13, None, None));
        // Level 2.2 with a larger max-fs: the level stays 2.2, the sizes are said.
        let cisco = limit("profile-level-id=42e016;max-mbps=490000;max-fs=8160");
        assert_eq!(answered_level(full, 30, Some(&cisco)), (22, Some(3600), Some(108_000)));
    }
}
