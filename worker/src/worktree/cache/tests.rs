//! Unit tests of the warm cache: keys, placing and saving, the cap's
//! evictions, `--clear-cache`, and what dead savers leave.

use super::*;
use std::time::Duration;

/// A cache in a scratch directory, and two worktrees of one repository.
struct Scene {
    _dir: tempfile::TempDir,
    cache: Cache,
    repo: PathBuf,
    first: PathBuf,
    second: PathBuf,
}

fn scene(max_bytes: u64) -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let cache = Cache::new(CacheConfig {
        dir: dir.path().join("cache"),
        max_bytes,
    });
    let (repo, first, second) = (
        dir.path().join("repo"),
        dir.path().join("wt1"),
        dir.path().join("wt2"),
    );
    for tree in [&repo, &first, &second] {
        std::fs::create_dir_all(tree).unwrap();
        std::fs::write(tree.join("package-lock.json"), "{\"v\": 1}").unwrap();
    }
    Scene {
        _dir: dir,
        cache,
        repo,
        first,
        second,
    }
}

fn node_modules() -> CachePath {
    CachePath {
        path: "node_modules".into(),
        key: vec!["package-lock.json".into()],
    }
}

/// Fills `tree/node_modules` with `files` files of `size` bytes.
fn install(tree: &Path, files: usize, size: usize) {
    let dir = tree.join("node_modules/pkg");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 0..files {
        std::fs::write(dir.join(format!("f{n}.js")), vec![b'x'; size]).unwrap();
    }
}

#[test]
fn keys_follow_the_key_files_the_path_and_the_repository() {
    let s = scene(DEFAULT_MAX);
    let key = |repo: &Path, tree: &Path, cached: &CachePath| key(repo, tree, cached);
    let first = key(&s.repo, &s.first, &node_modules());
    assert_eq!(first.len(), 64);
    assert_eq!(first, key(&s.repo, &s.second, &node_modules()));
    assert_ne!(
        first,
        key(&s.first, &s.second, &node_modules()),
        "another repository"
    );
    let other_path = CachePath {
        path: ".venv".into(),
        ..node_modules()
    };
    assert_ne!(first, key(&s.repo, &s.first, &other_path));
    std::fs::write(s.second.join("package-lock.json"), "{\"v\": 2}").unwrap();
    assert_ne!(first, key(&s.repo, &s.second, &node_modules()));
    // A missing key file is not the same as an empty one.
    std::fs::write(s.second.join("package-lock.json"), "").unwrap();
    let empty = key(&s.repo, &s.second, &node_modules());
    std::fs::remove_file(s.second.join("package-lock.json")).unwrap();
    assert_ne!(empty, key(&s.repo, &s.second, &node_modules()));
}

#[test]
fn a_saved_path_is_placed_in_the_next_worktree_with_the_same_key() {
    let s = scene(DEFAULT_MAX);
    let paths = [node_modules()];
    let placed = place(Some(&s.cache), &s.repo, &s.first, &paths);
    assert_eq!(placed.slots[0].outcome, Outcome::Miss);
    assert!(placed.lines.is_empty(), "{:?}", placed.lines);
    assert_eq!(placed.env(), Some((HIT_VAR.into(), "0".into())));
    install(&s.first, 3, 10);
    let lines = save(Some(&s.cache), &s.first, &s.repo, &placed, SetupEnd::Passed);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(
        lines[0].starts_with("cache: node_modules: miss, saved (3 files, "),
        "{lines:?}"
    );

    let again = place(Some(&s.cache), &s.repo, &s.second, &paths);
    assert_eq!(again.slots[0].outcome, Outcome::Hit);
    let short = &again.slots[0].key[..8];
    assert_eq!(again.lines, [format!("cache: node_modules: hit ({short})")]);
    assert_eq!(again.env(), Some((HIT_VAR.into(), "1".into())));
    let placed_file = s.second.join("node_modules/pkg/f2.js");
    assert_eq!(std::fs::read(&placed_file).unwrap(), vec![b'x'; 10]);
    // A job changing its copy leaves the cache's as it was.
    std::fs::write(&placed_file, "changed").unwrap();
    let third = s.first.parent().unwrap().join("wt3");
    std::fs::create_dir_all(&third).unwrap();
    std::fs::copy(
        s.first.join("package-lock.json"),
        third.join("package-lock.json"),
    )
    .unwrap();
    place(Some(&s.cache), &s.repo, &third, &paths);
    assert_eq!(
        std::fs::read(third.join("node_modules/pkg/f2.js")).unwrap(),
        vec![b'x'; 10]
    );
    // A hit is not saved again.
    assert!(save(Some(&s.cache), &s.second, &s.repo, &again, SetupEnd::Passed).is_empty());
}

#[test]
fn misses_say_why_they_were_not_saved() {
    let s = scene(100 << 10);
    let placed = place(Some(&s.cache), &s.repo, &s.first, &[node_modules()]);
    let why = |tree: &Path, end| save(Some(&s.cache), tree, &s.repo, &placed, end);
    assert_eq!(
        why(&s.first, SetupEnd::Passed),
        ["cache: node_modules: miss, not saved (the setup made no node_modules)"]
    );
    install(&s.first, 1, 10);
    assert_eq!(
        why(&s.first, SetupEnd::NotPassed),
        ["cache: node_modules: miss, not saved (the setup did not pass)"]
    );
    assert_eq!(
        why(&s.first, SetupEnd::None),
        ["cache: node_modules: miss, not saved (the workspace has no setup to fill it)"]
    );
    install(&s.second, 40, 4096);
    let lines = why(&s.second, SetupEnd::Passed);
    assert!(
        lines[0].contains("is over the cache's cap of 100.0 KiB"),
        "{lines:?}"
    );
    assert!(why(&s.first, SetupEnd::Passed)[0].contains("miss, saved"));
    assert_eq!(
        why(&s.first, SetupEnd::Passed),
        ["cache: node_modules: miss, not saved (another job saved it first)"]
    );
    // Nothing half made is left behind.
    assert_eq!(
        std::fs::read_dir(s.cache.config.dir.join(TMP))
            .unwrap()
            .count(),
        0
    );
    let none = place(None, &s.repo, &s.first, &[node_modules()]);
    assert!(none.lines[0].contains("not used (this worker has no cache directory"));
    assert_eq!(none.env(), Some((HIT_VAR.into(), "0".into())));
    assert_eq!(Placed::default().env(), None);
}

#[test]
fn a_path_the_new_worktree_has_from_git_is_not_placed_over() {
    let s = scene(DEFAULT_MAX);
    let placed = place(Some(&s.cache), &s.repo, &s.first, &[node_modules()]);
    install(&s.first, 2, 10);
    save(Some(&s.cache), &s.first, &s.repo, &placed, SetupEnd::Passed);
    std::fs::create_dir_all(s.second.join("node_modules")).unwrap();
    std::fs::write(s.second.join("node_modules/tracked.js"), "mine").unwrap();
    let again = place(Some(&s.cache), &s.repo, &s.second, &[node_modules()]);
    assert_eq!(again.slots[0].outcome, Outcome::Unusable);
    assert!(
        again.lines[0].contains("has it from its commit"),
        "{:?}",
        again.lines
    );
    assert!(!s.second.join("node_modules/pkg").exists());
}

/// Saves `node_modules` of a worktree whose lock file says `version`.
fn save_version(s: &Scene, version: u32, files: usize) -> String {
    let tree = s.first.parent().unwrap().join(format!("v{version}"));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("package-lock.json"), version.to_string()).unwrap();
    let placed = place(Some(&s.cache), &s.repo, &tree, &[node_modules()]);
    install(&tree, files, 4096);
    let lines = save(Some(&s.cache), &tree, &s.repo, &placed, SetupEnd::Passed);
    assert!(lines[0].contains("miss, saved"), "{lines:?}");
    placed.slots[0].key.clone()
}

fn set_used(cache: &Cache, key: &str, seconds_ago: u64) {
    let used = File::options()
        .write(true)
        .open(cache.entry(key).join(USED))
        .unwrap();
    used.set_modified(SystemTime::now() - Duration::from_secs(seconds_ago))
        .unwrap();
}

#[test]
fn over_the_cap_the_least_recently_used_entries_go_first_but_not_ones_in_use() {
    // Each entry: 8 files of 4 KiB and two directories, about 40 KiB.
    let s = scene(1 << 30);
    let keys: Vec<String> = (1..=3).map(|v| save_version(&s, v, 8)).collect();
    let size = list(&s.cache.config.dir)[0].bytes;
    assert!(size >= 8 * 4096, "{size}");
    // Used: 1 an hour ago, 2 two hours ago, 3 now.
    set_used(&s.cache, &keys[0], 3600);
    set_used(&s.cache, &keys[1], 7200);
    let capped = Cache::new(CacheConfig {
        max_bytes: 2 * size + size / 2,
        ..s.cache.config.clone()
    });
    assert_eq!(capped.evict(), (1, size));
    assert!(!capped.entry(&keys[1]).exists(), "the least recently used");
    assert!(capped.entry(&keys[0]).exists() && capped.entry(&keys[2]).exists());
    // An entry being placed (its lock held shared) is not removed.
    let in_use = File::open(capped.entry(&keys[0]).join(USED)).unwrap();
    flock(&in_use, libc::LOCK_SH).unwrap();
    let tiny = Cache::new(CacheConfig {
        max_bytes: 1,
        ..s.cache.config.clone()
    });
    assert_eq!(tiny.evict(), (1, size));
    assert!(tiny.entry(&keys[0]).exists() && !tiny.entry(&keys[2]).exists());
    drop(in_use);
    assert_eq!(tiny.evict(), (1, size));
    assert!(list(&s.cache.config.dir).is_empty());
}

#[test]
fn a_save_over_the_cap_makes_room_and_says_so() {
    let s = scene(1 << 30);
    let first = save_version(&s, 1, 8);
    let size = list(&s.cache.config.dir)[0].bytes;
    let capped = Scene {
        cache: Cache::new(CacheConfig {
            max_bytes: size + size / 2,
            ..s.cache.config.clone()
        }),
        ..s
    };
    let tree = capped.first.parent().unwrap().join("next");
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("package-lock.json"), "next").unwrap();
    let placed = place(Some(&capped.cache), &capped.repo, &tree, &[node_modules()]);
    install(&tree, 8, 4096);
    let lines = save(
        Some(&capped.cache),
        &tree,
        &capped.repo,
        &placed,
        SetupEnd::Passed,
    );
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[1].starts_with("cache: over its cap of "), "{lines:?}");
    assert!(
        lines[1].contains("removed 1 least recently used entries"),
        "{lines:?}"
    );
    assert!(!capped.cache.entry(&first).exists());
    assert!(capped.cache.entry(&placed.slots[0].key).exists());
}

#[test]
fn clearing_removes_every_entry_and_dead_savers_leftovers_only() {
    let s = scene(1 << 30);
    save_version(&s, 1, 2);
    save_version(&s, 2, 2);
    let total: u64 = list(&s.cache.config.dir).iter().map(|e| e.bytes).sum();
    // A saver that died mid-copy, and one still at work (its lock held).
    let (dead, dead_lock) = s.cache.new_tmp("deadbeef").unwrap();
    std::fs::write(dead.join("half"), "x").unwrap();
    drop(dead_lock);
    let (live, _live_lock) = s.cache.new_tmp("cafecafe").unwrap();
    let cleared = clear(&s.cache.config.dir);
    assert_eq!(
        cleared,
        Cleared {
            entries: 2,
            bytes: total
        }
    );
    assert!(list(&s.cache.config.dir).is_empty());
    assert!(!dead.exists(), "a dead saver's directory goes");
    assert!(live.exists(), "a live saver's directory stays");
    assert_eq!(clear(&s.cache.config.dir), Cleared::default());
}

#[test]
fn two_savers_of_one_key_at_once_leave_one_whole_entry() {
    let s = scene(1 << 30);
    install(&s.first, 200, 100);
    install(&s.second, 200, 100);
    let placed = place(Some(&s.cache), &s.repo, &s.first, &[node_modules()]);
    let lines: Vec<Vec<String>> = std::thread::scope(|scope| {
        let savers: Vec<_> = [&s.first, &s.second]
            .into_iter()
            .map(|tree| {
                let (cache, repo, placed) = (&s.cache, &s.repo, &placed);
                scope.spawn(move || save(Some(cache), tree, repo, placed, SetupEnd::Passed))
            })
            .collect();
        savers.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let saved = lines
        .iter()
        .filter(|l| l[0].contains("miss, saved"))
        .count();
    assert_eq!(saved, 1, "{lines:?}");
    let files = std::fs::read_dir(s.cache.entry(&placed.slots[0].key).join("copy/pkg"));
    assert_eq!(files.unwrap().count(), 200);
}

#[test]
fn sizes_parse_and_print() {
    assert_eq!(parse_size("10GiB"), Ok(10 << 30));
    assert_eq!(parse_size("10G"), Ok(10 << 30));
    assert_eq!(parse_size("500 MiB"), Ok(500 << 20));
    assert_eq!(parse_size("1.5k"), Ok(1536));
    assert_eq!(parse_size("5GB"), Ok(5_000_000_000));
    assert_eq!(parse_size("4096"), Ok(4096));
    assert!(parse_size("lots").unwrap_err().contains("not a size"));
    assert!(parse_size("3 parsecs")
        .unwrap_err()
        .contains("unknown unit"));
    assert_eq!(format_size(512), "512 B");
    assert_eq!(format_size(1536), "1.5 KiB");
    assert_eq!(format_size(10 << 30), "10.0 GiB");
}
