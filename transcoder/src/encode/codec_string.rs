//! RFC 6381 `CODECS` strings read from the encoded bitstream's own
//! configuration records, so the master playlist states what was produced
//! rather than what was asked for (x264 may pick a different level).

use crate::error::{MediaError, MediaErrorCode};

/// `avc1.PPCCLL` from an `AVCDecoderConfigurationRecord` (ISO/IEC 14496-15):
/// byte 0 is the version, bytes 1..=3 are profile_idc, the constraint flags
/// and level_idc copied from the SPS.
pub(crate) fn avc1_from_avcc(avcc: &[u8]) -> Result<String, MediaError> {
    match avcc {
        [1, profile, constraints, level, ..] => {
            Ok(format!("avc1.{profile:02x}{constraints:02x}{level:02x}"))
        }
        _ => Err(MediaError::new(
            MediaErrorCode::Internal,
            format!(
                "h264parse produced an invalid avcC record ({} bytes)",
                avcc.len()
            ),
        )),
    }
}

/// `mp4a.40.N` from an AAC `AudioSpecificConfig` (ISO/IEC 14496-3): the
/// first 5 bits are the audio object type, 31 escapes to 32 + the next 6.
pub(crate) fn mp4a_from_audio_specific_config(asc: &[u8]) -> Result<String, MediaError> {
    let object_type = match asc {
        [b0, b1, ..] if b0 >> 3 == 31 => 32 + (((b0 & 0x07) << 3) | (b1 >> 5)),
        [b0, ..] if b0 >> 3 != 0 => b0 >> 3,
        _ => {
            return Err(MediaError::new(
                MediaErrorCode::Internal,
                "the AAC encoder produced an invalid AudioSpecificConfig",
            ))
        }
    };
    Ok(format!("mp4a.40.{object_type}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc1_is_profile_constraints_level_in_hex() {
        // High profile, no constraints, level 3.1 — as x264 writes for 720p.
        let avcc = [1, 0x64, 0x00, 0x1f, 0xff, 0xe1];
        assert_eq!(avc1_from_avcc(&avcc).unwrap(), "avc1.64001f");
        assert!(avc1_from_avcc(&[0, 0x64]).is_err());
    }

    #[test]
    fn aac_lc_and_escaped_object_types() {
        // AAC-LC, 48 kHz, stereo: 00010 0011 0010 000
        assert_eq!(
            mp4a_from_audio_specific_config(&[0x11, 0x90]).unwrap(),
            "mp4a.40.2"
        );
        // HE-AAC (SBR) is object type 5.
        assert_eq!(
            mp4a_from_audio_specific_config(&[0x2b, 0x92]).unwrap(),
            "mp4a.40.5"
        );
        // Escape: 11111 000010 → 32 + 2 = 34.
        assert_eq!(
            mp4a_from_audio_specific_config(&[0xf8, 0x40]).unwrap(),
            "mp4a.40.34"
        );
        assert!(mp4a_from_audio_specific_config(&[]).is_err());
    }
}
