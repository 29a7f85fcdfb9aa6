//! Telling media from everything else by its first bytes, before an upload
//! becomes an asset: a renamed PDF or ZIP is refused at once with
//! `not_media` instead of costing a worker a probe. Only container and
//! stream signatures are checked; whether the media is intact is the
//! transcoder's probe's job.

/// Bytes to read from the start of an upload; enough for four MPEG-TS packets.
pub const SNIFF_LEN: usize = 1024;

/// The family of container or stream an upload starts like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaSignature {
    /// ISO base media: MP4, MOV, M4A, 3GP.
    IsoBmff,
    /// EBML: Matroska, WebM.
    Matroska,
    Avi,
    Wav,
    Flv,
    MpegTransport,
    MpegProgram,
    Ogg,
    Flac,
    /// Windows Media (ASF): WMV, WMA.
    Asf,
    /// MP3 (with or without an ID3 tag) or AAC in ADTS frames.
    AudioFrames,
}

const TS_PACKET: usize = 188;
/// M2TS (Blu-ray, AVCHD cameras): a 4-byte timestamp before each packet.
const M2TS_PACKET: usize = 192;
const ASF_GUID: [u8; 8] = [0x30, 0x26, 0xB2, 0x75, 0x8E, 0x66, 0xCF, 0x11];

/// Classifies the first bytes of an upload, or `None` if they are no media
/// Lectern can take.
pub fn sniff(head: &[u8]) -> Option<MediaSignature> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    if [
        &b"ftyp"[..],
        b"moov",
        b"mdat",
        b"free",
        b"skip",
        b"wide",
        b"pnot",
    ]
    .iter()
    .any(|atom| at(4, atom))
    {
        return Some(MediaSignature::IsoBmff);
    }
    if at(0, &[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(MediaSignature::Matroska);
    }
    if at(0, b"RIFF") && at(8, b"AVI ") {
        return Some(MediaSignature::Avi);
    }
    if at(0, b"RIFF") && at(8, b"WAVE") {
        return Some(MediaSignature::Wav);
    }
    if at(0, b"FLV\x01") {
        return Some(MediaSignature::Flv);
    }
    if sync_bytes_repeat(head, 0, TS_PACKET) || sync_bytes_repeat(head, 4, M2TS_PACKET) {
        return Some(MediaSignature::MpegTransport);
    }
    if at(0, &[0x00, 0x00, 0x01, 0xBA]) {
        return Some(MediaSignature::MpegProgram);
    }
    if at(0, b"OggS") {
        return Some(MediaSignature::Ogg);
    }
    if at(0, b"fLaC") {
        return Some(MediaSignature::Flac);
    }
    if at(0, &ASF_GUID) {
        return Some(MediaSignature::Asf);
    }
    if at(0, b"ID3") || audio_frame_header(head) {
        return Some(MediaSignature::AudioFrames);
    }
    None
}

/// MPEG-TS packets all start with 0x47; one such byte means nothing, three
/// at the packet stride (or every one a short file has) is the format.
fn sync_bytes_repeat(head: &[u8], first: usize, stride: usize) -> bool {
    let positions: Vec<usize> = (0..4)
        .map(|i| first + i * stride)
        .filter(|&p| p < head.len())
        .collect();
    positions.len() >= 2 && positions.iter().all(|&p| head[p] == 0x47)
}

/// An MPEG audio (MP3) or ADTS (AAC) frame header at the very start: an
/// 11/12-bit sync word plus fields that rule out the reserved values, so
/// random binary rarely matches.
fn audio_frame_header(head: &[u8]) -> bool {
    let [b0, b1, b2, ..] = *head else {
        return false;
    };
    if b0 != 0xFF || b1 & 0xE0 != 0xE0 {
        return false;
    }
    let layer = (b1 >> 1) & 0b11;
    if layer == 0 {
        // ADTS: MPEG-4 AAC, sampling frequency index must be a defined one.
        return b1 & 0xF0 == 0xF0 && (b2 >> 2) & 0x0F < 13;
    }
    let version = (b1 >> 3) & 0b11;
    let bitrate = b2 >> 4;
    let sample_rate = (b2 >> 2) & 0b11;
    version != 0b01 && bitrate != 0b1111 && bitrate != 0 && sample_rate != 0b11
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(stride: usize, offset: usize) -> Vec<u8> {
        let mut data = vec![0u8; 4 * stride + offset];
        for i in 0..4 {
            data[offset + i * stride] = 0x47;
        }
        data
    }

    #[test]
    fn recognises_media_signatures() {
        let cases: Vec<(Vec<u8>, MediaSignature)> = vec![
            (
                b"\0\0\0\x20ftypisom\0\0\x02\0".to_vec(),
                MediaSignature::IsoBmff,
            ),
            (b"\0\0\0\x14ftypqt  ".to_vec(), MediaSignature::IsoBmff),
            (
                vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F, 0x42, 0x86],
                MediaSignature::Matroska,
            ),
            (b"RIFF\x10\0\0\0AVI LIST".to_vec(), MediaSignature::Avi),
            (b"RIFF\x10\0\0\0WAVEfmt ".to_vec(), MediaSignature::Wav),
            (b"FLV\x01\x05\0\0\0\x09".to_vec(), MediaSignature::Flv),
            (ts(TS_PACKET, 0), MediaSignature::MpegTransport),
            (ts(M2TS_PACKET, 4), MediaSignature::MpegTransport),
            (vec![0, 0, 1, 0xBA, 0x44], MediaSignature::MpegProgram),
            (b"OggS\0\x02".to_vec(), MediaSignature::Ogg),
            (b"fLaC\0\0\0\x22".to_vec(), MediaSignature::Flac),
            (ASF_GUID.to_vec(), MediaSignature::Asf),
            (b"ID3\x04\0\0\0\0\0\0".to_vec(), MediaSignature::AudioFrames),
            // MPEG-1 Layer III, 128 kbit/s, 44.1 kHz.
            (vec![0xFF, 0xFB, 0x90, 0x64], MediaSignature::AudioFrames),
            // ADTS AAC-LC, 44.1 kHz.
            (vec![0xFF, 0xF1, 0x50, 0x80], MediaSignature::AudioFrames),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(&head), Some(expected), "{head:02x?}");
        }
    }

    #[test]
    fn refuses_documents_archives_and_images() {
        let mut ts_once = vec![0u8; 600];
        ts_once[0] = 0x47;
        for head in [
            &b"%PDF-1.7\n"[..],
            b"PK\x03\x04\x14\0",
            b"\x89PNG\r\n\x1a\n",
            b"RIFF\x10\0\0\0WEBPVP8 ",
            b"GIF89a",
            b"hello, this is plain text",
            b"",
            &[0xFF, 0xD8, 0xFF, 0xE0],
            &ts_once,
        ] {
            assert_eq!(sniff(head), None, "{:02x?}", &head[..head.len().min(16)]);
        }
    }
}
