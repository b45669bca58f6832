//! Replays the fuzz corpus and crash reproducers on stable, so that every CI run checks them:
//! `fuzz/corpus/<target>/*` (the committed seeds) and `fuzz/regressions/<target>/*` (one file
//! per finding, minimised) through the same target functions cargo-fuzz runs.
//!
//! Reproducers of defects found but not yet fixed are listed in `fuzz/regressions/OPEN`
//! (`<target>/<file>` per line, `#` comments): those must still fail, so that the fix that
//! makes one pass also removes it from the list (and it then guards against the defect's
//! return like every other reproducer).

use std::collections::BTreeSet;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use gw_fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files directly in `dir`, sorted (none when it does not exist).
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Run one input through a target: the panic message if its oracle failed.
fn replay(target: gw_fuzz::Target, file: &Path) -> Result<(), String> {
    let data = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    catch_unwind(AssertUnwindSafe(|| target(&data))).map_err(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panic".into())
    })
}

fn open_list() -> BTreeSet<String> {
    let text = std::fs::read_to_string(fuzz_dir().join("regressions/OPEN")).unwrap_or_default();
    text.lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every seed of every target passes its oracle, and every target has seeds.
#[test]
fn corpus_replays_clean() {
    let mut failures = Vec::new();
    for (name, target) in TARGETS {
        let seeds = files(&fuzz_dir().join("corpus").join(name));
        assert!(seeds.len() >= 8, "fuzz/corpus/{name} has {} seeds", seeds.len());
        for s in seeds {
            if let Err(e) = replay(*target, &s) {
                failures.push(format!("{}: {e}", s.display()));
            }
        }
    }
    assert!(failures.is_empty(), "{} seeds fail their oracle:\n{}", failures.len(), failures.join("\n"));
}

/// Every crash reproducer passes, except the open ones listed in `fuzz/regressions/OPEN`,
/// which must still fail (remove a reproducer from the list once its defect is fixed).
#[test]
fn regressions_replay() {
    let open = open_list();
    let mut seen = BTreeSet::new();
    let mut problems = Vec::new();
    for (name, target) in TARGETS {
        for f in files(&fuzz_dir().join("regressions").join(name)) {
            let key = format!("{name}/{}", f.file_name().and_then(|n| n.to_str()).unwrap_or(""));
            let r = replay(*target, &f);
            match (open.contains(&key), r) {
                (false, Err(e)) => problems.push(format!("{key} fails: {e}")),
                (true, Ok(())) => problems.push(format!("{key} passes now: remove it from fuzz/regressions/OPEN")),
                _ => {}
            }
            seen.insert(key);
        }
    }
    for k in open.difference(&seen) {
        problems.push(format!("fuzz/regressions/OPEN lists {k}, which does not exist"));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
