//! The loudness pass: before the ladder encodes, the source's audio alone
//! is decoded and measured ([`crate::loudness::LoudnessMeter`]), so the
//! audio branch can apply one gain from its first sample.
//!
//! The pass decodes no video: decodebin3's `select-stream` signal selects
//! the first audio stream alone (checked with `GST_DEBUG=decodebin3:5`: a
//! single slot, for audio), so other streams are demuxed and dropped,
//! never decoded. The audio goes through the very conversion the
//! encode uses (`audioconvert ! audioresample` to the rendition's channels
//! and rate), so what is measured is what the AAC encoder will be given —
//! a mono source duplicated into stereo is measured as that stereo.
//!
//! One pass can measure several layouts (a tee, one conversion and meter
//! per layout): a title whose rendition is stereo or mono depending on
//! what the content analysis finds is measured both ways while the
//! analysis runs, instead of after it.

use std::path::Path;
use std::sync::{Arc, Mutex};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::{add_chain, capsfilter, drain_into_fakesink, make, make_appsink, run, CancelFlag};
use super::{link_error, FirstError};
use crate::error::{MediaError, MediaErrorCode};
use crate::ladder::AudioLayout;
use crate::loudness::{LoudnessMeasurement, LoudnessMeter};

/// Measures the audio of `source` once per layout in `layouts`, as a
/// rendition of that layout will carry it; the measurements come back in
/// the same order. One decode serves them all.
pub fn measure_audio(
    source: &Path,
    layouts: &[AudioLayout],
    duration_s: f64,
    cancel: &CancelFlag,
) -> Result<Vec<LoudnessMeasurement>, MediaError> {
    if layouts.is_empty() {
        return Ok(Vec::new());
    }
    super::init_media_libraries()?;
    let pipeline = gst::Pipeline::new();
    let errors = Arc::new(FirstError::default());
    let filesrc = make("filesrc")?;
    filesrc.set_property("location", source.to_string_lossy().to_string());
    let decodebin = make("decodebin3")?;
    // 1 selects, 0 refuses. Every stream must get an explicit answer:
    // one "decide yourself" (-1) makes decodebin3 add the first stream of
    // every type, video included. The one selected is the collection's
    // first audio stream, which is what decodebin3 picks for the encode.
    decodebin.connect("select-stream", false, |values| {
        let collection = values
            .get(1)
            .and_then(|v| v.get::<gst::StreamCollection>().ok());
        let stream = values.get(2).and_then(|v| v.get::<gst::Stream>().ok());
        let first_audio = collection.as_ref().and_then(|c| {
            c.iter()
                .find(|s| s.stream_type().contains(gst::StreamType::AUDIO))
                .and_then(|s| s.stream_id())
        });
        let selected = stream
            .and_then(|s| s.stream_id())
            .is_some_and(|id| Some(&id) == first_audio.as_ref());
        Some(i32::from(selected).to_value())
    });
    add_chain(&pipeline, &[filesrc, decodebin.clone()])?;

    let mut meters = Vec::with_capacity(layouts.len());
    let mut branches = Vec::with_capacity(layouts.len());
    for layout in layouts {
        let meter = Arc::new(Mutex::new(LoudnessMeter::new(
            usize::from(layout.channels),
            layout.sample_rate,
        )));
        let chain = layout_branch(layout, meter.clone(), errors.clone())?;
        add_chain(&pipeline, &chain)?;
        branches.push(chain[0].clone());
        meters.push(meter);
    }
    // One layout needs no tee; several share the decoded audio.
    let first = if let [only] = branches.as_slice() {
        only.clone()
    } else {
        let tee = make("tee")?;
        pipeline
            .add(&tee)
            .map_err(|_| link_error("tee (loudness)"))?;
        for branch in &branches {
            tee.link(branch)
                .map_err(|_| link_error("tee ! queue (loudness)"))?;
        }
        tee
    };
    let entry = Mutex::new(Some(first));
    let pad_errors = errors.clone();
    decodebin.connect_pad_added(move |dbin, pad| {
        let name = pad.name();
        let target = if name.starts_with("audio") {
            entry.lock().unwrap_or_else(|p| p.into_inner()).take()
        } else {
            None
        };
        let linked = match target {
            Some(entry) => entry
                .static_pad("sink")
                .is_some_and(|sink| pad.link(&sink).is_ok()),
            None => drain_into_fakesink(dbin, pad),
        };
        if !linked {
            pad_errors.record(link_error(&format!("decodebin3 pad {name} (loudness)")));
            gst::element_error!(
                dbin,
                gst::CoreError::Negotiation,
                ["cannot link pad {}", name]
            );
        }
    });

    let result = run(&pipeline, duration_s, &|_| {}, cancel, &errors);
    let _ = pipeline.set_state(gst::State::Null);
    result?;
    Ok(meters
        .iter()
        .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()).finish())
        .collect())
}

/// queue → audioconvert → audioresample → the layout's caps → a meter.
fn layout_branch(
    layout: &AudioLayout,
    meter: Arc<Mutex<LoudnessMeter>>,
    errors: Arc<FirstError>,
) -> Result<Vec<gst::Element>, MediaError> {
    let caps = gst::Caps::builder("audio/x-raw")
        .field("format", "F32LE")
        .field("layout", "interleaved")
        .field("channels", i32::from(layout.channels))
        .field("rate", layout.sample_rate as i32)
        .build();
    let appsink = make_appsink(
        caps.clone(),
        move |sample| {
            let buffer = sample.buffer().ok_or_else(|| {
                MediaError::new(MediaErrorCode::Internal, "loudness: sample without buffer")
            })?;
            let map = buffer.map_readable().map_err(|_| {
                MediaError::new(MediaErrorCode::Internal, "loudness: cannot map a buffer")
            })?;
            let samples: Vec<f32> = map
                .as_slice()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            meter
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(&samples);
            Ok(())
        },
        errors,
    );
    Ok(vec![
        make("queue")?,
        make("audioconvert")?,
        make("audioresample")?,
        capsfilter(caps)?,
        appsink,
    ])
}
