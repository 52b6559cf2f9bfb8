//! Proves start-up opens the snapshot directory clean: `*.snap.tmp` files a
//! crash left mid-write are removed (and nothing else), and the newest
//! complete snapshot is still the one found.

use flashd_engine::*;
use flashd_log::*;

#[test]
fn stale_snapshot_temps_are_removed_at_start_and_nothing_else() {
    let dir = std::env::temp_dir().join(format!("flashd-snapdir-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let e = Engine::new(EngineConfig::default());
    let good = write_engine_snapshot(&dir, 5, &e, true).unwrap();
    // What a crash mid-snapshot leaves: a newer, half-written temp file.
    let stale = [
        dir.join(format!("{}.tmp", snapshot_name(9))),
        dir.join(format!("{}.tmp", snapshot_name(3))),
    ];
    for p in &stale {
        std::fs::write(p, b"FLSHDSNP half a snapshot").unwrap();
    }
    // Not ours to remove.
    let others = [
        dir.join("notes.tmp"),
        dir.join(segment_name(0)),
        dir.join("snap-x.tmp"),
    ];
    for p in &others {
        std::fs::write(p, b"keep").unwrap();
    }
    let v = latest_verified_snapshot(&dir).unwrap().unwrap();
    assert_eq!((v.path.clone(), v.lsn), (good.clone(), 5));
    for p in &stale {
        assert!(!p.exists(), "{} survived start-up", p.display());
    }
    for p in &others {
        assert!(p.exists(), "{} was removed", p.display());
    }
    assert!(good.exists());
    // Nothing left to remove the second time.
    assert!(remove_stale_temps(&dir).unwrap().is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}
