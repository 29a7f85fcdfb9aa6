//! A rendition muxed into fMP4 fragments the caller cuts, in memory: the
//! LL-HLS partial segments of a live encode.
//!
//! libavformat's `hls` muxer ([`super::hls_mux`]) keeps a segment in
//! memory and writes it whole, so it cannot hand out parts. This writer
//! is libavformat's `mp4` muxer with `frag_custom` (a fragment, `moof` +
//! `mdat`, leaves only when the caller flushes), `empty_moov` (the init
//! segment, `ftyp` + `moov`, is written by the header, before any sample)
//! and `default_base_moof` (every fragment's offsets are relative to its
//! own `moof`, so a fragment is valid wherever it is stored), writing
//! through a custom AVIO context into a `Vec`: each [`PartMuxer::cut`]
//! returns the bytes of one fragment. A part is one fragment, and a full
//! segment is the concatenation of its parts, so no byte is muxed twice
//! and the segment a standard HLS client (or the replay) fetches is
//! byte-for-byte the parts an LL-HLS client fetched.
//!
//! Times are absolute, as in a chunked encode's parts (`frag_discont`,
//! no edit list): every fragment's `tfdt` is its first packet's decode
//! time on the encode's shared timeline, so audio and video parts line up
//! without an edit list (an empty `moov` could not carry one anyway).

use std::ffi::{c_int, c_void, CString};

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;

use super::hls_mux::{add_stream, codec_parameters, stream_packet, StreamParams};
use crate::error::{MediaError, MediaErrorCode};

/// AVIO's own buffer; libavformat copies into it and calls back when full.
const AVIO_BUFFER: usize = 32 * 1024;

fn error(what: &str, e: impl std::fmt::Display) -> MediaError {
    MediaError::new(MediaErrorCode::Internal, format!("{what}: {e}"))
}

/// The AVIO write callback: appends to the `Vec` behind `opaque`.
///
/// # Safety
/// `opaque` is the `Box<Vec<u8>>` [`PartMuxer`] owns for as long as the
/// AVIO context lives, and libavformat calls this from the thread that
/// holds the muxer (under the sink's mutex).
unsafe extern "C" fn append(opaque: *mut c_void, buf: *mut u8, size: c_int) -> c_int {
    if size <= 0 {
        return 0;
    }
    let out = &mut *(opaque as *mut Vec<u8>);
    out.extend_from_slice(std::slice::from_raw_parts(buf, size as usize));
    size
}

pub(crate) struct PartMuxer {
    output: ffmpeg::format::context::Output,
    avio: *mut ffi::AVIOContext,
    /// What the muxer wrote since the last cut. Boxed: the AVIO context
    /// holds the `Vec`'s own address, which must not move with the muxer.
    #[allow(clippy::box_collection)]
    written: Box<Vec<u8>>,
    time_base: ffmpeg::Rational,
    /// `ftyp` + `moov`, written by the header.
    init: Vec<u8>,
}

// SAFETY: the raw AVIO pointer and the buffer it writes into are owned by
// this value alone and only used through `&mut self`; the sink moves the
// muxer between GStreamer streaming threads but never shares it.
unsafe impl Send for PartMuxer {}

impl PartMuxer {
    pub(crate) fn open(params: StreamParams, codec_config: &[u8]) -> Result<Self, MediaError> {
        let mut written: Box<Vec<u8>> = Box::default();
        let format = CString::new("mp4").expect("no NUL");
        // SAFETY: plain libavformat allocation; every pointer is checked,
        // and on failure what was allocated is released before returning.
        // The context is handed to ffmpeg-next's `Output`, whose destructor
        // closes `pb` (null by then, see Drop) and frees the context.
        let (output, avio) = unsafe {
            let mut ctx: *mut ffi::AVFormatContext = std::ptr::null_mut();
            let ret = ffi::avformat_alloc_output_context2(
                &mut ctx,
                std::ptr::null_mut(),
                format.as_ptr(),
                std::ptr::null(),
            );
            if ret < 0 || ctx.is_null() {
                return Err(error("opening the mp4 muxer", ffmpeg::Error::from(ret)));
            }
            let buffer = ffi::av_malloc(AVIO_BUFFER) as *mut u8;
            if buffer.is_null() {
                ffi::avformat_free_context(ctx);
                return Err(error("allocating the AVIO buffer", "out of memory"));
            }
            let avio = ffi::avio_alloc_context(
                buffer,
                AVIO_BUFFER as c_int,
                1,
                written.as_mut() as *mut Vec<u8> as *mut c_void,
                None,
                Some(append),
                None,
            );
            if avio.is_null() {
                ffi::av_free(buffer as *mut c_void);
                ffi::avformat_free_context(ctx);
                return Err(error("allocating the AVIO context", "out of memory"));
            }
            (*ctx).pb = avio;
            (*ctx).flags |= ffi::AVFMT_FLAG_CUSTOM_IO;
            (ffmpeg::format::context::Output::wrap(ctx), avio)
        };
        let mut muxer = Self {
            output,
            avio,
            written,
            time_base: ffmpeg::Rational::new(1, 90_000),
            init: Vec::new(),
        };
        let codecpar = codec_parameters(params, codec_config)?;
        add_stream(&mut muxer.output, params, codecpar).map_err(|e| error("adding a stream", e))?;
        let mut options = ffmpeg::Dictionary::new();
        options.set(
            "movflags",
            "+frag_custom+empty_moov+default_base_moof+frag_discont+skip_trailer+skip_sidx",
        );
        options.set("use_editlist", "0");
        options.set("avoid_negative_ts", "disabled");
        muxer
            .output
            .write_header_with(options)
            .map_err(|e| error("writing the mp4 header", e))?;
        muxer.time_base = muxer
            .output
            .stream(0)
            .map(|s| s.time_base())
            .ok_or_else(|| error("the mp4 muxer", "lost its stream"))?;
        muxer.flush_io();
        muxer.init = std::mem::take(muxer.written.as_mut());
        if muxer.init.is_empty() {
            return Err(error("the mp4 muxer", "wrote no init segment"));
        }
        Ok(muxer)
    }

    /// The init segment (`ftyp` + `moov`) every part plays with.
    pub(crate) fn init(&self) -> &[u8] {
        &self.init
    }

    fn flush_io(&mut self) {
        // SAFETY: `avio` is live until Drop.
        unsafe { ffi::avio_flush(self.avio) };
    }

    /// Adds one packet to the open fragment (times in ns on the shared timeline).
    pub(crate) fn write(
        &mut self,
        pts_ns: i64,
        dts_ns: i64,
        duration_ns: Option<i64>,
        keyframe: bool,
        data: &[u8],
    ) -> Result<(), MediaError> {
        let packet = stream_packet(self.time_base, pts_ns, dts_ns, duration_ns, keyframe, data);
        // One stream: nothing to interleave, and an interleaving queue
        // could hold a packet back past the next cut.
        packet
            .write(&mut self.output)
            .map(|_| ())
            .map_err(|e| error(&format!("writing the packet at dts {dts_ns} ns"), e))
    }

    /// Closes the open fragment and returns its bytes (`moof` + `mdat`);
    /// empty when no packet was written since the last cut.
    pub(crate) fn cut(&mut self) -> Result<Vec<u8>, MediaError> {
        // SAFETY: a null packet asks a `frag_custom` mov muxer to flush
        // its fragment; the context is live.
        let ret = unsafe { ffi::av_write_frame(self.output.as_mut_ptr(), std::ptr::null_mut()) };
        if ret < 0 {
            return Err(error("cutting a fragment", ffmpeg::Error::from(ret)));
        }
        self.flush_io();
        Ok(std::mem::take(self.written.as_mut()))
    }

    /// Cuts the last fragment and ends the muxer; returns that fragment.
    pub(crate) fn finish(&mut self) -> Result<Vec<u8>, MediaError> {
        let last = self.cut()?;
        self.output
            .write_trailer()
            .map_err(|e| error("finishing the mp4 output", e))?;
        // `skip_trailer`: nothing should follow, and nothing that did
        // would belong to a part.
        Ok(last)
    }
}

impl Drop for PartMuxer {
    fn drop(&mut self) {
        // SAFETY: the AVIO context was allocated in `open` and is freed
        // once here, with the buffer libavformat may have reallocated;
        // `pb` is cleared first so `Output`'s destructor (which runs after
        // this) does not treat it as a file it opened.
        unsafe {
            (*self.output.as_mut_ptr()).pb = std::ptr::null_mut();
            ffi::av_freep(&mut (*self.avio).buffer as *mut *mut u8 as *mut c_void);
            ffi::avio_context_free(&mut self.avio);
        }
    }
}
