//! `LecternBilinear`: a GStreamer element that scales 8-bit I420 with the
//! same two taps as `videoscale method=bilinear`, vectorised ([`kernel`]).
//!
//! Why not `videoscale`: its bilinear horizontal pass on 8-bit samples
//! (`video_scale_h_2tap_1u8`) runs as a scalar loop — ORC has no SIMD rule
//! for the resampling opcodes it is written in — and on the slide lecture
//! the 720p → 480p rung's scaling was 8.3 % of the ladder's CPU. swscale
//! was tried instead and not kept: its bilinear widens its taps with the
//! ratio (an area filter), which scored up to 0.003 SSIM below
//! `videoscale`'s two taps on the scaled rungs, at no speed gain in the
//! ladder. This element keeps `videoscale`'s taps (and so its sharpness)
//! and computes them with AVX2 `pshufb`/`pmulhrsw`.
//!
//! Same format in and out, any size: the capsfilter after it fixes the
//! rung's size, and everything else (frame rate, colorimetry, chroma
//! siting) passes through. Pixels are stretched to the rung's even size,
//! never letterboxed, as `videoscale add-borders=false` does. Each plane
//! is resampled on its own with pixel centres aligned, as `videoscale`
//! does for progressive I420.
//!
//! The ladder uses it only where [`available`] says the vectorised path
//! runs; elsewhere `videoscale` stays.

mod kernel;

use std::sync::Mutex;

use gstreamer as gst;
use gstreamer::glib;
use gstreamer::subclass::prelude::*;
use gstreamer_video as gst_video;
use gstreamer_video::gst_base::subclass::prelude::*;
use gstreamer_video::prelude::*;
use gstreamer_video::subclass::prelude::*;

use kernel::{PlaneScaler, Scratch};

/// Whether this machine runs the vectorised path (x86-64 with AVX2).
pub(crate) fn available() -> bool {
    kernel::avx2_available()
}

glib::wrapper! {
    pub struct Bilinear(ObjectSubclass<imp::Bilinear>)
        @extends gst_video::VideoFilter, gst_video::gst_base::BaseTransform, gst::Element, gst::Object;
}

impl Bilinear {
    pub(crate) fn new() -> Self {
        glib::Object::new()
    }
}

mod imp {
    use super::*;

    #[derive(Default)]
    pub struct Bilinear {
        /// One scaler and its scratch rows per plane, for the negotiated
        /// sizes.
        planes: Mutex<Vec<(PlaneScaler, Scratch)>>,
    }

    #[glib::object_subclass]
    impl ObjectSubclass for Bilinear {
        const NAME: &'static str = "LecternBilinear";
        type Type = super::Bilinear;
        type ParentType = gst_video::VideoFilter;
    }

    impl ObjectImpl for Bilinear {}

    impl GstObjectImpl for Bilinear {}

    impl ElementImpl for Bilinear {
        fn metadata() -> Option<&'static gst::subclass::ElementMetadata> {
            static METADATA: std::sync::OnceLock<gst::subclass::ElementMetadata> =
                std::sync::OnceLock::new();
            Some(METADATA.get_or_init(|| {
                gst::subclass::ElementMetadata::new(
                    "Lectern bilinear scaler",
                    "Filter/Converter/Video/Scaler",
                    "Scales 8-bit I420 with two taps per pixel (videoscale's bilinear), vectorised",
                    "Lectern",
                )
            }))
        }

        fn pad_templates() -> &'static [gst::PadTemplate] {
            static TEMPLATES: std::sync::OnceLock<Vec<gst::PadTemplate>> =
                std::sync::OnceLock::new();
            TEMPLATES.get_or_init(|| {
                let caps = gst_video::VideoCapsBuilder::new()
                    .format(gst_video::VideoFormat::I420)
                    .build();
                [
                    ("src", gst::PadDirection::Src),
                    ("sink", gst::PadDirection::Sink),
                ]
                .into_iter()
                .map(|(name, direction)| {
                    gst::PadTemplate::new(name, direction, gst::PadPresence::Always, &caps)
                        .expect("a static pad template")
                })
                .collect()
            })
        }
    }

    impl BaseTransformImpl for Bilinear {
        const MODE: gst_video::gst_base::subclass::BaseTransformMode =
            gst_video::gst_base::subclass::BaseTransformMode::NeverInPlace;
        const PASSTHROUGH_ON_SAME_CAPS: bool = true;
        const TRANSFORM_IP_ON_PASSTHROUGH: bool = false;

        /// Any size (and pixel aspect ratio) on the other side, everything
        /// else as it is.
        fn transform_caps(
            &self,
            _direction: gst::PadDirection,
            caps: &gst::Caps,
            filter: Option<&gst::Caps>,
        ) -> Option<gst::Caps> {
            let mut other = caps.clone();
            for s in other.make_mut().iter_mut() {
                s.remove_fields(["width", "height", "pixel-aspect-ratio"]);
                s.set("width", gst::IntRange::new(1, i32::MAX));
                s.set("height", gst::IntRange::new(1, i32::MAX));
            }
            Some(match filter {
                Some(filter) => filter.intersect_with_mode(&other, gst::CapsIntersectMode::First),
                None => other,
            })
        }
    }

    impl VideoFilterImpl for Bilinear {
        fn set_info(
            &self,
            _incaps: &gst::Caps,
            in_info: &gst_video::VideoInfo,
            _outcaps: &gst::Caps,
            out_info: &gst_video::VideoInfo,
        ) -> Result<(), gst::LoggableError> {
            let finfo = in_info.format_info();
            let planes = (0..finfo.n_components())
                .map(|c| {
                    let scaler = PlaneScaler::new(
                        finfo.scale_width(c as u8, in_info.width()) as usize,
                        finfo.scale_height(c as u8, in_info.height()) as usize,
                        finfo.scale_width(c as u8, out_info.width()) as usize,
                        finfo.scale_height(c as u8, out_info.height()) as usize,
                    );
                    let scratch = scaler.scratch();
                    (scaler, scratch)
                })
                .collect();
            *self.planes.lock().expect("bilinear planes lock") = planes;
            Ok(())
        }

        fn transform_frame(
            &self,
            inframe: &gst_video::VideoFrameRef<&gst::BufferRef>,
            outframe: &mut gst_video::VideoFrameRef<&mut gst::BufferRef>,
        ) -> Result<gst::FlowSuccess, gst::FlowError> {
            let mut planes = self.planes.lock().expect("bilinear planes lock");
            if planes.is_empty() {
                return Err(gst::FlowError::NotNegotiated);
            }
            for (plane, (scaler, scratch)) in planes.iter_mut().enumerate() {
                let plane = plane as u32;
                let src_stride = stride(inframe.plane_stride(), plane)?;
                let dst_stride = stride(outframe.plane_stride(), plane)?;
                let src = inframe
                    .plane_data(plane)
                    .map_err(|_| gst::FlowError::Error)?;
                let dst = outframe
                    .plane_data_mut(plane)
                    .map_err(|_| gst::FlowError::Error)?;
                scaler.scale(src, src_stride, dst, dst_stride, scratch, true);
            }
            Ok(gst::FlowSuccess::Ok)
        }
    }

    fn stride(strides: &[i32], plane: u32) -> Result<usize, gst::FlowError> {
        strides
            .get(plane as usize)
            .and_then(|&s| usize::try_from(s).ok())
            .ok_or(gst::FlowError::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gstreamer_app as gst_app;

    /// A deterministic 1280×720 I420 picture: ramps, fine stripes (text's
    /// edges) and noise, in every plane.
    fn source_frame(info: &gst_video::VideoInfo) -> gst::Buffer {
        let mut buffer = gst::Buffer::with_size(info.size()).unwrap();
        {
            let buffer = buffer.get_mut().unwrap();
            buffer.set_pts(gst::ClockTime::ZERO);
            let mut frame =
                gst_video::VideoFrameRef::from_buffer_ref_writable(buffer, info).unwrap();
            let mut state = 0x1234_5678u32;
            for plane in 0..3u32 {
                let stride = frame.plane_stride()[plane as usize] as usize;
                let (w, h) = if plane == 0 { (1280, 720) } else { (640, 360) };
                let data = frame.plane_data_mut(plane).unwrap();
                for y in 0..h {
                    for x in 0..w {
                        state ^= state << 13;
                        state ^= state >> 17;
                        state ^= state << 5;
                        data[y * stride + x] = match (x / 40 + y / 30 + plane as usize) % 3 {
                            0 => (16 + (x + y) * 219 / (w + h)) as u8,
                            1 => [16u8, 235][(x / 2 + y / 3) % 2],
                            _ => (state & 0xff) as u8,
                        };
                    }
                }
            }
        }
        buffer
    }

    /// Runs one frame through `scale` into `width`×`height` I420.
    fn run(scale: gst::Element, width: i32, height: i32) -> (gst_video::VideoInfo, gst::Buffer) {
        crate::encode::init_media_libraries().unwrap();
        let in_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 1280, 720)
            .fps(gst::Fraction::new(25, 1))
            .build()
            .unwrap();
        let pipeline = gst::Pipeline::new();
        let src = gst_app::AppSrc::builder()
            .caps(&in_info.to_caps().unwrap())
            .format(gst::Format::Time)
            .build();
        let filter = gst::ElementFactory::make("capsfilter")
            .property(
                "caps",
                gst_video::VideoCapsBuilder::new()
                    .format(gst_video::VideoFormat::I420)
                    .width(width)
                    .height(height)
                    .pixel_aspect_ratio(gst::Fraction::new(1, 1))
                    .build(),
            )
            .build()
            .unwrap();
        let sink = gst_app::AppSink::builder().sync(false).build();
        let chain = [src.upcast_ref(), &scale, &filter, sink.upcast_ref()];
        pipeline.add_many(chain).unwrap();
        gst::Element::link_many(chain).unwrap();
        pipeline.set_state(gst::State::Playing).unwrap();
        src.push_buffer(source_frame(&in_info)).unwrap();
        src.end_of_stream().unwrap();
        let sample = sink.pull_sample().unwrap();
        pipeline.set_state(gst::State::Null).unwrap();
        let info = gst_video::VideoInfo::from_caps(sample.caps().unwrap()).unwrap();
        (info, sample.buffer_owned().unwrap())
    }

    /// Bilinear at pixel centres in floating point, vertical then
    /// horizontal: what the element computes before its two roundings.
    fn exact(
        src: &[u8],
        stride: usize,
        (iw, ih): (usize, usize),
        (x, y): (usize, usize),
        (ow, oh): (usize, usize),
    ) -> f64 {
        let at = |j: usize, n_in: usize, n_out: usize| {
            ((j as f64 + 0.5) * n_in as f64 / n_out as f64 - 0.5).clamp(0.0, n_in as f64 - 1.0)
        };
        let (fx, fy) = (at(x, iw, ow), at(y, ih, oh));
        let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
        let (x1, y1) = ((x0 + 1).min(iw - 1), (y0 + 1).min(ih - 1));
        let (ax, ay) = (fx - x0 as f64, fy - y0 as f64);
        let p = |x: usize, y: usize| f64::from(src[y * stride + x]);
        let column = |x: usize| p(x, y0) * (1.0 - ay) + p(x, y1) * ay;
        column(x0) * (1.0 - ax) + column(x1) * ax
    }

    /// Every plane of the ladder's sizes within one level of exact
    /// bilinear at pixel centres (the element rounds twice).
    ///
    /// Not compared with `videoscale` itself: its vertical taps are these,
    /// but its 8-bit horizontal pass reads half a source pixel left of the
    /// output pixel's centre (measured on a ramp: output 2 of 1280 → 854
    /// at source 2.75 where the centre maps to 3.25), which shifts every
    /// scaled rung's picture a third of a pixel to the left.
    #[test]
    fn scales_every_plane_at_pixel_centres() {
        crate::encode::init_media_libraries().unwrap();
        let in_info = gst_video::VideoInfo::builder(gst_video::VideoFormat::I420, 1280, 720)
            .build()
            .unwrap();
        let source = source_frame(&in_info);
        let source = gst_video::VideoFrameRef::from_buffer_ref_readable(&source, &in_info).unwrap();
        for (width, height) in [(854, 480), (640, 360), (1024, 576)] {
            let (info, out) = run(Bilinear::new().upcast(), width, height);
            assert_eq!((info.width(), info.height()), (width as u32, height as u32));
            let out = gst_video::VideoFrameRef::from_buffer_ref_readable(&out, &info).unwrap();
            for plane in 0..3u32 {
                let (iw, ih) = if plane == 0 { (1280, 720) } else { (640, 360) };
                let (ow, oh) = if plane == 0 {
                    (width as usize, height as usize)
                } else {
                    ((width as usize).div_ceil(2), (height as usize).div_ceil(2))
                };
                let (src, ss) = (
                    source.plane_data(plane).unwrap(),
                    source.plane_stride()[plane as usize] as usize,
                );
                let (dst, ds) = (
                    out.plane_data(plane).unwrap(),
                    out.plane_stride()[plane as usize] as usize,
                );
                let mut worst = 0.0f64;
                for y in 0..oh {
                    for x in 0..ow {
                        let want = exact(src, ss, (iw, ih), (x, y), (ow, oh));
                        worst = worst.max((f64::from(dst[y * ds + x]) - want).abs());
                    }
                }
                assert!(
                    worst < 1.01,
                    "{width}x{height} plane {plane}: worst {worst:.2}"
                );
            }
        }
    }
}
