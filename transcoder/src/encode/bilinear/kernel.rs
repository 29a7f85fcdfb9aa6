//! Two-tap (bilinear) resampling of one 8-bit plane, vertical pass first,
//! then horizontal, with AVX2 where the CPU has it.
//!
//! The taps are `videoscale method=bilinear`'s: output pixel `j` reads the
//! source at `x = (j + ½)·in/out − ½` (clamped to the picture), the pixels
//! either side of `x` weighted by their distance. Weights are Q15
//! fractions and a blend is `l + round((r − l)·f)`, which is what
//! `_mm256_mulhrs_epi16` computes; the scalar and the AVX2 paths therefore
//! give the same bytes, and the scalar path is the tests' reference.
//!
//! Why the vertical pass first: it is a blend of two whole rows (cheap,
//! contiguous), and it leaves the horizontal pass — the one that gathers —
//! with the output's rows only (480 instead of 720 for 720p → 480p).

/// A blend weight of 1.0 in Q15; never reached (the last source pixel is
/// read with weight 0 on its right-hand neighbour instead).
const ONE: f64 = 32768.0;

/// Outputs per horizontal block: eight 16-bit lanes, one 128-bit lane of
/// an AVX2 register, whose source pixels must lie within 16 bytes.
const BLOCK: usize = 8;

/// Bytes readable past a row's last pixel in the scratch rows: a block's
/// 16-byte load may start at the last pixel, a right-hand tap of weight 0
/// may point one past it, and the exact-half path reads 64 bytes for every
/// 32 outputs.
const PAD: usize = 64;

/// The Q15 weight of an exact half: `l + round((r − l)/2)`, which is
/// `(l + r + 1) >> 1`, the AVX2 byte and word averages.
const HALF: i16 = 16384;

/// Per output pixel (or row): the left (upper) source index and the
/// right-hand (lower) neighbour's weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Taps {
    index: Vec<usize>,
    frac: Vec<i16>,
}

impl Taps {
    pub(crate) fn new(in_size: usize, out_size: usize) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let last = in_size.saturating_sub(1) as f64;
        let (index, frac) = (0..out_size)
            .map(|j| {
                let x = ((j as f64 + 0.5) * scale - 0.5).clamp(0.0, last);
                let i = x.floor();
                let f = ((x - i) * ONE).round().min(ONE - 1.0);
                (i as usize, f as i16)
            })
            .unzip();
        Self { index, frac }
    }
}

#[inline(always)]
fn blend(l: u8, r: u8, f: i16) -> u8 {
    let d = i32::from(r) - i32::from(l);
    (i32::from(l) + ((d * i32::from(f) + 0x4000) >> 15)) as u8
}

/// The horizontal taps regrouped in blocks of eight outputs for `pshufb`:
/// per block, the source index the block's 16-byte load starts at, and the
/// byte positions within it of each output's left and right pixel
/// (zero-extended to 16 bits by the `0x80` bytes). Blocks are padded to
/// an even count (two per AVX2 register); padding outputs read byte 0
/// with weight 0.
struct Blocks {
    base: Vec<usize>,
    left: Vec<[u8; 16]>,
    right: Vec<[u8; 16]>,
    frac: Vec<i16>,
}

impl Blocks {
    /// `None` when some block's pixels span more than 16 source bytes
    /// (shrinking by more than about 2×): the scalar path serves those.
    fn new(taps: &Taps) -> Option<Self> {
        let n = taps.index.len().div_ceil(BLOCK).next_multiple_of(2);
        let mut blocks = Self {
            base: Vec::with_capacity(n),
            left: Vec::with_capacity(n),
            right: Vec::with_capacity(n),
            frac: vec![0; n * BLOCK],
        };
        for b in 0..n {
            let outputs = (b * BLOCK..(b + 1) * BLOCK).filter(|&j| j < taps.index.len());
            let base = taps.index.get(b * BLOCK).copied().unwrap_or(0);
            let (mut left, mut right) = ([0x80u8; 16], [0x80u8; 16]);
            for (k, j) in outputs.enumerate() {
                let at = taps.index[j] - base;
                if at + 1 >= 16 {
                    return None;
                }
                left[2 * k] = at as u8;
                right[2 * k] = (at + 1) as u8;
                blocks.frac[b * BLOCK + k] = taps.frac[j];
            }
            // Padding lanes: byte 0 with weight 0 gives a value that is
            // never stored.
            blocks.base.push(base);
            blocks.left.push(left);
            blocks.right.push(right);
        }
        Some(blocks)
    }
}

/// Scratch rows for one plane's scale, kept between frames.
pub(crate) struct Scratch {
    /// One source row after the vertical pass, padded.
    row: CacheAligned,
    /// One output row before it is copied into the frame, padded.
    out: CacheAligned,
}

/// Zeroed bytes starting on a cache-line boundary. The vector loops store
/// 32 bytes at a time into these rows; from the allocator's 16-byte
/// alignment half of those stores straddle two lines, which made the
/// vertical pass a third slower in one allocation than in another.
struct CacheAligned {
    bytes: Vec<u8>,
    at: usize,
    len: usize,
}

impl CacheAligned {
    fn new(len: usize) -> Self {
        let bytes = vec![0; len + 63];
        // The vector is never resized, so its buffer (and `at`) stays put.
        let at = bytes.as_ptr().align_offset(64).min(63);
        Self { bytes, at, len }
    }
}

impl std::ops::Deref for CacheAligned {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes[self.at..self.at + self.len]
    }
}

impl std::ops::DerefMut for CacheAligned {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[self.at..self.at + self.len]
    }
}

/// The resampling of one plane from one size to another.
pub(crate) struct PlaneScaler {
    in_w: usize,
    in_h: usize,
    out_w: usize,
    out_h: usize,
    columns: Taps,
    rows: Taps,
    blocks: Option<Blocks>,
    /// Exactly half as wide: output `j` averages source pixels `2j` and
    /// `2j + 1`, done 32 at a time without shuffles.
    half_width: bool,
}

impl PlaneScaler {
    pub(crate) fn new(in_w: usize, in_h: usize, out_w: usize, out_h: usize) -> Self {
        let columns = Taps::new(in_w, out_w);
        let blocks = Blocks::new(&columns);
        Self {
            in_w,
            in_h,
            out_w,
            out_h,
            rows: Taps::new(in_h, out_h),
            half_width: in_w == 2 * out_w,
            columns,
            blocks,
        }
    }

    pub(crate) fn scratch(&self) -> Scratch {
        let out = self
            .blocks
            .as_ref()
            .map_or(self.out_w, |b| b.base.len() * BLOCK)
            .max(self.out_w.next_multiple_of(32));
        Scratch {
            row: CacheAligned::new(self.in_w + PAD),
            out: CacheAligned::new(out + PAD),
        }
    }

    /// Scales `src` (rows `src_stride` apart) into `dst`. Panics if either
    /// slice is too short for its picture, before touching a pixel.
    pub(crate) fn scale(
        &self,
        src: &[u8],
        src_stride: usize,
        dst: &mut [u8],
        dst_stride: usize,
        scratch: &mut Scratch,
        simd: bool,
    ) {
        if self.out_w == 0 || self.out_h == 0 || self.in_w == 0 || self.in_h == 0 {
            return;
        }
        assert!(src_stride >= self.in_w && dst_stride >= self.out_w);
        assert!(src.len() >= (self.in_h - 1) * src_stride + self.in_w);
        assert!(dst.len() >= (self.out_h - 1) * dst_stride + self.out_w);
        assert!(scratch.row.len() >= self.in_w + PAD);
        let avx2 = simd && avx2_available();
        for y in 0..self.out_h {
            let (i, f) = (self.rows.index[y], self.rows.frac[y]);
            if avx2 {
                // The decoded frame is usually out of cache by the time a
                // rung scales it (two cores, a dozen encoder threads):
                // ask for the rows two output rows ahead.
                if let Some(&next) = self.rows.index.get(y + 2) {
                    prefetch(&src[next * src_stride..next * src_stride + self.in_w]);
                    if next + 1 < self.in_h {
                        let lower = (next + 1) * src_stride;
                        prefetch(&src[lower..lower + self.in_w]);
                    }
                }
            }
            let upper = &src[i * src_stride..i * src_stride + self.in_w];
            let row = &mut scratch.row[..self.in_w];
            if f == 0 {
                row.copy_from_slice(upper);
            } else {
                let lower = &src[(i + 1) * src_stride..(i + 1) * src_stride + self.in_w];
                vertical(upper, lower, f, row, avx2);
            }
            let start = y * dst_stride;
            // The vector paths store whole blocks, up to `padded` bytes:
            // straight into the frame where it has room (the bytes past
            // the row's end land in the next row, written after this one,
            // or in the stride's padding), else through `scratch.out`.
            let padded = match (&self.blocks, avx2) {
                (_, true) if self.half_width => self.out_w.next_multiple_of(32),
                (Some(blocks), true) => blocks.base.len() * BLOCK,
                _ => {
                    let out = &mut dst[start..start + self.out_w];
                    horizontal_scalar(&scratch.row, &self.columns, out);
                    continue;
                }
            };
            assert!(scratch.out.len() >= padded);
            let direct = dst.len() >= start + padded;
            let out = if direct {
                &mut dst[start..start + padded]
            } else {
                &mut scratch.out[..padded]
            };
            if self.half_width {
                assert!(scratch.row.len() >= 2 * padded);
                // SAFETY: AVX2 is present; the loads stay within `row`
                // (2 × `padded`, asserted) and the stores within `out`
                // (`padded` long).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    half_width_avx2(&scratch.row, self.out_w, out)
                };
            } else if let Some(blocks) = &self.blocks {
                // SAFETY: AVX2 is present; every block's load starts at an
                // index of `row` below `in_w` and reads 16 bytes, within
                // `row`'s `PAD` (asserted above); the stores fill `out`,
                // `blocks × 8` long.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    horizontal_avx2(&scratch.row, blocks, out)
                };
            }
            if !direct {
                dst[start..start + self.out_w].copy_from_slice(&scratch.out[..self.out_w]);
            }
        }
    }
}

fn horizontal_scalar(row: &[u8], taps: &Taps, out: &mut [u8]) {
    for ((o, &i), &f) in out.iter_mut().zip(&taps.index).zip(&taps.frac) {
        // The right-hand pixel of the last column is padding, weight 0.
        *o = blend(row[i], row[i + 1], f);
    }
}

fn vertical(upper: &[u8], lower: &[u8], f: i16, out: &mut [u8], avx2: bool) {
    let done = if avx2 {
        // SAFETY: AVX2 is present; the function reads and writes whole
        // 32-byte chunks within the three slices' common length only.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            vertical_avx2(upper, lower, f, out)
        }
        #[cfg(not(target_arch = "x86_64"))]
        0
    } else {
        0
    };
    for ((o, &l), &r) in out[done..]
        .iter_mut()
        .zip(&upper[done..])
        .zip(&lower[done..])
    {
        *o = blend(l, r, f);
    }
}

/// Hints the CPU to bring `bytes` into cache.
fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for line in bytes.chunks(64) {
        // SAFETY: a prefetch reads nothing architecturally; the address is
        // within `bytes`.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
        }
    }
}

/// Whether this CPU runs the AVX2 path (checked once).
pub(crate) fn avx2_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Blends whole 32-byte chunks; returns how many bytes it did.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_avx2(upper: &[u8], lower: &[u8], f: i16, out: &mut [u8]) -> usize {
    use std::arch::x86_64::*;
    let n = upper.len().min(lower.len()).min(out.len()) / 32 * 32;
    let zero = _mm256_setzero_si256();
    let weight = _mm256_set1_epi16(f);
    let mut at = 0;
    while at < n {
        let a = _mm256_loadu_si256(upper.as_ptr().add(at).cast());
        let b = _mm256_loadu_si256(lower.as_ptr().add(at).cast());
        if f == HALF {
            _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), _mm256_avg_epu8(a, b));
            at += 32;
            continue;
        }
        // Unpacking and packing are both per 128-bit lane, so the bytes
        // come back in their order.
        let (al, ah) = (_mm256_unpacklo_epi8(a, zero), _mm256_unpackhi_epi8(a, zero));
        let (bl, bh) = (_mm256_unpacklo_epi8(b, zero), _mm256_unpackhi_epi8(b, zero));
        let lo = _mm256_add_epi16(al, _mm256_mulhrs_epi16(_mm256_sub_epi16(bl, al), weight));
        let hi = _mm256_add_epi16(ah, _mm256_mulhrs_epi16(_mm256_sub_epi16(bh, ah), weight));
        _mm256_storeu_si256(out.as_mut_ptr().add(at).cast(), _mm256_packus_epi16(lo, hi));
        at += 32;
    }
    n
}

/// Sixteen outputs per iteration: two blocks, one per 128-bit lane, each
/// a 16-byte load of `row` shuffled into its outputs' left and right
/// pixels.
///
/// # Safety
/// AVX2 must be present; `row` must be readable 16 bytes past every
/// block's base, and `out` at least `blocks × 8` bytes long.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(row: &[u8], blocks: &Blocks, out: &mut [u8]) {
    use std::arch::x86_64::*;
    debug_assert!(out.len() >= blocks.base.len() * BLOCK);
    for pair in 0..blocks.base.len() / 2 {
        let (b0, b1) = (2 * pair, 2 * pair + 1);
        debug_assert!(blocks.base[b1] + 16 <= row.len() && blocks.base[b0] + 16 <= row.len());
        let src = _mm256_loadu2_m128i(
            row.as_ptr().add(blocks.base[b1]).cast(),
            row.as_ptr().add(blocks.base[b0]).cast(),
        );
        let left_mask = _mm256_loadu_si256(blocks.left.as_ptr().add(b0).cast());
        let right_mask = _mm256_loadu_si256(blocks.right.as_ptr().add(b0).cast());
        let frac = _mm256_loadu_si256(blocks.frac.as_ptr().add(b0 * BLOCK).cast());
        let l = _mm256_shuffle_epi8(src, left_mask);
        let r = _mm256_shuffle_epi8(src, right_mask);
        let v = _mm256_add_epi16(l, _mm256_mulhrs_epi16(_mm256_sub_epi16(r, l), frac));
        // Each lane's eight bytes are its low quadword; gather quadwords 0
        // and 2 into the low 128 bits.
        let packed = _mm256_permute4x64_epi64::<0b1000>(_mm256_packus_epi16(v, v));
        _mm_storeu_si128(
            out.as_mut_ptr().add(b0 * BLOCK).cast(),
            _mm256_castsi256_si128(packed),
        );
    }
}

/// Thirty-two outputs per iteration, each the average of a source pair.
///
/// # Safety
/// AVX2 must be present; `row` must hold `2 × out_w` rounded up to 64
/// bytes, and `out` `out_w` rounded up to 32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn half_width_avx2(row: &[u8], out_w: usize, out: &mut [u8]) {
    use std::arch::x86_64::*;
    let low_bytes = _mm256_set1_epi16(0x00ff);
    let mut at = 0;
    while at < out_w {
        let a = _mm256_loadu_si256(row.as_ptr().add(2 * at).cast());
        let b = _mm256_loadu_si256(row.as_ptr().add(2 * at + 32).cast());
        let pairs = |v: __m256i| {
            _mm256_avg_epu16(_mm256_and_si256(v, low_bytes), _mm256_srli_epi16::<8>(v))
        };
        // Packing interleaves the two registers per 128-bit lane;
        // quadwords 0, 2, 1, 3 restore the order.
        let packed = _mm256_packus_epi16(pairs(a), pairs(b));
        _mm256_storeu_si256(
            out.as_mut_ptr().add(at).cast(),
            _mm256_permute4x64_epi64::<0b11_01_10_00>(packed),
        );
        at += 32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deterministic picture with edges, ramps and noise.
    fn picture(w: usize, h: usize, stride: usize, seed: u32) -> Vec<u8> {
        let mut state = seed.wrapping_mul(2_654_435_761).max(1);
        let mut data = vec![0u8; (h - 1) * stride + w];
        for y in 0..h {
            for x in 0..w {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                let v = match (x / 7 + y / 5) % 3 {
                    0 => (x * 255 / w.max(1)) as u32,
                    1 => {
                        if (x + y) % 2 == 0 {
                            16
                        } else {
                            235
                        }
                    }
                    _ => state & 0xff,
                };
                data[y * stride + x] = v as u8;
            }
        }
        data
    }

    /// The scaled picture's rows, without the stride's padding (which the
    /// vector paths may fill with anything).
    fn scale(s: &PlaneScaler, src: &[u8], stride: usize, simd: bool) -> Vec<u8> {
        let dst_stride = s.out_w + 3;
        let mut dst = vec![0xAB; (s.out_h - 1) * dst_stride + s.out_w];
        s.scale(src, stride, &mut dst, dst_stride, &mut s.scratch(), simd);
        dst.chunks(dst_stride)
            .flat_map(|row| &row[..s.out_w])
            .copied()
            .collect()
    }

    #[test]
    fn simd_and_scalar_give_the_same_bytes() {
        if !avx2_available() {
            eprintln!("no AVX2 here: only the scalar path runs");
            return;
        }
        let sizes = [
            (1280, 720, 854, 480),
            (640, 360, 427, 240),
            (1280, 720, 640, 360),
            (1920, 1080, 1280, 720),
            (1920, 1080, 960, 540),
            (33, 17, 31, 9),
            (100, 50, 51, 26),
            (640, 360, 1280, 720),
            (7, 3, 5, 2),
            (854, 480, 427, 240),
            (70, 10, 35, 5),
            (1, 1, 1, 1),
        ];
        for (seed, &(iw, ih, ow, oh)) in sizes.iter().enumerate() {
            let stride = iw + 5;
            let src = picture(iw, ih, stride, seed as u32 + 1);
            let s = PlaneScaler::new(iw, ih, ow, oh);
            assert!(
                s.blocks.is_some() || iw > 2 * ow,
                "{iw}→{ow}: no SIMD blocks"
            );
            assert_eq!(
                scale(&s, &src, stride, true),
                scale(&s, &src, stride, false),
                "{iw}x{ih} → {ow}x{oh}"
            );
        }
    }

    /// Shrinking by more than 2× has no blocks and still scales (scalar).
    #[test]
    fn strong_shrink_falls_back_to_scalar() {
        let s = PlaneScaler::new(3840, 4, 640, 2);
        assert!(s.blocks.is_none());
        let src = picture(3840, 4, 3840, 9);
        let out = scale(&s, &src, 3840, true);
        assert_eq!(out.len(), 2 * 640);
    }

    /// The taps are videoscale's: exactly half size averages pixel pairs,
    /// and equal sizes copy.
    #[test]
    fn taps_follow_pixel_centres() {
        let half = Taps::new(8, 4);
        assert_eq!(half.index, vec![0, 2, 4, 6]);
        assert_eq!(half.frac, vec![16384; 4]);
        let same = Taps::new(5, 5);
        assert_eq!(same.index, vec![0, 1, 2, 3, 4]);
        assert_eq!(same.frac, vec![0; 5]);
        // 3 → 2: centres at 0.25 and 1.75.
        let third = Taps::new(3, 2);
        assert_eq!(third.index, vec![0, 1]);
        assert_eq!(third.frac, vec![8192, 24576]);
        // Growing clamps at both edges.
        let grow = Taps::new(2, 4);
        assert_eq!(grow.index, vec![0, 0, 0, 1]);
        assert_eq!(grow.frac, vec![0, 8192, 24576, 0]);
    }

    #[test]
    fn a_ramp_stays_a_ramp() {
        let (iw, ow) = (1280, 854);
        let src: Vec<u8> = (0..2)
            .flat_map(|_| (0..iw).map(|x| (16 + x * 200 / (iw - 1)) as u8))
            .collect();
        let s = PlaneScaler::new(iw, 2, ow, 1);
        let out = scale(&s, &src, iw, true);
        for (x, &got) in out.iter().enumerate() {
            let from = ((x as f64 + 0.5) * iw as f64 / ow as f64 - 0.5).clamp(0.0, iw as f64 - 1.0);
            let expected = 16.0 + from * 200.0 / (iw - 1) as f64;
            assert!(
                (f64::from(got) - expected).abs() <= 1.5,
                "column {x}: {got} vs {expected}"
            );
        }
    }
}
