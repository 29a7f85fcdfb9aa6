//! Where a video's first frame sits on its fMP4 timeline, read from the
//! published init segment (the track's timescale, `moov/trak/mdia/mdhd`)
//! and first media segment (`moof/traf/tfdt` plus the first sample's
//! composition offset in `trun`). The transcoder puts every rendition on
//! one timeline whose zero is x264's first (negative) decode time, or a
//! fixed lead for chunked encodes, so the first frame is presented a few
//! frames after 0; captions are timed from that frame, and the subtitle
//! segments' `X-TIMESTAMP-MAP` must say where it is. Reading it from the
//! published media (a few boxes, no decoding) works for every asset ever
//! published, whatever encoder settings made it.

/// The boxes directly inside `data`: (type, body).
fn boxes(mut data: &[u8]) -> Vec<([u8; 4], &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 8 {
        let size = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes")) as u64;
        let kind: [u8; 4] = data[4..8].try_into().expect("4 bytes");
        let (header, size) = match size {
            0 => (8, data.len() as u64),
            1 if data.len() >= 16 => (
                16,
                u64::from_be_bytes(data[8..16].try_into().expect("8 bytes")),
            ),
            1 => break,
            n => (8, n),
        };
        if size < header as u64 || size > data.len() as u64 {
            break;
        }
        out.push((kind, &data[header..size as usize]));
        data = &data[size as usize..];
    }
    out
}

fn child<'a>(data: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(data)
        .into_iter()
        .find(|(k, _)| k == kind)
        .map(|(_, b)| b)
}

fn path<'a>(data: &'a [u8], kinds: &[&[u8; 4]]) -> Option<&'a [u8]> {
    kinds.iter().try_fold(data, |d, k| child(d, k))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The media timescale of the init segment's (first) track.
pub fn timescale(init: &[u8]) -> Option<u32> {
    let mdhd = path(init, &[b"moov", b"trak", b"mdia", b"mdhd"])?;
    let at = if *mdhd.first()? == 1 { 4 + 16 } else { 4 + 8 };
    u32_at(mdhd, at).filter(|t| *t > 0)
}

/// The presentation time, in timescale units, of the first sample of the
/// segment's first fragment: its decode time plus composition offset.
pub fn first_presentation(segment: &[u8]) -> Option<i64> {
    let traf = path(segment, &[b"moof", b"traf"])?;
    let tfdt = child(traf, b"tfdt")?;
    let decode = if *tfdt.first()? == 1 {
        i64::try_from(u64_at(tfdt, 4)?).ok()?
    } else {
        i64::from(u32_at(tfdt, 4)?)
    };
    let Some(trun) = child(traf, b"trun") else {
        return Some(decode);
    };
    let version = *trun.first()?;
    let flags = u32_at(trun, 0)? & 0x00ff_ffff;
    if u32_at(trun, 4)? == 0 {
        return Some(decode);
    }
    let mut at = 8;
    for (flag, len) in [(0x1, 4), (0x4, 4)] {
        if flags & flag != 0 {
            at += len;
        }
    }
    for flag in [0x100, 0x200, 0x400] {
        if flags & flag != 0 {
            at += 4;
        }
    }
    let offset = if flags & 0x800 != 0 {
        let raw = u32_at(trun, at)?;
        if version == 0 {
            i64::from(raw)
        } else {
            i64::from(raw as i32)
        }
    } else {
        0
    };
    Some(decode + offset)
}

/// Seconds from the media timeline's zero to the first frame, or `None`
/// when the bytes are not fMP4 this reader understands.
pub fn presentation_start_s(init: &[u8], segment: &[u8]) -> Option<f64> {
    let scale = timescale(init)?;
    let pts = first_presentation(segment)?;
    Some(pts.max(0) as f64 / f64::from(scale))
}

/// Test media: an init segment and a media segment with the given timing
/// (this crate's tests and the API's captions suite build ladders with it).
#[doc(hidden)]
pub mod fixture {
    fn boxed(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        out.extend_from_slice(kind);
        out.extend_from_slice(body);
        out
    }

    /// `moov/trak/mdia/mdhd` (version 0) with `timescale`.
    pub fn init(timescale: u32) -> Vec<u8> {
        let mut mdhd = vec![0u8; 4 + 8];
        mdhd.extend_from_slice(&timescale.to_be_bytes());
        mdhd.extend_from_slice(&[0; 8]);
        let mdia = boxed(b"mdia", &boxed(b"mdhd", &mdhd));
        let moov = boxed(b"moov", &boxed(b"trak", &mdia));
        [boxed(b"ftyp", b"iso6mp41"), moov].concat()
    }

    /// `moof/traf/{tfhd,tfdt (version 1),trun}` whose first sample is
    /// decoded at `decode` and presented `offset` later, then an `mdat`.
    pub fn segment(decode: u64, offset: u32) -> Vec<u8> {
        let tfhd = boxed(b"tfhd", &[0, 0x02, 0, 0, 0, 0, 0, 1]);
        let mut tfdt = vec![1, 0, 0, 0];
        tfdt.extend_from_slice(&decode.to_be_bytes());
        // Flags: data offset, duration, size, flags and composition offset.
        let mut trun = vec![0, 0, 0x0f, 0x01];
        trun.extend_from_slice(&2u32.to_be_bytes());
        trun.extend_from_slice(&0u32.to_be_bytes());
        for _ in 0..2 {
            trun.extend_from_slice(&512u32.to_be_bytes());
            trun.extend_from_slice(&100u32.to_be_bytes());
            trun.extend_from_slice(&0u32.to_be_bytes());
            trun.extend_from_slice(&offset.to_be_bytes());
        }
        let traf = boxed(
            b"traf",
            &[tfhd, boxed(b"tfdt", &tfdt), boxed(b"trun", &trun)].concat(),
        );
        let moof = boxed(
            b"moof",
            &[boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]), traf].concat(),
        );
        [boxed(b"styp", b"msdh"), moof, boxed(b"mdat", &[0; 200])].concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_frames_presentation_time() {
        // 12800 Hz (libavformat's default for 25 fps), decoded at 0 and
        // presented two frames (1024 ticks) later: x264's B-frame delay.
        let start = presentation_start_s(&fixture::init(12_800), &fixture::segment(0, 1024));
        assert_eq!(start, Some(0.08));
        let start = presentation_start_s(&fixture::init(90_000), &fixture::segment(18_000, 0));
        assert_eq!(start, Some(0.2));
    }

    #[test]
    fn anything_else_is_none_without_a_panic() {
        assert_eq!(presentation_start_s(b"", b""), None);
        assert_eq!(presentation_start_s(&[1; 100], &[2; 100]), None);
        let init = fixture::init(1000);
        let segment = fixture::segment(5, 5);
        for cut in 0..segment.len() {
            let _ = presentation_start_s(&init, &segment[..cut]);
        }
        for cut in 0..init.len() {
            let _ = presentation_start_s(&init[..cut], &segment);
        }
        assert_eq!(presentation_start_s(&fixture::init(0), &segment), None);
    }
}
