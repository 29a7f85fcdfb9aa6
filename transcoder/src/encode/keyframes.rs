//! Where the keyframes are in a written fMP4 segment, for I-frame
//! playlists (trick play): read back from the box structure once
//! libavformat has closed the segment, so the packager can list byte
//! ranges without ever opening media.
//!
//! A segment is `styp`, `sidx`, then one or more `moof` + `mdat`
//! fragments. For every fragment whose first sample is a sync sample
//! (`trun` first-sample flags, or the sample's own flags, or `tfhd`'s
//! default; `sample_is_non_sync_sample` clear), the range runs from the
//! `moof` to the end of that sample's bytes: the fragment header and the
//! keyframe, which with the init segment decode to exactly one picture —
//! the layout Apple's I-frame playlists use for fMP4. Our encoder puts a
//! keyframe at the start of every segment and nowhere else, so there is
//! one range per segment; the decode time (`tfdt`, in the track's
//! `mdhd` timescale) places each within its segment.

use super::KeyframeRange;
use crate::error::{MediaError, MediaErrorCode};

/// `sample_is_non_sync_sample` in ISO/IEC 14496-12 sample flags.
const NON_SYNC: u32 = 0x0001_0000;

fn malformed(what: &str) -> MediaError {
    MediaError::new(
        MediaErrorCode::Internal,
        format!("the muxer wrote an fMP4 segment this reader cannot follow: {what}"),
    )
}

/// One box: its type, where it starts and ends, and its header's size.
#[derive(Debug, Clone, Copy)]
struct BoxAt {
    kind: [u8; 4],
    start: usize,
    end: usize,
    header: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u32_at(&self, at: usize) -> Result<u32, MediaError> {
        self.bytes
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| malformed("a box runs past the end of the file"))
    }

    fn u64_at(&self, at: usize) -> Result<u64, MediaError> {
        Ok((u64::from(self.u32_at(at)?) << 32) | u64::from(self.u32_at(at + 4)?))
    }

    /// The boxes in `start..end`.
    fn boxes(&self, start: usize, end: usize) -> Result<Vec<BoxAt>, MediaError> {
        let mut out = Vec::new();
        let mut at = start;
        while at + 8 <= end {
            let size32 = self.u32_at(at)? as usize;
            let kind: [u8; 4] = self.bytes[at + 4..at + 8].try_into().expect("4 bytes");
            let (size, header) = match size32 {
                0 => (end - at, 8),
                1 => (self.u64_at(at + 8)? as usize, 16),
                n => (n, 8),
            };
            if size < header || at + size > end {
                return Err(malformed("a box size does not fit its parent"));
            }
            out.push(BoxAt {
                kind,
                start: at,
                end: at + size,
                header,
            });
            at += size;
        }
        Ok(out)
    }

    fn child(
        &self,
        parent: (usize, usize),
        kind: &[u8; 4],
    ) -> Result<Option<(usize, usize, usize)>, MediaError> {
        Ok(self
            .boxes(parent.0, parent.1)?
            .into_iter()
            .find(|b| &b.kind == kind)
            .map(|b| (b.start, b.end, b.header)))
    }
}

/// The media timescale (`moov/trak/mdia/mdhd`) of an init segment's first track.
pub(crate) fn timescale(init: &[u8]) -> Result<u32, MediaError> {
    let r = Reader { bytes: init };
    let mut at = (0, init.len());
    for kind in [b"moov", b"trak", b"mdia"] {
        let (s, e, h) = r
            .child(at, kind)?
            .ok_or_else(|| malformed("the init segment has no moov/trak/mdia"))?;
        at = (s + h, e);
    }
    let (s, _, h) = r
        .child(at, b"mdhd")?
        .ok_or_else(|| malformed("the init segment has no mdhd"))?;
    let version = init[s + h];
    // version 1: creation and modification times are 64-bit.
    let at = s + h + 4 + if version == 1 { 16 } else { 8 };
    let scale = r.u32_at(at)?;
    if scale == 0 {
        return Err(malformed("a zero timescale"));
    }
    Ok(scale)
}

/// Every keyframe fragment of `segment`, its time relative to the
/// segment's first fragment.
pub(crate) fn keyframe_ranges(
    segment: &[u8],
    timescale: u32,
) -> Result<Vec<KeyframeRange>, MediaError> {
    let r = Reader { bytes: segment };
    let mut out = Vec::new();
    let mut first_decode_time = None;
    for moof in r.boxes(0, segment.len())? {
        if &moof.kind != b"moof" {
            continue;
        }
        let (moof_start, moof_end, header) = (moof.start, moof.end, moof.header);
        let (traf_s, traf_e, traf_h) = r
            .child((moof_start + header, moof_end), b"traf")?
            .ok_or_else(|| malformed("a moof without traf"))?;
        let inner = (traf_s + traf_h, traf_e);
        let (tfhd, _, tfhd_h) = r
            .child(inner, b"tfhd")?
            .ok_or_else(|| malformed("a traf without tfhd"))?;
        let tfhd_flags = r.u32_at(tfhd + tfhd_h)? & 0x00ff_ffff;
        let mut at = tfhd + tfhd_h + 8; // version/flags, track_ID
        let base = if tfhd_flags & 0x01 != 0 {
            let b = r.u64_at(at)? as usize;
            at += 8;
            b
        } else {
            // default-base-is-moof, or no base at all for a fragment's
            // first traf: both mean the moof's first byte.
            moof_start
        };
        if tfhd_flags & 0x02 != 0 {
            at += 4; // sample_description_index
        }
        if tfhd_flags & 0x08 != 0 {
            at += 4; // default_sample_duration
        }
        let default_size = if tfhd_flags & 0x10 != 0 {
            let v = r.u32_at(at)?;
            at += 4;
            Some(v)
        } else {
            None
        };
        let default_flags = if tfhd_flags & 0x20 != 0 {
            Some(r.u32_at(at)?)
        } else {
            None
        };
        let decode_time = match r.child(inner, b"tfdt")? {
            Some((s, _, h)) if segment[s + h] == 1 => r.u64_at(s + h + 4)?,
            Some((s, _, h)) => u64::from(r.u32_at(s + h + 4)?),
            None => 0,
        };
        let first = *first_decode_time.get_or_insert(decode_time);
        let (trun, _, trun_h) = r
            .child(inner, b"trun")?
            .ok_or_else(|| malformed("a traf without trun"))?;
        let flags = r.u32_at(trun + trun_h)? & 0x00ff_ffff;
        let count = r.u32_at(trun + trun_h + 4)?;
        let mut at = trun + trun_h + 8;
        let data_offset = if flags & 0x01 != 0 {
            let v = r.u32_at(at)? as i32;
            at += 4;
            i64::from(v)
        } else {
            // Without a data offset the data starts right after the moof's
            // mdat header (the fragment's only data).
            (moof_end + 8 - base) as i64
        };
        let first_sample_flags = if flags & 0x04 != 0 {
            let v = r.u32_at(at)?;
            at += 4;
            Some(v)
        } else {
            None
        };
        if count == 0 {
            continue;
        }
        if flags & 0x100 != 0 {
            at += 4; // duration
        }
        let size = if flags & 0x200 != 0 {
            r.u32_at(at)?
        } else {
            default_size.ok_or_else(|| malformed("a sample without a size"))?
        };
        let own_flags = if flags & 0x400 != 0 {
            Some(r.u32_at(at + if flags & 0x200 != 0 { 4 } else { 0 })?)
        } else {
            None
        };
        let sample_flags = first_sample_flags
            .or(own_flags)
            .or(default_flags)
            .unwrap_or(0);
        if sample_flags & NON_SYNC != 0 {
            continue;
        }
        let sample_start = base as i64 + data_offset;
        let end = sample_start + i64::from(size);
        if sample_start < moof_end as i64 || end > segment.len() as i64 {
            return Err(malformed("a sample outside the file"));
        }
        out.push(KeyframeRange {
            offset: moof_start as u64,
            length: (end - moof_start as i64) as u64,
            time_s: decode_time.saturating_sub(first) as f64 / f64::from(timescale),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    fn full(kind: &[u8; 4], version: u8, flags: u32, body: &[u8]) -> Vec<u8> {
        let mut b = ((u32::from(version) << 24) | flags).to_be_bytes().to_vec();
        b.extend_from_slice(body);
        boxed(kind, &b)
    }

    /// One fragment as libavformat writes it: default-base-is-moof, a
    /// 64-bit decode time, a trun with a data offset, first-sample flags
    /// and per-sample sizes.
    fn fragment(decode_time: u64, first_flags: u32, sizes: &[u32]) -> Vec<u8> {
        let tfhd = full(b"tfhd", 0, 0x02_0000, &1u32.to_be_bytes());
        let tfdt = full(b"tfdt", 1, 0, &decode_time.to_be_bytes());
        let trun_len = 8 + 4 + 4 + 4 + 4 * sizes.len() + 4;
        let traf_len = 8 + tfhd.len() + tfdt.len() + trun_len;
        let moof_len = 8 + 16 + traf_len;
        let mut trun = (sizes.len() as u32).to_be_bytes().to_vec();
        trun.extend_from_slice(&((moof_len + 8) as u32).to_be_bytes());
        trun.extend_from_slice(&first_flags.to_be_bytes());
        for s in sizes {
            trun.extend_from_slice(&s.to_be_bytes());
        }
        let trun = full(b"trun", 0, 0x205, &trun);
        let traf = boxed(b"traf", &[tfhd, tfdt, trun].concat());
        let mfhd = full(b"mfhd", 0, 0, &1u32.to_be_bytes());
        let moof = boxed(b"moof", &[mfhd, traf].concat());
        assert_eq!(moof.len(), moof_len);
        let data: Vec<u8> = sizes.iter().flat_map(|&s| vec![0xAB; s as usize]).collect();
        [moof, boxed(b"mdat", &data)].concat()
    }

    #[test]
    fn each_fragment_starting_with_a_sync_sample_is_one_range() {
        let styp = boxed(b"styp", b"msdh\0\0\0\0");
        let first = fragment(90_000, 0x0200_0000, &[1000, 200, 300]);
        // A fragment opening with a non-sync sample is no I-frame.
        let second = fragment(180_000, 0x0101_0000, &[400]);
        let third = fragment(270_000, 0x0200_0000, &[700, 50]);
        let segment = [styp.clone(), first.clone(), second.clone(), third.clone()].concat();
        let ranges = keyframe_ranges(&segment, 90_000).unwrap();
        let moof_len = first.len() - 8 - 1500;
        assert_eq!(
            ranges,
            [
                KeyframeRange {
                    offset: styp.len() as u64,
                    length: (moof_len + 8 + 1000) as u64,
                    time_s: 0.0,
                },
                KeyframeRange {
                    offset: (styp.len() + first.len() + second.len()) as u64,
                    // Two samples: a trun entry shorter than the first's.
                    length: (third.len() - 750 + 700) as u64,
                    time_s: 2.0,
                },
            ]
        );
        // A truncated file is an error, never a panic.
        assert!(keyframe_ranges(&segment[..segment.len() - 10], 90_000).is_err());
    }

    #[test]
    fn the_timescale_comes_from_the_first_tracks_mdhd() {
        let mut mdhd = vec![0; 8];
        mdhd.extend_from_slice(&12_800u32.to_be_bytes());
        mdhd.extend_from_slice(&[0; 8]);
        let init = boxed(
            b"moov",
            &boxed(b"trak", &boxed(b"mdia", &full(b"mdhd", 0, 0, &mdhd))),
        );
        assert_eq!(timescale(&init).unwrap(), 12_800);
        assert!(timescale(b"not an init segment").is_err());
    }
}
