//! What a probe learns about a source. Serialised as the JSON that
//! `lectern probe FILE` prints, and stored with each asset.

use serde::{Deserialize, Serialize};

/// An exact fraction (frame rates, aspect ratios, time bases).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rational {
    pub num: i32,
    pub den: i32,
}

impl Rational {
    pub const fn new(num: i32, den: i32) -> Self {
        Self { num, den }
    }

    pub fn as_f64(self) -> f64 {
        if self.den == 0 {
            0.0
        } else {
            f64::from(self.num) / f64::from(self.den)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// libavformat's short name, e.g. `mov,mp4,m4a,3gp,3g2,mj2` or `matroska,webm`.
    pub container: String,
    pub container_long_name: String,
    pub duration_s: f64,
    pub size_bytes: u64,
    pub bit_rate: Option<u64>,
    pub streams: Vec<StreamInfo>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StreamInfo {
    Video(VideoStream),
    Audio(AudioStream),
    /// Subtitles, data, attachments: listed, never transcoded.
    Other {
        index: usize,
        media_type: String,
        codec: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VideoStream {
    pub index: usize,
    /// libavcodec name: `h264`, `hevc`, `vp9`, `av1`, `mpeg2video`, `prores`…
    pub codec: String,
    pub profile: Option<String>,
    /// Coded (storage) dimensions, before rotation and sample aspect.
    pub width: u32,
    pub height: u32,
    pub sample_aspect: Rational,
    /// Display aspect of the stored picture (before rotation).
    pub display_aspect: Rational,
    /// Clockwise rotation to apply for display: 0, 90, 180 or 270.
    pub rotation_deg: u32,
    /// Average frame rate.
    pub frame_rate: Rational,
    /// True when timestamps are not evenly spaced (phone and screen recordings).
    pub variable_frame_rate: bool,
    pub pixel_format: String,
    pub bit_depth: u8,
    /// Colour transfer characteristic, e.g. `bt709`, `smpte2084` (PQ), `arib-std-b67` (HLG).
    pub color_transfer: Option<String>,
    /// Colour matrix the source is tagged with, as libavutil names it
    /// (`bt709`, `smpte170m`, `bt470bg`, `bt2020nc`); none when untagged.
    #[serde(default)]
    pub color_matrix: Option<String>,
    pub hdr: bool,
    pub bit_rate: Option<u64>,
    pub duration_s: Option<f64>,
}

impl VideoStream {
    /// The size a viewer sees: sample aspect applied, then rotation.
    pub fn display_dimensions(&self) -> (u32, u32) {
        let sar = if self.sample_aspect.num > 0 && self.sample_aspect.den > 0 {
            self.sample_aspect.as_f64()
        } else {
            1.0
        };
        let w = (f64::from(self.width) * sar).round() as u32;
        let h = self.height;
        if self.rotation_deg % 180 == 90 {
            (h, w)
        } else {
            (w, h)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AudioStream {
    pub index: usize,
    pub codec: String,
    pub profile: Option<String>,
    pub channels: u16,
    /// e.g. `stereo`, `5.1(side)`, `mono`.
    pub channel_layout: String,
    pub sample_rate: u32,
    pub bit_rate: Option<u64>,
}

impl MediaInfo {
    /// The video stream the ladder is made from: the first one.
    pub fn primary_video(&self) -> Option<&VideoStream> {
        self.streams.iter().find_map(|s| match s {
            StreamInfo::Video(v) => Some(v),
            _ => None,
        })
    }

    pub fn primary_audio(&self) -> Option<&AudioStream> {
        self.streams.iter().find_map(|s| match s {
            StreamInfo::Audio(a) => Some(a),
            _ => None,
        })
    }
}
