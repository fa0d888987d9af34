//! One app's log on this host: a JSON [`Line`] a line, in numbered segment
//! files under `<data-dir>/logs/<app>/`. The newest is appended to; when it
//! is full a new one begins and the oldest go, so that the app stays under
//! its cap on this host, keeping its newest lines.
//!
//! The files are also where copying resumes: the last line of a container
//! that a file holds is the last one copied (no other record that a crash
//! could leave out of step with them). A line cut short by a crash is cut
//! off when the file is opened again.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use telemetry::{Line, Query};
use tokio::sync::broadcast;

/// The smallest segment, so that a tiny cap does not mean a file a line.
const MIN_SEGMENT: u64 = 64 * 1024;
/// Segments per cap: the log keeps between 3/4 of its cap and all of it.
const SEGMENTS: u64 = 4;
/// New lines held for readers that follow; a slower one is told what it missed.
const FOLLOW_BUFFER: usize = 64 * 1024;

/// The last line copied of a container: its time, and how many lines of
/// that same time were copied (Docker's times are to the nanosecond, but
/// two lines may still share one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) t: i64,
    pub(crate) same: u32,
}

impl Cursor {
    fn advance(cursor: &mut Option<Cursor>, t: i64) {
        match cursor {
            Some(c) if c.t == t => c.same += 1,
            Some(c) if c.t > t => {}
            _ => *cursor = Some(Cursor { t, same: 1 }),
        }
    }
}

/// A line as it was written: the line, and its JSON text (a followed
/// stream sends the text, not the line serialized again).
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) line: Line,
    /// The line's JSON, without its newline.
    pub(crate) json: Box<[u8]>,
}

/// An app's segment files.
pub(crate) struct AppLog {
    dir: PathBuf,
    cap: u64,
    segment_cap: u64,
    /// Segment numbers and sizes, oldest first; the last is appended to.
    segments: VecDeque<(u64, u64)>,
    writer: Option<BufWriter<File>>,
    /// Each container's last line copied, where known.
    cursors: HashMap<String, Cursor>,
    /// How many segments, newest first, have been read for cursors.
    scanned: usize,
    /// New lines for readers that follow: made for the first, dropped
    /// (with its buffer) once none is left.
    follow: Option<broadcast::Sender<Arc<Written>>>,
}

impl std::fmt::Debug for AppLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppLog").field("dir", &self.dir).finish()
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.log"))
}

impl AppLog {
    /// Opens (or makes) `dir`, cutting off a line a crash left unfinished.
    pub(crate) fn open(dir: PathBuf, cap: u64) -> std::io::Result<AppLog> {
        std::fs::create_dir_all(&dir)?;
        let mut numbers: Vec<u64> = std::fs::read_dir(&dir)?
            .filter_map(|entry| {
                let name = entry.ok()?.file_name();
                name.to_str()?.strip_suffix(".log")?.parse().ok()
            })
            .collect();
        numbers.sort_unstable();
        let mut segments = VecDeque::new();
        for n in numbers {
            let size = std::fs::metadata(segment_path(&dir, n))?.len();
            segments.push_back((n, size));
        }
        if let Some((n, size)) = segments.back_mut() {
            *size = cut_unfinished(&segment_path(&dir, *n))?;
        }
        Ok(AppLog {
            dir,
            cap,
            segment_cap: (cap / SEGMENTS).max(MIN_SEGMENT),
            segments,
            writer: None,
            cursors: HashMap::new(),
            scanned: 0,
            follow: None,
        })
    }

    /// Bytes kept on disk.
    pub(crate) fn size(&self) -> u64 {
        self.segments.iter().map(|(_, size)| size).sum()
    }

    /// The last line copied of `container`, read from the files the first
    /// time it is asked for.
    pub(crate) fn cursor(&mut self, container: &str) -> std::io::Result<Option<Cursor>> {
        while !self.cursors.contains_key(container) && self.scanned < self.segments.len() {
            let (n, _) = self.segments[self.segments.len() - 1 - self.scanned];
            self.scanned += 1;
            let mut found: HashMap<String, Option<Cursor>> = HashMap::new();
            for line in read_segment(&segment_path(&self.dir, n))? {
                if !line.container.is_empty() {
                    Cursor::advance(found.entry(line.container).or_default(), line.t);
                }
            }
            for (id, cursor) in found {
                if let Some(cursor) = cursor {
                    // A newer segment's word stands.
                    self.cursors.entry(id).or_insert(cursor);
                }
            }
        }
        Ok(self.cursors.get(container).copied())
    }

    /// Appends `lines` (in the order they came), starting a new segment and
    /// dropping the oldest as the cap says, and hands them to followers.
    pub(crate) fn append(&mut self, lines: Vec<Line>) -> std::io::Result<()> {
        if self
            .follow
            .as_ref()
            .is_some_and(|f| f.receiver_count() == 0)
        {
            self.follow = None;
        }
        let followed = self.follow.is_some();
        for line in lines {
            let mut text = serde_json::to_vec(&line).map_err(std::io::Error::other)?;
            text.push(b'\n');
            self.write(&text)?;
            if !line.container.is_empty() {
                match self.cursors.get_mut(&line.container) {
                    Some(cursor) => {
                        let mut moved = Some(*cursor);
                        Cursor::advance(&mut moved, line.t);
                        *cursor = moved.unwrap_or(*cursor);
                    }
                    None => {
                        let cursor = Cursor { t: line.t, same: 1 };
                        self.cursors.insert(line.container.clone(), cursor);
                    }
                }
            }
            if followed {
                text.pop();
                let json = text.into_boxed_slice();
                if let Some(follow) = &self.follow {
                    let _ = follow.send(Arc::new(Written { line, json }));
                }
            }
        }
        if let Some(writer) = self.writer.as_mut() {
            writer.flush()?;
        }
        Ok(())
    }

    fn write(&mut self, text: &[u8]) -> std::io::Result<()> {
        let full = self
            .segments
            .back()
            .is_none_or(|(_, size)| *size > 0 && size + text.len() as u64 > self.segment_cap);
        if full {
            if let Some(mut writer) = self.writer.take() {
                writer.flush()?;
            }
            let n = self.segments.back().map_or(1, |(n, _)| n + 1);
            self.segments.push_back((n, 0));
            // What is dropped is the oldest: the cap holds once the new one fills.
            while self.segments.len() > 1 && self.size() + self.segment_cap > self.cap {
                let Some((old, _)) = self.segments.pop_front() else {
                    break;
                };
                match std::fs::remove_file(segment_path(&self.dir, old)) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(error),
                }
            }
            self.scanned = self.scanned.min(self.segments.len());
        }
        if self.writer.is_none() {
            let (n, _) = *self.segments.back().expect("a segment was just made");
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(segment_path(&self.dir, n))?;
            self.writer = Some(BufWriter::with_capacity(64 * 1024, file));
        }
        let writer = self.writer.as_mut().expect("opened above");
        writer.write_all(text)?;
        if let Some((_, size)) = self.segments.back_mut() {
            *size += text.len() as u64;
        }
        Ok(())
    }

    /// The newest `query.lines` kept lines that `query` selects, oldest first.
    pub(crate) fn read(&mut self, query: &Query) -> std::io::Result<Vec<Line>> {
        if let Some(writer) = self.writer.as_mut() {
            writer.flush()?;
        }
        let wanted = query.lines.min(Query::MAX_LINES);
        let mut found = Vec::new();
        for (n, _) in self.segments.iter().rev() {
            if found.len() >= wanted {
                break;
            }
            let lines = read_segment(&segment_path(&self.dir, *n))?;
            let before = found.len();
            found.extend(
                lines
                    .into_iter()
                    .rev()
                    .filter(|line| query.matches(line))
                    .take(wanted - before),
            );
        }
        found.reverse();
        // Copied by several tasks, a file's lines are nearly in time order: sort them.
        found.sort_by_key(|line| line.t);
        Ok(found)
    }

    /// The kept lines `query` selects and every new line from now on, with
    /// nothing between the two lost or sent twice.
    pub(crate) fn read_and_follow(
        &mut self,
        query: &Query,
    ) -> std::io::Result<(Vec<Line>, broadcast::Receiver<Arc<Written>>)> {
        let receiver = self
            .follow
            .get_or_insert_with(|| broadcast::channel(FOLLOW_BUFFER).0)
            .subscribe();
        Ok((self.read(query)?, receiver))
    }
}

/// Every whole line of a segment that parses (a foreign line is skipped).
fn read_segment(path: &Path) -> std::io::Result<Vec<Line>> {
    let mut text = Vec::new();
    match File::open(path) {
        Ok(mut file) => {
            file.read_to_end(&mut text)?;
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    }
    Ok(text
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .filter_map(|line| serde_json::from_slice(line).ok())
        .collect())
}

/// Cuts `path` after its last newline; returns its size.
fn cut_unfinished(path: &Path) -> std::io::Result<u64> {
    let mut file = OpenOptions::new().read(true).write(true).open(path)?;
    let size = file.metadata()?.len();
    let mut end = size;
    let mut chunk = vec![0u8; 4096];
    while end > 0 {
        let start = end.saturating_sub(chunk.len() as u64);
        let len = (end - start) as usize;
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut chunk[..len])?;
        if let Some(at) = chunk[..len].iter().rposition(|&b| b == b'\n') {
            let keep = start + at as u64 + 1;
            if keep < size {
                file.set_len(keep)?;
            }
            return Ok(keep);
        }
        end = start;
    }
    file.set_len(0)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use telemetry::Source;

    fn line(t: i64, container: &str, message: &str) -> Line {
        Line {
            t,
            instance: "web.1".into(),
            release: 1,
            source: Source::Out,
            container: container.into(),
            message: message.into(),
        }
    }

    fn temp() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("paz-applog-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_cap_holds_and_the_newest_lines_stay() {
        let dir = temp();
        let cap = 4 * MIN_SEGMENT;
        let mut log = AppLog::open(dir.clone(), cap).unwrap();
        let text = "x".repeat(200);
        for t in 0..10_000 {
            log.append(vec![line(t, "c1", &text)]).unwrap();
            assert!(log.size() <= cap, "{} bytes kept", log.size());
        }
        let on_disk: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(
            on_disk <= cap && on_disk >= cap / 2,
            "{on_disk} bytes on disk"
        );
        let newest = log
            .read(&Query {
                lines: 3,
                ..Query::default()
            })
            .unwrap();
        let times: Vec<i64> = newest.iter().map(|l| l.t).collect();
        assert_eq!(times, [9997, 9998, 9999]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn copying_resumes_after_the_last_line_the_files_hold() {
        let dir = temp();
        let mut log = AppLog::open(dir.clone(), 1 << 20).unwrap();
        log.append(vec![
            line(5, "c1", "a"),
            line(7, "c1", "b"),
            line(7, "c1", "c"),
        ])
        .unwrap();
        log.append(vec![line(6, "c2", "d")]).unwrap();
        drop(log);
        // A crash mid-line: the half line is cut off when it opens again.
        let path = segment_path(&dir, 1);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"t\":8,\"inst").unwrap();
        drop(file);
        let mut log = AppLog::open(dir.clone(), 1 << 20).unwrap();
        assert_eq!(log.cursor("c1").unwrap(), Some(Cursor { t: 7, same: 2 }));
        assert_eq!(log.cursor("c2").unwrap(), Some(Cursor { t: 6, same: 1 }));
        assert_eq!(log.cursor("c3").unwrap(), None);
        log.append(vec![line(9, "c1", "e")]).unwrap();
        let all = log
            .read(&Query {
                lines: 100,
                ..Query::default()
            })
            .unwrap();
        let messages: Vec<&str> = all.iter().map(|l| l.message.as_str()).collect();
        assert_eq!(messages, ["a", "d", "b", "c", "e"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
