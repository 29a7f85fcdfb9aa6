//! Loudness: an EBU R128 meter (ITU-R BS.1770-4 integrated loudness with
//! K-weighting and gating, EBU Tech 3342 loudness range, a 4× oversampled
//! true peak) and the decision of how much gain brings a recording to a
//! target. Pure arithmetic over interleaved `f32` samples: the encoder
//! feeds it the decoded, downmixed audio of a first pass
//! (`encode::measure`) and applies the gain in the audio branch.
//!
//! How it works:
//! - K-weighting is BS.1770's two biquads (a high shelf, then the RLB
//!   high-pass), their coefficients derived for the actual sample rate the
//!   way libebur128 does, so 44.1 and 32 kHz measure like 48 kHz.
//! - The mean square of the weighted signal is kept per 100 ms step (all
//!   channels summed: the rendition is stereo, whose channel weights are
//!   1). Momentary blocks (400 ms, 75 % overlap) are four steps, short-term
//!   windows (3 s, for the range) thirty; nothing else is stored, so a
//!   12 h lecture needs about 3 MB.
//! - Integrated loudness gates blocks at −70 LUFS, then at 10 LU below the
//!   mean of those; the range gates short-term windows at −70 LUFS and 20 LU
//!   below, and spans their 10th to 95th percentile.
//! - True peak interpolates each channel 4× with a 48-tap windowed-sinc
//!   polyphase filter (BS.1770-4 Annex 2 asks for at least 4× at 48 kHz)
//!   and takes the largest magnitude, original samples included.
//! - Gain is linear (one number for the whole recording, like `loudnorm`'s
//!   linear mode): it never changes the dynamics of a lecture. When the
//!   target gain would push the true peak over the ceiling, the gain is
//!   lowered to meet the ceiling and the outcome says the target was not
//!   reached. Silence (nothing above the absolute gate) gets no gain.

use serde::{Deserialize, Serialize};

/// Blocks quieter than this never count (BS.1770-4 §2.8).
const ABSOLUTE_GATE_LUFS: f64 = -70.0;
const RELATIVE_GATE_LU: f64 = -10.0;
/// EBU Tech 3342: short-term windows more than 20 LU under their mean do
/// not count towards the range.
const RANGE_RELATIVE_GATE_LU: f64 = -20.0;
/// The most gain applied: GStreamer's `volume` stops at ×10, and a
/// recording quieter than this is mostly noise worth no more boost.
pub const MAX_GAIN_DB: f64 = 20.0;
const OVERSAMPLING: usize = 4;
const TAPS_PER_PHASE: usize = 12;

/// What a profile asks for: a target integrated loudness, or `"off"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LoudnessTarget {
    Off,
    Lufs(f64),
}

impl Serialize for LoudnessTarget {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Off => s.serialize_str("off"),
            Self::Lufs(v) => s.serialize_f64(*v),
        }
    }
}

impl<'de> Deserialize<'de> for LoudnessTarget {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Spelled {
            Number(f64),
            Word(String),
        }
        match Spelled::deserialize(d)? {
            Spelled::Number(v) => Ok(Self::Lufs(v)),
            Spelled::Word(w) if w == "off" => Ok(Self::Off),
            Spelled::Word(w) => Err(serde::de::Error::custom(format!(
                "expected a loudness in LUFS (e.g. -16) or \"off\", got {w:?}"
            ))),
        }
    }
}

impl Default for LoudnessTarget {
    fn default() -> Self {
        Self::Lufs(DEFAULT_TARGET_LUFS)
    }
}

/// Common practice for speech on phones and laptops (Apple, AES TD1004).
pub const DEFAULT_TARGET_LUFS: f64 = -16.0;
/// Headroom for lossy coding and cheap D/A converters (EBU R128 s1).
pub const DEFAULT_TRUE_PEAK_MAX_DBTP: f64 = -1.0;

/// How the audio rendition's loudness is to be set: part of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoudnessPlan {
    pub target: LoudnessTarget,
    pub true_peak_max_dbtp: f64,
    /// The source's loudness as this rendition carries it, when it was
    /// measured while the title was planned (beside the content
    /// analysis); otherwise the encode measures it first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<LoudnessMeasurement>,
}

/// What the meter read.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoudnessMeasurement {
    /// Integrated loudness, LUFS; `None` when nothing passes the absolute
    /// gate (silence, or a recording under −70 LUFS).
    pub integrated_lufs: Option<f64>,
    /// Loudness range, LU; `None` without gated short-term windows.
    pub range_lu: Option<f64>,
    /// True peak, dBTP; `None` for digital silence.
    pub true_peak_dbtp: Option<f64>,
}

/// Why the applied gain is what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoudnessOutcome {
    /// The target was met.
    Normalised,
    /// Less gain than the target needs: more would push the true peak
    /// over the ceiling.
    PeakLimited,
    /// Less gain than the target needs: more than [`MAX_GAIN_DB`].
    GainLimited,
    /// Nothing to measure: no gain.
    Silent,
    /// The profile turns normalisation off: measured only.
    Off,
}

impl LoudnessOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normalised => "normalised",
            Self::PeakLimited => "peak_limited",
            Self::GainLimited => "gain_limited",
            Self::Silent => "silent",
            Self::Off => "off",
        }
    }
}

/// The measurement of the source's audio and what was done with it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LoudnessReport {
    pub measured: LoudnessMeasurement,
    /// `None` when normalisation is off.
    pub target_lufs: Option<f64>,
    pub true_peak_max_dbtp: f64,
    /// Applied to the rendition; 0 for silence and when off.
    pub gain_db: f64,
    pub outcome: LoudnessOutcome,
}

impl LoudnessReport {
    /// The gain that meets `plan` without crossing its true-peak ceiling.
    pub fn decide(measured: LoudnessMeasurement, plan: &LoudnessPlan) -> Self {
        let report = |target_lufs, gain_db, outcome| Self {
            measured,
            target_lufs,
            true_peak_max_dbtp: plan.true_peak_max_dbtp,
            gain_db,
            outcome,
        };
        let target = match plan.target {
            LoudnessTarget::Off => return report(None, 0.0, LoudnessOutcome::Off),
            LoudnessTarget::Lufs(t) => t,
        };
        let (Some(integrated), Some(peak)) = (measured.integrated_lufs, measured.true_peak_dbtp)
        else {
            return report(Some(target), 0.0, LoudnessOutcome::Silent);
        };
        let wanted = target - integrated;
        let peak_room = plan.true_peak_max_dbtp - peak;
        let (gain, outcome) = if peak_room < wanted && peak_room <= MAX_GAIN_DB {
            (peak_room, LoudnessOutcome::PeakLimited)
        } else if wanted > MAX_GAIN_DB {
            (MAX_GAIN_DB, LoudnessOutcome::GainLimited)
        } else {
            (wanted, LoudnessOutcome::Normalised)
        };
        // Hundredths of a dB are far below what anyone hears, and keep the
        // stored numbers readable.
        report(Some(target), (gain * 100.0).round() / 100.0, outcome)
    }

    /// The linear factor for `gain_db`.
    pub fn linear_gain(&self) -> f64 {
        10f64.powf(self.gain_db / 20.0)
    }
}

/// One biquad section, transposed direct form II.
#[derive(Debug, Clone, Copy)]
struct Biquad {
    b: [f64; 3],
    a: [f64; 2],
}

impl Biquad {
    /// BS.1770's pre-filter (a +4 dB high shelf modelling the head).
    fn shelf(rate: f64) -> Self {
        let (f0, gain_db, q) = (1681.974450955533, 3.999843853973347, 0.7071752369554196);
        let k = (std::f64::consts::PI * f0 / rate).tan();
        let vh = 10f64.powf(gain_db / 20.0);
        let vb = vh.powf(0.4996667741545416);
        let a0 = 1.0 + k / q + k * k;
        Self {
            b: [
                (vh + vb * k / q + k * k) / a0,
                2.0 * (k * k - vh) / a0,
                (vh - vb * k / q + k * k) / a0,
            ],
            a: [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
        }
    }

    /// BS.1770's RLB weighting (a high-pass near 38 Hz).
    fn high_pass(rate: f64) -> Self {
        let (f0, q) = (38.13547087602444, 0.5003270373238773);
        let k = (std::f64::consts::PI * f0 / rate).tan();
        let a0 = 1.0 + k / q + k * k;
        Self {
            b: [1.0, -2.0, 1.0],
            a: [2.0 * (k * k - 1.0) / a0, (1.0 - k / q + k * k) / a0],
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct BiquadState([f64; 2]);

impl BiquadState {
    fn run(&mut self, f: &Biquad, x: f64) -> f64 {
        let y = f.b[0] * x + self.0[0];
        self.0[0] = f.b[1] * x - f.a[0] * y + self.0[1];
        self.0[1] = f.b[2] * x - f.a[1] * y;
        y
    }
}

/// Feeds on interleaved samples; [`LoudnessMeter::finish`] reads the result.
pub struct LoudnessMeter {
    channels: usize,
    shelf: Biquad,
    high_pass: Biquad,
    states: Vec<(BiquadState, BiquadState)>,
    /// Samples per channel in one 100 ms step.
    step_len: usize,
    step_fill: usize,
    step_sum: f64,
    /// Mean square (summed over channels) of every complete step.
    steps: Vec<f64>,
    /// The true-peak interpolator, tap-major: per tap (oldest sample
    /// first), its weight in each of the four phases, so one sample times
    /// one row updates all phases at once (four lanes of one vector);
    /// and each channel's last samples, written twice so the newest
    /// `TAPS_PER_PHASE` are always one contiguous slice.
    taps: [[f64; OVERSAMPLING]; TAPS_PER_PHASE],
    history: Vec<[f64; 2 * TAPS_PER_PHASE]>,
    history_at: usize,
    peak: f64,
}

impl LoudnessMeter {
    pub fn new(channels: usize, sample_rate: u32) -> Self {
        let rate = f64::from(sample_rate.max(1));
        let channels = channels.max(1);
        Self {
            channels,
            shelf: Biquad::shelf(rate),
            high_pass: Biquad::high_pass(rate),
            states: vec![Default::default(); channels],
            step_len: ((rate / 10.0).round() as usize).max(1),
            step_fill: 0,
            step_sum: 0.0,
            steps: Vec::new(),
            taps: interpolation_taps(),
            history: vec![[0.0; 2 * TAPS_PER_PHASE]; channels],
            history_at: 0,
            peak: 0.0,
        }
    }

    /// Interleaved frames; a trailing partial frame is ignored.
    pub fn push(&mut self, samples: &[f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present.
            unsafe { self.push_avx2(samples) };
            return;
        }
        self.push_any(samples);
    }

    /// The same loop compiled for AVX2, where the four phases of a tap are
    /// one 256-bit multiply and add (the interpolator was 43 % of the
    /// loudness pass's CPU in scalar form). The arithmetic is the same
    /// (no fused multiply-add), so both paths give the same numbers.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn push_avx2(&mut self, samples: &[f32]) {
        self.push_any(samples);
    }

    #[inline(always)]
    fn push_any(&mut self, samples: &[f32]) {
        for frame in samples.chunks_exact(self.channels) {
            let mut power = 0.0;
            self.history_at = (self.history_at + 1) % TAPS_PER_PHASE;
            for (c, &x) in frame.iter().enumerate() {
                let x = f64::from(x);
                let (s1, s2) = &mut self.states[c];
                let y = s2.run(&self.high_pass, s1.run(&self.shelf, x));
                power += y * y;
                let history = &mut self.history[c];
                history[self.history_at] = x;
                history[self.history_at + TAPS_PER_PHASE] = x;
                let window = &history[self.history_at + 1..=self.history_at + TAPS_PER_PHASE];
                // Three partial sums, so no one chain of additions is
                // twelve long.
                let mut acc = [[0.0; OVERSAMPLING]; 3];
                for (k, (&s, tap)) in window.iter().zip(&self.taps).enumerate() {
                    let acc = &mut acc[k % 3];
                    for (a, &t) in acc.iter_mut().zip(tap) {
                        *a += s * t;
                    }
                }
                let [a, b, c] = acc;
                let peak = (0..OVERSAMPLING)
                    .map(|p| (a[p] + b[p] + c[p]).abs())
                    .fold(x.abs(), f64::max);
                self.peak = self.peak.max(peak);
            }
            self.step_sum += power;
            self.step_fill += 1;
            if self.step_fill == self.step_len {
                self.steps.push(self.step_sum / self.step_len as f64);
                self.step_sum = 0.0;
                self.step_fill = 0;
            }
        }
    }

    pub fn finish(&self) -> LoudnessMeasurement {
        let momentary = windows(&self.steps, 4);
        let short_term = windows(&self.steps, 30);
        LoudnessMeasurement {
            integrated_lufs: integrated(&momentary),
            range_lu: range(&short_term),
            true_peak_dbtp: (self.peak > 0.0).then(|| 20.0 * self.peak.log10()),
        }
    }
}

/// Mean power of every run of `n` consecutive steps (hop: one step).
fn windows(steps: &[f64], n: usize) -> Vec<f64> {
    steps
        .windows(n)
        .map(|w| w.iter().sum::<f64>() / n as f64)
        .collect()
}

fn lufs(power: f64) -> f64 {
    -0.691 + 10.0 * power.log10()
}

fn power_of(lufs: f64) -> f64 {
    10f64.powf((lufs + 0.691) / 10.0)
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

fn integrated(blocks: &[f64]) -> Option<f64> {
    let absolute = power_of(ABSOLUTE_GATE_LUFS);
    let ungated = mean(blocks.iter().copied().filter(|&p| p > absolute))?;
    let relative = power_of(lufs(ungated) + RELATIVE_GATE_LU);
    mean(
        blocks
            .iter()
            .copied()
            .filter(|&p| p > absolute && p > relative),
    )
    .map(lufs)
}

fn range(windows: &[f64]) -> Option<f64> {
    let absolute = power_of(ABSOLUTE_GATE_LUFS);
    let ungated = mean(windows.iter().copied().filter(|&p| p > absolute))?;
    let relative = power_of(lufs(ungated) + RANGE_RELATIVE_GATE_LU);
    let mut gated: Vec<f64> = windows
        .iter()
        .copied()
        .filter(|&p| p > absolute && p > relative)
        .map(lufs)
        .collect();
    gated.sort_by(f64::total_cmp);
    let at = |p: f64| gated[((gated.len() - 1) as f64 * p).round() as usize];
    Some(at(0.95) - at(0.10))
}

/// The polyphase branches of a 4× interpolator: a Blackman-windowed sinc
/// cut at the input's Nyquist frequency, each branch normalised to unit
/// gain at DC so a constant signal reads its own level. Row `k` holds tap
/// `k` (oldest sample first) of every branch.
fn interpolation_taps() -> [[f64; OVERSAMPLING]; TAPS_PER_PHASE] {
    let taps = OVERSAMPLING * TAPS_PER_PHASE;
    let centre = (taps - 1) as f64 / 2.0;
    let h: Vec<f64> = (0..taps)
        .map(|n| {
            let t = (n as f64 - centre) / OVERSAMPLING as f64;
            let sinc = if t == 0.0 {
                1.0
            } else {
                (std::f64::consts::PI * t).sin() / (std::f64::consts::PI * t)
            };
            let w = 2.0 * std::f64::consts::PI * n as f64 / (taps - 1) as f64;
            sinc * (0.42 - 0.5 * w.cos() + 0.08 * (2.0 * w).cos())
        })
        .collect();
    let mut rows = [[0.0; OVERSAMPLING]; TAPS_PER_PHASE];
    for p in 0..OVERSAMPLING {
        // Tap k multiplies the sample k steps back; stored oldest first.
        let branch: Vec<f64> = (0..TAPS_PER_PHASE)
            .map(|k| h[k * OVERSAMPLING + p])
            .collect();
        let sum: f64 = branch.iter().sum();
        for (k, tap) in branch.iter().enumerate() {
            rows[TAPS_PER_PHASE - 1 - k][p] = tap / sum;
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(freq: f64, amplitude: f64, seconds: f64, rate: u32, channels: usize) -> Vec<f32> {
        let n = (seconds * f64::from(rate)) as usize;
        (0..n)
            .flat_map(|i| {
                let x = amplitude
                    * (2.0 * std::f64::consts::PI * freq * i as f64 / f64::from(rate)).sin();
                std::iter::repeat_n(x as f32, channels)
            })
            .collect()
    }

    fn measure(samples: &[f32], channels: usize, rate: u32) -> LoudnessMeasurement {
        let mut meter = LoudnessMeter::new(channels, rate);
        // In odd-sized pieces, as buffers arrive.
        for piece in samples.chunks(channels * 777) {
            meter.push(piece);
        }
        meter.finish()
    }

    #[test]
    fn the_vector_and_portable_loops_agree_exactly() {
        // A loud, clipped-looking signal with peaks between samples.
        let samples: Vec<f32> = sine(11_997.0, 0.99, 3.0, 48_000, 2)
            .iter()
            .enumerate()
            .map(|(i, &x)| if i % 7 == 0 { -x } else { x })
            .collect();
        let mut portable = LoudnessMeter::new(2, 48_000);
        let mut any = LoudnessMeter::new(2, 48_000);
        for piece in samples.chunks(2 * 501) {
            portable.push_any(piece);
            any.push(piece);
        }
        let (a, b) = (portable.finish(), any.finish());
        assert_eq!(a.integrated_lufs, b.integrated_lufs);
        assert_eq!(a.range_lu, b.range_lu);
        assert_eq!(a.true_peak_dbtp, b.true_peak_dbtp);
        assert!(a.true_peak_dbtp.is_some());
    }

    #[test]
    fn a_full_scale_1khz_sine_in_both_channels_reads_as_bs1770_says() {
        // BS.1770: a 0 dBFS 1 kHz sine in one channel reads −3.01 LUFS;
        // in both channels of a stereo pair, +3 dB more.
        for rate in [48_000, 44_100] {
            let m = measure(&sine(1000.0, 1.0, 5.0, rate, 2), 2, rate);
            let i = m.integrated_lufs.unwrap();
            assert!((i - 0.0).abs() < 0.05, "{rate} Hz: {i}");
            let one = measure(&sine(1000.0, 1.0, 5.0, rate, 1), 1, rate)
                .integrated_lufs
                .unwrap();
            assert!((one + 3.01).abs() < 0.05, "{rate} Hz mono: {one}");
            // A steady tone has no range.
            assert!(m.range_lu.unwrap() < 0.1, "{:?}", m.range_lu);
        }
    }

    #[test]
    fn ebu_tech_3341_case_1_and_the_relative_gate() {
        // Tech 3341 test 1: stereo 1 kHz at −23 dBFS reads −23 LUFS.
        let amp = 10f64.powf(-23.0 / 20.0);
        let m = measure(&sine(1000.0, amp, 5.0, 48_000, 2), 2, 48_000);
        assert!((m.integrated_lufs.unwrap() + 23.0).abs() < 0.1, "{m:?}");
        // Like test 3, shortened: 4 s at −36, 20 s at −23, 4 s at −36
        // dBFS: the quiet parts fall under the relative gate, so −23 again.
        let quiet = 10f64.powf(-36.0 / 20.0);
        let mut s = sine(1000.0, quiet, 4.0, 48_000, 2);
        s.extend(sine(1000.0, amp, 20.0, 48_000, 2));
        s.extend(sine(1000.0, quiet, 4.0, 48_000, 2));
        let m = measure(&s, 2, 48_000);
        assert!((m.integrated_lufs.unwrap() + 23.0).abs() < 0.1, "{m:?}");
    }

    #[test]
    fn loudness_range_of_two_levels() {
        // Tech 3342 case 1: 20 s at −20 dBFS then 20 s at −30: LRA 10 LU.
        let loud = 10f64.powf(-20.0 / 20.0);
        let soft = 10f64.powf(-30.0 / 20.0);
        let mut s = sine(1000.0, loud, 20.0, 48_000, 2);
        s.extend(sine(1000.0, soft, 20.0, 48_000, 2));
        let m = measure(&s, 2, 48_000);
        assert!((m.range_lu.unwrap() - 10.0).abs() < 0.2, "{m:?}");
    }

    #[test]
    fn true_peak_finds_the_peak_between_samples() {
        // A quarter-rate sine sampled 45° off its crest: every sample sits
        // at 0.707 of the true peak (−3 dB), which only interpolation sees.
        let rate = 48_000;
        let s: Vec<f32> = (0..rate)
            .map(|i| {
                (std::f64::consts::FRAC_PI_2 * i as f64 + std::f64::consts::FRAC_PI_4).sin() as f32
                    * 0.5
            })
            .collect();
        let sample_peak = s.iter().fold(0f32, |m, x| m.max(x.abs()));
        assert!((20.0 * f64::from(sample_peak).log10() - (-9.03)).abs() < 0.05);
        let tp = measure(&s, 1, rate as u32).true_peak_dbtp.unwrap();
        assert!((tp - (-6.02)).abs() < 0.3, "{tp}");
    }

    #[test]
    fn silence_reads_as_nothing_and_gets_no_gain() {
        let m = measure(&vec![0.0; 48_000 * 4], 2, 48_000);
        assert_eq!(
            m,
            LoudnessMeasurement {
                integrated_lufs: None,
                range_lu: None,
                true_peak_dbtp: None
            }
        );
        let plan = LoudnessPlan {
            target: LoudnessTarget::Lufs(-16.0),
            true_peak_max_dbtp: -1.0,
            measured: None,
        };
        let r = LoudnessReport::decide(m, &plan);
        assert_eq!((r.gain_db, r.outcome), (0.0, LoudnessOutcome::Silent));
        assert_eq!(r.linear_gain(), 1.0);
        // Shorter than one 400 ms block: nothing to gate either.
        assert_eq!(
            measure(&sine(1000.0, 0.5, 0.2, 48_000, 2), 2, 48_000).integrated_lufs,
            None
        );
    }

    #[test]
    fn gain_meets_the_target_unless_the_peak_forbids_it() {
        let plan = LoudnessPlan {
            target: LoudnessTarget::Lufs(-16.0),
            true_peak_max_dbtp: -1.0,
            measured: None,
        };
        let m = |i, tp| LoudnessMeasurement {
            integrated_lufs: Some(i),
            range_lu: Some(5.0),
            true_peak_dbtp: Some(tp),
        };
        let quiet = LoudnessReport::decide(m(-35.0, -22.0), &plan);
        assert_eq!(
            (quiet.gain_db, quiet.outcome),
            (19.0, LoudnessOutcome::Normalised)
        );
        let loud = LoudnessReport::decide(m(-8.0, -0.1), &plan);
        assert_eq!(
            (loud.gain_db, loud.outcome),
            (-8.0, LoudnessOutcome::Normalised)
        );
        // Peaky: +10 dB wanted, the peak allows +6.
        let peaky = LoudnessReport::decide(m(-26.0, -7.0), &plan);
        assert_eq!(
            (peaky.gain_db, peaky.outcome),
            (6.0, LoudnessOutcome::PeakLimited)
        );
        // Very quiet: the boost stops at MAX_GAIN_DB.
        let faint = LoudnessReport::decide(m(-60.0, -45.0), &plan);
        assert_eq!(
            (faint.gain_db, faint.outcome),
            (MAX_GAIN_DB, LoudnessOutcome::GainLimited)
        );
        let off = LoudnessPlan {
            target: LoudnessTarget::Off,
            ..plan
        };
        let r = LoudnessReport::decide(m(-35.0, -22.0), &off);
        assert_eq!(
            (r.gain_db, r.outcome, r.target_lufs),
            (0.0, LoudnessOutcome::Off, None)
        );
    }

    #[test]
    fn targets_are_spelled_as_numbers_or_off() {
        #[derive(Deserialize, Serialize)]
        struct T {
            t: LoudnessTarget,
        }
        let t: T = toml::from_str("t = -16.0").unwrap();
        assert_eq!(t.t, LoudnessTarget::Lufs(-16.0));
        let t: T = toml::from_str("t = -18").unwrap();
        assert_eq!(t.t, LoudnessTarget::Lufs(-18.0));
        let t: T = toml::from_str("t = \"off\"").unwrap();
        assert_eq!(t.t, LoudnessTarget::Off);
        assert!(toml::from_str::<T>("t = \"loud\"").is_err());
        assert_eq!(
            serde_json::to_string(&T {
                t: LoudnessTarget::Off
            })
            .unwrap(),
            r#"{"t":"off"}"#
        );
    }
}
