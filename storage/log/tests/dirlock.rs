//! Proves one process per data directory: a second `DirLock::acquire`, in
//! this process or in another one (this test binary re-run as a child that
//! holds the lock), is refused naming the holder's pid, and the lock comes
//! free when the holder drops it or is killed with SIGKILL.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use flashd_log::{DirLock, LogError};

/// Held by each test that takes locks in this process. A `flock` belongs
/// to the open file, and a child forked by another test's thread holds a
/// copy of every descriptor until it execs (close-on-exec closes them only
/// then): a lock dropped here in that instant stays held by the child. So
/// the test that spawns a child never runs beside the one that drops and
/// re-takes a lock. (flashd itself forks nothing.)
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Set in the child: the directory it locks.
const CHILD_DIR: &str = "FLASHD_DIRLOCK_CHILD_DIR";

fn tmpdir(tag: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("flashd-dirlock-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn holder_pid(r: Result<DirLock, LogError>) -> Option<u32> {
    match r {
        Err(LogError::Locked { pid, path }) => {
            assert!(path.ends_with(flashd_log::dirlock::LOCK_FILE), "{path:?}");
            pid
        }
        other => panic!("expected the lock to be held: {other:?}"),
    }
}

#[test]
fn a_second_acquire_in_this_process_is_refused_until_the_first_is_dropped() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tmpdir("same");
    let first = DirLock::acquire(&d).unwrap();
    let err = DirLock::acquire(&d).unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    assert_eq!(holder_pid(DirLock::acquire(&d)), Some(std::process::id()));
    drop(first);
    let again = DirLock::acquire(&d).unwrap();
    // One lock for two spellings of the same directory, not a self-refusal.
    drop(again);
    let dotted: PathBuf = d.join(".");
    let locks = DirLock::acquire_all(&[&d, &dotted]).unwrap();
    assert_eq!(locks.len(), 1);
    drop(locks);
    let _ = std::fs::remove_dir_all(&d);
}

/// Not a test on its own: run as a child by the test below, it locks the
/// directory it is given, says so, and waits to be killed.
#[test]
#[ignore = "a helper, run as a child process by another_process_is_named_and_its_death_frees_the_lock"]
fn child_holds_the_lock() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by the parent test only");
    let _lock = DirLock::acquire(Path::new(&dir)).unwrap();
    println!("\nlocked {}", std::process::id());
    std::thread::sleep(std::time::Duration::from_secs(60));
}

#[test]
fn another_process_is_named_and_its_death_frees_the_lock() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = tmpdir("other");
    std::fs::create_dir_all(&d).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_holds_the_lock",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, &d)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let pid: u32 = loop {
        let line = lines.next().expect("child exited before locking").unwrap();
        // The harness may print "test child_holds_the_lock ... " first,
        // on the same line.
        if let Some((_, p)) = line.split_once("locked ") {
            break p.trim().parse().unwrap();
        }
    };
    assert_eq!(pid, child.id());
    let err = DirLock::acquire(&d).unwrap_err();
    assert!(err.to_string().contains(&format!("pid {pid}")), "{err}");
    assert_eq!(holder_pid(DirLock::acquire(&d)), Some(pid));
    // kill -9: the kernel releases the lock with the process.
    child.kill().unwrap();
    child.wait().unwrap();
    let lock = DirLock::acquire(&d).unwrap();
    let written = std::fs::read_to_string(lock.path()).unwrap();
    assert_eq!(written.trim(), std::process::id().to_string());
    drop(lock);
    let _ = std::fs::remove_dir_all(&d);
}
