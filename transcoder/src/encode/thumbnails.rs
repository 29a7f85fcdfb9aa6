//! The poster frame and the storyboard (a sprite of small tiles plus a
//! WebVTT track pointing into it with `#xywh=` fragments, which players use
//! for scrub previews). Frames arrive as packed RGB from appsinks on the
//! video tee, so the source is still decoded only once.

use std::fmt::Write as _;
use std::path::Path;

use gstreamer as gst;
use gstreamer_video as gst_video;
use gstreamer_video::prelude::*;

use super::Storyboard;
use crate::error::{MediaError, MediaErrorCode};

pub(crate) const POSTER_FILE: &str = "poster.jpg";
pub(crate) const STORYBOARD_IMAGE: &str = "storyboard.jpg";
pub(crate) const STORYBOARD_VTT: &str = "storyboard.vtt";
/// Storyboard tiles are this wide; their height follows the picture.
const TILE_WIDTH: u32 = 160;
const TILE_COLUMNS: u32 = 10;
/// Caps the sprite at 10×20 tiles (1600 px wide) however long the video.
const MAX_TILES: f64 = 200.0;
const JPEG_QUALITY: u8 = 80;

/// A decoded RGB picture with rows packed (no stride padding).
pub(crate) struct RgbFrame {
    pub(crate) pts_s: f64,
    width: u32,
    height: u32,
    data: Vec<u8>,
}

impl RgbFrame {
    pub(crate) fn from_sample(sample: &gst::Sample, pts_s: f64) -> Result<Self, MediaError> {
        let internal = |what: &str| MediaError::new(MediaErrorCode::Internal, what.to_string());
        let caps = sample
            .caps()
            .ok_or_else(|| internal("thumbnail sample without caps"))?;
        let info = gst_video::VideoInfo::from_caps(caps)
            .map_err(|_| internal("thumbnail caps are not raw video"))?;
        let buffer = sample
            .buffer()
            .ok_or_else(|| internal("thumbnail sample without buffer"))?;
        let frame = gst_video::VideoFrameRef::from_buffer_ref_readable(buffer, &info)
            .map_err(|_| internal("cannot map a thumbnail frame"))?;
        let (width, height) = (info.width(), info.height());
        let stride = frame.plane_stride()[0] as usize;
        let plane = frame
            .plane_data(0)
            .map_err(|_| internal("cannot read a thumbnail plane"))?;
        let row = width as usize * 3;
        let mut data = Vec::with_capacity(row * height as usize);
        for y in 0..height as usize {
            data.extend_from_slice(&plane[y * stride..y * stride + row]);
        }
        Ok(Self {
            pts_s,
            width,
            height,
            data,
        })
    }

    fn write_jpeg(&self, path: &Path) -> Result<(), MediaError> {
        write_jpeg(path, &self.data, self.width, self.height)
    }
}

fn write_jpeg(path: &Path, rgb: &[u8], width: u32, height: u32) -> Result<(), MediaError> {
    let too_big = || {
        MediaError::new(
            MediaErrorCode::Internal,
            format!("{width}x{height} is too large for a JPEG"),
        )
    };
    let w = u16::try_from(width).map_err(|_| too_big())?;
    let h = u16::try_from(height).map_err(|_| too_big())?;
    let encoder = jpeg_encoder::Encoder::new_file(path, JPEG_QUALITY)
        .map_err(|e| MediaError::new(MediaErrorCode::Io, format!("{}: {e}", path.display())))?;
    encoder
        .encode(rgb, w, h, jpeg_encoder::ColorType::Rgb)
        .map_err(|e| MediaError::new(MediaErrorCode::Io, format!("{}: {e}", path.display())))
}

/// Keeps the first frame at or after the target time; until then the latest
/// one, so a clip shorter than the target still gets a poster.
pub(crate) struct PosterPicker {
    target_s: f64,
    chosen: Option<RgbFrame>,
}

impl PosterPicker {
    pub(crate) fn new(target_s: f64) -> Self {
        Self {
            target_s,
            chosen: None,
        }
    }

    pub(crate) fn wants_more(&self) -> bool {
        self.chosen
            .as_ref()
            .is_none_or(|frame| frame.pts_s < self.target_s)
    }

    pub(crate) fn offer(&mut self, frame: RgbFrame) {
        if self.wants_more() {
            self.chosen = Some(frame);
        }
    }

    pub(crate) fn write(self, out_dir: &Path) -> Result<bool, MediaError> {
        match self.chosen {
            Some(frame) => frame.write_jpeg(&out_dir.join(POSTER_FILE)).map(|()| true),
            None => Ok(false),
        }
    }
}

/// Poster size: the top rung, but never wider than 1280 px.
pub(crate) fn poster_size(width: u32, height: u32) -> (u32, u32) {
    if width <= 1280 {
        (width, height)
    } else {
        (1280, even(f64::from(height) * 1280.0 / f64::from(width)))
    }
}

fn even(x: f64) -> u32 {
    ((x / 2.0).round() as u32 * 2).max(2)
}

/// How often a storyboard tile is taken and how big it is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StoryboardLayout {
    pub(crate) interval_s: u32,
    pub(crate) tile_width: u32,
    pub(crate) tile_height: u32,
}

impl StoryboardLayout {
    /// A tile every 2 s for short videos, sparser for long ones so the sprite
    /// stays one reasonably sized image.
    pub(crate) fn for_video(duration_s: f64, width: u32, height: u32) -> Self {
        let interval_s = ((duration_s / MAX_TILES).ceil() as u32).max(2);
        Self {
            interval_s,
            tile_width: TILE_WIDTH,
            tile_height: even(f64::from(height) * f64::from(TILE_WIDTH) / f64::from(width)),
        }
    }
}

/// Lays the tiles out row by row and writes the sprite and its WebVTT track.
pub(crate) fn write_storyboard(
    frames: &[RgbFrame],
    layout: StoryboardLayout,
    duration_s: f64,
    out_dir: &Path,
) -> Result<Option<Storyboard>, MediaError> {
    // videorate may emit a last tile at or past the end: it would never show.
    let frames: Vec<&RgbFrame> = frames
        .iter()
        .filter(|f| f.pts_s < duration_s || f.pts_s == 0.0)
        .collect();
    if frames.is_empty() {
        return Ok(None);
    }
    let (tw, th) = (layout.tile_width, layout.tile_height);
    let columns = (frames.len() as u32).min(TILE_COLUMNS);
    let rows = (frames.len() as u32).div_ceil(columns);
    let sprite_w = (columns * tw) as usize;
    let mut sprite = vec![0u8; sprite_w * (rows * th) as usize * 3];
    let mut vtt = String::from("WEBVTT\n");
    for (i, frame) in frames.iter().enumerate() {
        if frame.width != tw || frame.height != th {
            return Err(MediaError::new(
                MediaErrorCode::Internal,
                format!(
                    "storyboard tile is {}x{}, expected {tw}x{th}",
                    frame.width, frame.height
                ),
            ));
        }
        let (x, y) = ((i as u32 % columns) * tw, (i as u32 / columns) * th);
        for row in 0..th as usize {
            let dst = ((y as usize + row) * sprite_w + x as usize) * 3;
            let src = row * tw as usize * 3;
            sprite[dst..dst + tw as usize * 3]
                .copy_from_slice(&frame.data[src..src + tw as usize * 3]);
        }
        let end_s = frames
            .get(i + 1)
            .map_or(duration_s.max(frame.pts_s), |next| next.pts_s);
        // Writing to a String cannot fail.
        let _ = write!(
            vtt,
            "\n{} --> {}\n{STORYBOARD_IMAGE}#xywh={x},{y},{tw},{th}\n",
            vtt_time(frame.pts_s),
            vtt_time(end_s)
        );
    }
    write_jpeg(
        &out_dir.join(STORYBOARD_IMAGE),
        &sprite,
        columns * tw,
        rows * th,
    )?;
    std::fs::write(out_dir.join(STORYBOARD_VTT), vtt)?;
    Ok(Some(Storyboard {
        image: STORYBOARD_IMAGE.into(),
        vtt: STORYBOARD_VTT.into(),
        tile_width: tw,
        tile_height: th,
        columns,
        rows,
        tiles: frames.len() as u32,
        interval_s: layout.interval_s,
    }))
}

fn vtt_time(seconds: f64) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vtt_times_are_hours_minutes_seconds_millis() {
        assert_eq!(vtt_time(0.0), "00:00:00.000");
        assert_eq!(vtt_time(3723.5), "01:02:03.500");
    }

    #[test]
    fn poster_is_capped_at_1280_wide() {
        assert_eq!(poster_size(1920, 1080), (1280, 720));
        assert_eq!(poster_size(640, 360), (640, 360));
    }

    #[test]
    fn storyboard_interval_grows_with_duration() {
        assert_eq!(StoryboardLayout::for_video(30.0, 1280, 720).interval_s, 2);
        let long = StoryboardLayout::for_video(3600.0, 1280, 720);
        assert_eq!(long.interval_s, 18);
        assert_eq!(long.tile_height, 90);
    }
}
