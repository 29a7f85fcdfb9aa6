//! The live ladder: the same decode-once tee and rung branches as a file
//! encode, fed by a stream that is still arriving.
//!
//! Inputs: FLV tags pushed by the caller ([`LiveInput::Flv`], what an RTMP
//! publisher sends: the `live` crate's RTMP server hands each audio and
//! video message over) into `appsrc ! flvdemux`, or MPEG-TS from an SRT
//! publisher ([`LiveInput::Srt`], `srtsrc mode=listener`). The SRT socket
//! is the one place this crate listens on the network: GStreamer's SRT
//! element owns the protocol, and the caller decides in the
//! `caller-connecting` callback, before any media is accepted, whether
//! the stream id names a stream it expects ([`Authorise`]).
//!
//! The picture size is only known once the first SPS has been parsed, so
//! the rungs are planned then (never upscaling, from the same profiles and
//! `ladder::plan` as files): the demuxer's H.264 pad goes through
//! `h264parse ! avdec_h264`, and the decoder's first `CAPS` event builds the
//! tee and one branch per rung before any frame passes. H.264 and AAC are
//! the only codecs accepted; anything else fails with `unsupported_codec`
//! and a message naming what was sent.
//!
//! Segments are reported through the [`SegmentObserver`] as they close,
//! exactly as for fast first playback, and with [`PartOptions`] each LL-HLS
//! part before them; [`LiveEncode::finish`] flushes the last ones after the
//! input ended.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::{
    add_chain, audio_chain, classify, init_media_libraries, make, normalize_timeline,
    rendition_sink, video_entry, video_rung_branch, EncodedRendition, FirstError, PartOptions,
    RenditionKind, RenditionSink, ScaledRungs, SegmentObserver, Timeline,
};
use crate::error::{MediaError, MediaErrorCode};
use crate::ladder::{self, LadderPlan, LadderProfile};
use crate::media_info::{AudioStream, MediaInfo, Rational, StreamInfo, VideoStream};

/// Decides whether an SRT caller's stream id may publish; called on
/// GStreamer's SRT thread before any media is read.
pub type Authorise = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Where the live stream comes from.
pub enum LiveInput {
    /// FLV tags handed to [`LiveEncode::push_flv_tag`].
    Flv,
    /// An SRT listener on `port` (all interfaces) for one caller, MPEG-TS inside.
    Srt {
        port: u16,
        /// Required of callers when set (AES, SRT's own encryption).
        passphrase: Option<String>,
        authorise: Authorise,
    },
}

/// How a live encode stands.
#[derive(Debug)]
pub enum LiveStatus {
    Running,
    /// The input ended (the publisher left): call [`LiveEncode::finish`].
    Ended,
    Failed(MediaError),
}

/// Frame rate assumed when the stream does not say (no VUI timing).
const FALLBACK_FPS: Rational = Rational { num: 30, den: 1 };

/// One publishing connection's encode.
pub struct LiveEncode {
    pipeline: gst::Pipeline,
    appsrc: Option<gst_app::AppSrc>,
    sinks: Arc<Mutex<Vec<Arc<RenditionSink>>>>,
    plan: Arc<OnceLock<LadderPlan>>,
    errors: Arc<FirstError>,
    flv_header_sent: bool,
    /// The SRT caller disconnected; EOS is sent once.
    caller_left: Arc<AtomicBool>,
    eos_sent: AtomicBool,
    /// The pipeline's EOS was seen.
    ended: AtomicBool,
}

impl LiveEncode {
    /// Builds and starts the pipeline; renditions are written under
    /// `out_dir` (`v/<rung>/…`, `a/audio/…`) as the profile plans them.
    /// With `parts`, every rendition is muxed in fragments and each is
    /// reported as an LL-HLS part before the segment they make up.
    pub fn start(
        input: LiveInput,
        profile: &LadderProfile,
        out_dir: &Path,
        observer: SegmentObserver,
        parts: Option<PartOptions>,
    ) -> Result<Self, MediaError> {
        init_media_libraries()?;
        std::fs::create_dir_all(out_dir)?;
        let pipeline = gst::Pipeline::new();
        let errors = Arc::new(FirstError::default());
        let caller_left = Arc::new(AtomicBool::new(false));
        let (appsrc, demux) = match input {
            LiveInput::Flv => {
                let src = gst_app::AppSrc::builder()
                    .caps(&gst::Caps::builder("video/x-flv").build())
                    .format(gst::Format::Bytes)
                    .is_live(false)
                    .block(false)
                    .build();
                let demux = make("flvdemux")?;
                add_chain(&pipeline, &[src.clone().upcast(), demux.clone()])?;
                (Some(src), demux)
            }
            LiveInput::Srt {
                port,
                passphrase,
                authorise,
            } => {
                let src = make("srtsrc")?;
                src.set_property("uri", format!("srt://:{port}?mode=listener"));
                if let Some(passphrase) = passphrase {
                    src.set_property("passphrase", passphrase);
                }
                // Without it srtsrc never asks `caller-connecting`.
                src.set_property("authentication", true);
                src.connect("caller-connecting", false, move |values| {
                    let stream_id = values
                        .get(2)
                        .and_then(|v| v.get::<Option<String>>().ok())
                        .flatten()
                        .unwrap_or_default();
                    Some(authorise(&stream_id).to_value())
                });
                // With `authentication` the listener waits for the next
                // caller instead of ending: the caller leaving is the end.
                let left = caller_left.clone();
                src.connect("caller-removed", false, move |_| {
                    left.store(true, Ordering::SeqCst);
                    None
                });
                // SRT's live mode drops what the reader takes too late: a
                // deep queue keeps the socket read on time while encoders
                // catch up (64 MiB is minutes of a lecture's stream).
                let buffer = make("queue")?;
                buffer.set_property("max-size-buffers", 0u32);
                buffer.set_property("max-size-time", 0u64);
                buffer.set_property("max-size-bytes", 64u32 * 1024 * 1024);
                let demux = make("tsdemux")?;
                add_chain(&pipeline, &[src, buffer, demux.clone()])?;
                (None, demux)
            }
        };

        let timeline = Arc::new(Timeline {
            expects_video: true,
            origin_ns: OnceLock::new(),
            fixed_origin_ns: None,
        });
        let sinks: Arc<Mutex<Vec<Arc<RenditionSink>>>> = Arc::default();
        let plan: Arc<OnceLock<LadderPlan>> = Arc::default();
        let build = Arc::new(Builder {
            pipeline: pipeline.downgrade(),
            profile: profile.clone(),
            out_dir: out_dir.to_path_buf(),
            timeline,
            observer,
            parts,
            sinks: sinks.clone(),
            plan: plan.clone(),
            errors: errors.clone(),
        });
        let linked = Mutex::new((false, false));
        demux.connect_pad_added(move |demux, pad| {
            let caps = pad.current_caps().or_else(|| Some(pad.query_caps(None)));
            let structure = caps
                .as_ref()
                .and_then(|c| c.structure(0).map(|s| s.to_owned()));
            let name = structure
                .as_ref()
                .map(|s| s.name().to_string())
                .unwrap_or_default();
            let result = {
                let mut linked = linked.lock().unwrap_or_else(|p| p.into_inner());
                if name == "video/x-h264" && !linked.0 {
                    linked.0 = true;
                    build.video(pad)
                } else if name == "audio/mpeg"
                    && structure
                        .as_ref()
                        .and_then(|s| s.get::<i32>("mpegversion").ok())
                        .is_some_and(|v| v == 4 || v == 2)
                    && !linked.1
                {
                    linked.1 = true;
                    build.audio(pad)
                } else if name.starts_with("video/") || name.starts_with("audio/") {
                    Err(MediaError::new(
                        MediaErrorCode::UnsupportedCodec,
                        format!("the stream carries {name}: publish H.264 video with AAC audio"),
                    ))
                } else {
                    Ok(())
                }
            };
            if let Err(e) = result {
                let message = e.to_string();
                build.errors.record(e);
                gst::element_error!(demux, gst::StreamError::CodecNotFound, ["{}", message]);
            }
        });

        if pipeline.set_state(gst::State::Playing).is_err() {
            let error = pipeline
                .bus()
                .and_then(|bus| bus.pop_filtered(&[gst::MessageType::Error]))
                .and_then(|m| match m.view() {
                    gst::MessageView::Error(err) => Some(classify(err)),
                    _ => None,
                })
                .unwrap_or_else(|| {
                    MediaError::new(MediaErrorCode::Internal, "the live pipeline did not start")
                });
            let _ = pipeline.set_state(gst::State::Null);
            return Err(error);
        }
        Ok(Self {
            pipeline,
            appsrc,
            sinks,
            plan,
            errors,
            flv_header_sent: false,
            caller_left,
            eos_sent: AtomicBool::new(false),
            ended: AtomicBool::new(false),
        })
    }

    /// The ladder planned from the stream, once its first picture is known.
    pub fn plan(&self) -> Option<LadderPlan> {
        self.plan.get().cloned()
    }

    /// Bytes handed over by [`Self::push_flv_tag`] that the encoder has not
    /// taken yet: the caller stops reading its publisher while this is
    /// high, so a stream faster than the encoder cannot fill memory.
    pub fn queued_bytes(&self) -> u64 {
        self.appsrc
            .as_ref()
            .map_or(0, |src| src.current_level_bytes())
    }

    /// Hands one RTMP audio (`tag_type` 8) or video (9) message body over
    /// as an FLV tag; `timestamp_ms` is the message's.
    pub fn push_flv_tag(
        &mut self,
        tag_type: u8,
        timestamp_ms: u32,
        body: &[u8],
    ) -> Result<(), MediaError> {
        let Some(src) = &self.appsrc else {
            return Err(MediaError::new(
                MediaErrorCode::Internal,
                "FLV pushed into an SRT encode",
            ));
        };
        let mut bytes = Vec::with_capacity(body.len() + 28);
        if !self.flv_header_sent {
            // "FLV", version 1, audio and video present, header size 9,
            // then the first PreviousTagSize (0).
            bytes.extend_from_slice(b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00");
            self.flv_header_sent = true;
        }
        let size = body.len() as u32;
        bytes.push(tag_type);
        bytes.extend_from_slice(&size.to_be_bytes()[1..]);
        bytes.extend_from_slice(&timestamp_ms.to_be_bytes()[1..]);
        bytes.push((timestamp_ms >> 24) as u8);
        bytes.extend_from_slice(&[0, 0, 0]);
        bytes.extend_from_slice(body);
        bytes.extend_from_slice(&(size + 11).to_be_bytes());
        src.push_buffer(gst::Buffer::from_mut_slice(bytes))
            .map(|_| ())
            .map_err(|_| self.status_error())
    }

    fn status_error(&self) -> MediaError {
        self.errors.take().unwrap_or_else(|| {
            MediaError::new(MediaErrorCode::Internal, "the live pipeline stopped")
        })
    }

    /// Waits up to `within` for the pipeline to end or fail.
    pub fn poll(&self, within: Duration) -> LiveStatus {
        let Some(bus) = self.pipeline.bus() else {
            return LiveStatus::Failed(MediaError::new(
                MediaErrorCode::Internal,
                "pipeline without a bus",
            ));
        };
        if self.caller_left.load(Ordering::SeqCst) && !self.eos_sent.swap(true, Ordering::SeqCst) {
            self.pipeline.send_event(gst::event::Eos::new());
        }
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(message) =
                bus.timed_pop(gst::ClockTime::from_nseconds(left.as_nanos() as u64))
            else {
                return LiveStatus::Running;
            };

            match message.view() {
                gst::MessageView::Eos(_) => {
                    self.ended.store(true, Ordering::SeqCst);
                    return LiveStatus::Ended;
                }
                gst::MessageView::Error(err) => {
                    return LiveStatus::Failed(self.errors.take().unwrap_or_else(|| classify(err)))
                }
                _ => {}
            }
        }
    }

    /// Ends the input (FLV's, or an SRT caller's still sending: the event
    /// was ended or its key rotated), waits up to `within` for the
    /// encoders to drain, stops the pipeline and flushes every rendition's
    /// last segment. Returns every segment written, per rendition.
    pub fn finish(self, within: Duration) -> Result<Vec<EncodedRendition>, MediaError> {
        if let Some(src) = &self.appsrc {
            let _ = src.end_of_stream();
        } else if !self.eos_sent.swap(true, Ordering::SeqCst) {
            // Without it the drain would wait the whole of `within` for a
            // caller who is not leaving.
            self.pipeline.send_event(gst::event::Eos::new());
        }
        // EOS is posted once: a caller that already saw it must not wait again.
        let status = if self.ended.load(Ordering::SeqCst) {
            LiveStatus::Ended
        } else {
            match self.poll(within) {
                LiveStatus::Running => LiveStatus::Ended,
                other => other,
            }
        };
        let _ = self.pipeline.set_state(gst::State::Null);
        if let LiveStatus::Failed(e) = status {
            return Err(e);
        }
        let sinks = std::mem::take(&mut *self.sinks.lock().unwrap_or_else(|p| p.into_inner()));
        sinks.iter().map(|s| s.finish()).collect()
    }

    /// Stops at once, keeping nothing that was not reported yet.
    pub fn abort(self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

impl Drop for LiveEncode {
    fn drop(&mut self) {
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

/// What the demuxer's pads need to build their branches.
struct Builder {
    pipeline: gst::glib::WeakRef<gst::Pipeline>,
    profile: LadderProfile,
    out_dir: PathBuf,
    timeline: Arc<Timeline>,
    observer: SegmentObserver,
    parts: Option<PartOptions>,
    sinks: Arc<Mutex<Vec<Arc<RenditionSink>>>>,
    plan: Arc<OnceLock<LadderPlan>>,
    errors: Arc<FirstError>,
}

fn sync_new_elements(pipeline: &gst::Pipeline) {
    for element in pipeline.iterate_elements().into_iter().flatten() {
        if element.current_state() == gst::State::Null {
            let _ = element.sync_state_with_parent();
        }
    }
}

impl Builder {
    fn pipeline(&self) -> Result<gst::Pipeline, MediaError> {
        self.pipeline
            .upgrade()
            .ok_or_else(|| MediaError::new(MediaErrorCode::Internal, "the pipeline is gone"))
    }

    fn audio(self: &Arc<Self>, pad: &gst::Pad) -> Result<(), MediaError> {
        let pipeline = self.pipeline()?;
        let Some(audio) = self.audio_rendition() else {
            return Ok(());
        };
        let sink = rendition_sink(
            RenditionKind::Audio,
            &audio.name,
            &self.out_dir,
            self.profile.segment_duration_s,
            None,
            &self.timeline,
            Some(self.observer.clone()),
            self.parts.clone(),
        )?;
        // Live audio cannot be measured ahead: it is encoded as it comes.
        let entry = audio_chain(&pipeline, &audio, 1.0, sink.clone(), self.errors.clone())?;
        let head = [make("queue")?, make("aacparse")?, make("avdec_aac")?];
        add_chain(&pipeline, &head)?;
        head[2]
            .link(&entry)
            .map_err(|_| super::link_error("AAC decoder to the audio chain"))?;
        self.sinks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sink);
        let decoded = head[2].static_pad("src");
        sync_new_elements(&pipeline);
        if let Some(decoded) = decoded {
            normalize_timeline(&decoded);
        }
        let sink_pad = head[0]
            .static_pad("sink")
            .ok_or_else(|| super::link_error("audio queue"))?;
        pad.link(&sink_pad)
            .map(|_| ())
            .map_err(|_| super::link_error("the demuxer's audio"))
    }

    fn audio_rendition(&self) -> Option<crate::ladder::AudioRendition> {
        let info = MediaInfo {
            container: "live".into(),
            container_long_name: "live stream".into(),
            duration_s: 0.0,
            size_bytes: 0,
            bit_rate: None,
            streams: vec![StreamInfo::Audio(AudioStream {
                index: 0,
                codec: "aac".into(),
                profile: None,
                channels: 2,
                channel_layout: "stereo".into(),
                sample_rate: self.profile.audio.sample_rate,
                bit_rate: None,
            })],
        };
        ladder::plan(&info, &self.profile).ok()?.audio
    }

    /// Parses and decodes; the rungs are planned on the decoder's first caps.
    fn video(self: &Arc<Self>, pad: &gst::Pad) -> Result<(), MediaError> {
        let pipeline = self.pipeline()?;
        let head = [make("queue")?, make("h264parse")?, make("avdec_h264")?];
        add_chain(&pipeline, &head)?;
        let decoded = head[2]
            .static_pad("src")
            .ok_or_else(|| super::link_error("H.264 decoder"))?;
        normalize_timeline(&decoded);
        let builder = self.clone();
        decoded.add_probe(gst::PadProbeType::EVENT_DOWNSTREAM, move |pad, info| {
            let Some(gst::PadProbeData::Event(event)) = &info.data else {
                return gst::PadProbeReturn::Ok;
            };
            let gst::EventView::Caps(caps) = event.view() else {
                return gst::PadProbeReturn::Ok;
            };
            let caps = caps.caps_owned();
            if let Err(e) = builder.rungs(pad, &caps) {
                let message = e.to_string();
                builder.errors.record(e);
                if let Some(parent) = pad.parent_element() {
                    gst::element_error!(parent, gst::CoreError::Negotiation, ["{}", message]);
                }
            }
            gst::PadProbeReturn::Remove
        });
        sync_new_elements(&pipeline);
        let sink_pad = head[0]
            .static_pad("sink")
            .ok_or_else(|| super::link_error("video queue"))?;
        pad.link(&sink_pad)
            .map(|_| ())
            .map_err(|_| super::link_error("the demuxer's video"))
    }

    fn rungs(&self, decoded: &gst::Pad, caps: &gst::Caps) -> Result<(), MediaError> {
        let pipeline = self.pipeline()?;
        let s = caps
            .structure(0)
            .ok_or_else(|| MediaError::new(MediaErrorCode::CorruptMedia, "empty video caps"))?;
        let width = s.get::<i32>("width").unwrap_or(0).max(0) as u32;
        let height = s.get::<i32>("height").unwrap_or(0).max(0) as u32;
        let frame_rate = s
            .get::<gst::Fraction>("framerate")
            .ok()
            .filter(|f| f.numer() > 0 && f.denom() > 0)
            .map_or(FALLBACK_FPS, |f| Rational {
                num: f.numer(),
                den: f.denom(),
            });
        let streams = vec![
            StreamInfo::Video(VideoStream {
                index: 0,
                codec: "h264".into(),
                profile: None,
                width,
                height,
                sample_aspect: Rational { num: 1, den: 1 },
                display_aspect: Rational {
                    num: width as i32,
                    den: height.max(1) as i32,
                },
                rotation_deg: 0,
                frame_rate,
                variable_frame_rate: false,
                pixel_format: "yuv420p".into(),
                bit_depth: 8,
                color_transfer: None,
                color_matrix: None,
                hdr: false,
                bit_rate: None,
                duration_s: None,
            }),
            // The audio rendition is planned whether or not audio arrives: the
            // caller lists only renditions that have segments.
            StreamInfo::Audio(AudioStream {
                index: 1,
                codec: "aac".into(),
                profile: None,
                channels: 2,
                channel_layout: "stereo".into(),
                sample_rate: self.profile.audio.sample_rate,
                bit_rate: None,
            }),
        ];
        let info = MediaInfo {
            container: "live".into(),
            container_long_name: "live stream".into(),
            duration_s: 0.0,
            size_bytes: 0,
            bit_rate: None,
            streams,
        };
        let plan = ladder::plan(&info, &self.profile)?;
        let top = plan
            .video
            .first()
            .ok_or_else(|| super::link_error("a live plan without video"))?;
        // What a publisher tagged is unknown until it decodes: convert to
        // the plan's colorimetry if it differs rather than re-tag.
        // A publisher's stream may carry an orientation tag mid-stream.
        let (entry, tee) = video_entry(&pipeline, top, false, true)?;
        let mut scaled = ScaledRungs::for_ladder(&plan.video, width.min(height));
        for (i, rung) in plan.video.iter().enumerate() {
            let fps = rung.frame_rate.as_f64().max(1.0);
            // Cut at every keyframe: half a frame under the keyframe period.
            let segment_time = (f64::from(rung.keyframe_interval_frames) - 0.5) / fps;
            let sink = rendition_sink(
                RenditionKind::Video,
                &rung.name,
                &self.out_dir,
                segment_time,
                Some(rung.frame_rate),
                &self.timeline,
                Some(self.observer.clone()),
                self.parts.clone(),
            )?;
            video_rung_branch(
                &pipeline,
                &tee,
                &mut scaled,
                i,
                rung,
                sink.clone(),
                self.errors.clone(),
            )?;
            self.sinks
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(i, sink);
        }
        // A live stream's first frame is rarely at running time zero (an
        // MPEG-TS publisher starts its clock ahead); videorate would fill
        // the gap with copies of the first frame, media nobody published.
        for element in pipeline.iterate_elements().into_iter().flatten() {
            if element.factory().is_some_and(|f| f.name() == "videorate") {
                element.set_property("skip-to-first", true);
            }
        }
        let _ = self.plan.set(plan);
        sync_new_elements(&pipeline);
        let entry_pad = entry
            .static_pad("sink")
            .ok_or_else(|| super::link_error("video entry"))?;
        decoded
            .link(&entry_pad)
            .map(|_| ())
            .map_err(|_| super::link_error("the decoder to the rungs"))
    }
}
