//! End-to-end encodes of real generated media through the GStreamer ladder.

mod common;

use lectern_transcoder::encode::{encode_ladder, CancelFlag};
use lectern_transcoder::{ladder, probe};

#[test]
fn explore() {
    let dir = std::path::Path::new("/tmp/exp/t1");
    std::fs::create_dir_all(dir).unwrap();
    let src = common::h264_mp4(dir, "640x360", "25", 9.0);
    let info = probe::probe(&src).unwrap();
    let plan = ladder::plan(&info, &common::small_profile()).unwrap();
    println!("{plan:#?}");
    let out = dir.join("out");
    let _ = std::fs::remove_dir_all(&out);
    let t = std::time::Instant::now();
    let result = encode_ladder(
        &src,
        &info,
        &plan,
        &out,
        &|p| println!("progress {p:.1}"),
        &CancelFlag::new(),
    )
    .unwrap();
    println!(
        "{:?} {}",
        t.elapsed(),
        serde_json::to_string_pretty(&result).unwrap()
    );
}
