//! Reading a log's bytes back into frames, and telling an unfinished last
//! write (a torn tail: never acknowledged, dropped) from damage (a bad
//! frame with intact frames after it: acknowledged work may follow, so
//! nothing is dropped without `aam-manager --recover`).
//!
//! A frame is intact when its declared length fits in the file, its body
//! matches its CRC and is not empty (aam never writes an empty frame, and
//! a region of zeros, which a crash can leave at the end of a file, would
//! otherwise read as a run of empty frames).

use super::{decode_items, Item};
use crate::StoreError;
use std::path::Path;

/// What starts at one offset of a log.
pub(crate) enum At {
    /// An intact frame: its items, and the offset after it.
    Frame(Vec<Item>, usize),
    /// An intact frame holding an item this version does not know.
    Unknown,
    /// No intact frame.
    Bad,
}

/// The frame at `at`, if an intact one starts there.
pub(crate) fn frame_at(bytes: &[u8], at: usize) -> At {
    let Some(header) = bytes.get(at..).and_then(|b| b.get(..8)) else {
        return At::Bad;
    };
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let end = at + 8 + len;
    let Some(body) = bytes.get(at + 8..end) else {
        return At::Bad;
    };
    if len == 0 || crc32fast::hash(body) != crc {
        return At::Bad;
    }
    match decode_items(body) {
        Some(items) => At::Frame(items, end),
        None => At::Unknown,
    }
}

/// Whether a log's rest is all zeros: the room it grew into (`GROWTH`),
/// or what a crash left of a write that never reached the disk.
fn zeros(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0)
}

/// The first offset after `from` where an intact frame starts.
fn next_intact(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(8)).find(|&at| !matches!(frame_at(bytes, at), At::Bad))
}

/// Why a log cannot be replayed as it is.
#[derive(Debug, PartialEq)]
pub(crate) enum Damage {
    /// No intact frame at `at`, but one at `next` (None: the log read
    /// back differs from what was written).
    Corrupt { at: usize, next: Option<usize> },
    /// An intact frame this version cannot read (a newer aam wrote it).
    Unknown { at: usize },
}

impl Damage {
    pub(crate) fn into_error(self, path: &Path) -> StoreError {
        match self {
            Damage::Corrupt { at, next } => StoreError::DamagedLog {
                path: path.to_path_buf(),
                offset: at as u64,
                next_intact: next.map(|n| n as u64),
            },
            Damage::Unknown { at } => StoreError::Corrupt(format!(
                "{} holds an entry at byte {at} this aam-manager cannot read (written by a newer one?); it was left as it is",
                path.display()
            )),
        }
    }
}

/// The frames of a log to replay, and the bytes they take: what follows
/// them, holding no intact frame, is a torn tail.
pub(crate) fn replayable(bytes: &[u8]) -> Result<(Vec<Vec<Item>>, usize), Damage> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            At::Frame(items, next) => {
                frames.push(items);
                at = next;
            }
            At::Unknown => return Err(Damage::Unknown { at }),
            // The room the log grew into, not yet written.
            At::Bad if zeros(&bytes[at..]) => break,
            At::Bad => match next_intact(bytes, at + 1) {
                Some(next) => {
                    return Err(Damage::Corrupt {
                        at,
                        next: Some(next),
                    })
                }
                None => break,
            },
        }
    }
    Ok((frames, at))
}

/// What `recover` can keep of a damaged log: the byte ranges of its intact
/// frames, and those it could not read, in order.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Salvage {
    pub kept: Vec<std::ops::Range<usize>>,
    pub lost: Vec<std::ops::Range<usize>>,
}

/// Every intact frame of a log, before and after any damage.
pub(crate) fn salvage(bytes: &[u8]) -> Result<Salvage, Damage> {
    let mut out = Salvage::default();
    let mut at = 0;
    while at < bytes.len() {
        match frame_at(bytes, at) {
            At::Frame(_, next) => {
                out.kept.push(at..next);
                at = next;
            }
            At::Unknown => return Err(Damage::Unknown { at }),
            At::Bad if zeros(&bytes[at..]) => break,
            At::Bad => {
                let next = next_intact(bytes, at + 1).unwrap_or(bytes.len());
                out.lost.push(at..next);
                at = next;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::push_frame;
    use super::super::testing::{body, log};
    use super::*;

    fn replayed(bytes: &[u8]) -> Result<(usize, usize), Damage> {
        replayable(bytes).map(|(frames, valid)| (frames.len(), valid))
    }

    #[test]
    fn an_unfinished_last_frame_is_a_torn_tail() {
        let (mut bytes, _) = log(3);
        let whole = bytes.len();
        // Header and part of the body; part of the header; a bad checksum
        // on a frame that ends at the end of the file; zeros.
        let mut next = Vec::new();
        push_frame(&mut next, &body(9));
        for tail in [
            next[..12].to_vec(),
            next[..5].to_vec(),
            {
                let mut t = next.clone();
                *t.last_mut().unwrap() ^= 1;
                t
            },
            vec![0u8; 4096],
        ] {
            bytes.truncate(whole);
            bytes.extend_from_slice(&tail);
            assert_eq!(replayed(&bytes), Ok((3, whole)), "tail {tail:?}");
        }
    }

    #[test]
    fn a_bad_frame_followed_by_intact_ones_is_damage_not_a_tail() {
        let (mut bytes, starts) = log(5);
        bytes[starts[2] + 10] ^= 0x40;
        assert_eq!(
            replayed(&bytes),
            Err(Damage::Corrupt {
                at: starts[2],
                next: Some(starts[3])
            })
        );
        // A length field hit, so the frame seems to run past the end.
        let (mut bytes, starts) = log(5);
        bytes[starts[1]] = 0x7f;
        assert_eq!(
            replayed(&bytes),
            Err(Damage::Corrupt {
                at: starts[1],
                next: Some(starts[2])
            })
        );
    }

    #[test]
    fn salvage_keeps_every_intact_frame_around_the_damage() {
        let (mut bytes, starts) = log(6);
        bytes[starts[1] + 9] ^= 1;
        bytes[starts[4] + 9] ^= 1;
        // An unfinished write from before appends cut back on errors,
        // followed by frames appended after it.
        let mut torn = Vec::new();
        push_frame(&mut torn, &body(7));
        let torn_at = bytes.len();
        bytes.extend_from_slice(&torn[..10]);
        let after = bytes.len();
        push_frame(&mut bytes, &body(8));
        let s = salvage(&bytes).unwrap();
        assert_eq!(
            s.lost,
            vec![starts[1]..starts[2], starts[4]..starts[5], torn_at..after]
        );
        let kept: Vec<usize> = s.kept.iter().map(|r| r.start).collect();
        assert_eq!(
            kept,
            vec![starts[0], starts[2], starts[3], starts[5], after]
        );
    }
}
