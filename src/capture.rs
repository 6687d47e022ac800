//! Bounded capture of a sandbox's stdout and stderr.
//!
//! Whatever the sandbox prints, the driver keeps at most `limit` bytes per
//! stream: the first half (head) and the last half (tail), with a count of
//! the bytes dropped between them. Memory stays bounded however much is
//! printed; the supervisor decides separately when too much was printed.

use std::collections::VecDeque;
use std::io::{self, Read};

/// One captured stream: head and tail of what was printed, and how many
/// bytes were dropped between them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedStream {
    pub head: Vec<u8>,
    pub tail: Vec<u8>,
    /// Bytes dropped between `head` and `tail`.
    pub dropped: u64,
}

impl CapturedStream {
    /// Total bytes the sandbox wrote to this stream.
    pub fn total(&self) -> u64 {
        self.head.len() as u64 + self.dropped + self.tail.len() as u64
    }

    /// The marker placed between head and tail when bytes were dropped.
    pub fn marker(dropped: u64) -> String {
        format!("\n[... rlm-sandbox: {dropped} bytes dropped ...]\n")
    }

    /// Head, marker (if anything was dropped) and tail as text; invalid
    /// UTF-8 is replaced, never an error.
    pub fn render(&self) -> String {
        let mut out = String::from_utf8_lossy(&self.head).into_owned();
        if self.dropped > 0 {
            out.push_str(&Self::marker(self.dropped));
        }
        out.push_str(&String::from_utf8_lossy(&self.tail));
        out
    }
}

/// Keeps the first `limit / 2` bytes and the last `limit - limit / 2` bytes
/// written to it.
#[derive(Debug)]
pub struct BoundedCapture {
    head_limit: usize,
    tail_limit: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    dropped: u64,
}

impl BoundedCapture {
    pub fn new(limit: usize) -> Self {
        let head_limit = limit / 2;
        BoundedCapture {
            head_limit,
            tail_limit: limit - head_limit,
            head: Vec::new(),
            tail: VecDeque::new(),
            dropped: 0,
        }
    }

    /// Bytes seen so far, kept or dropped.
    pub fn total(&self) -> u64 {
        self.head.len() as u64 + self.dropped + self.tail.len() as u64
    }

    pub fn push(&mut self, mut data: &[u8]) {
        let room = self.head_limit - self.head.len();
        let take = room.min(data.len());
        self.head.extend_from_slice(&data[..take]);
        data = &data[take..];
        if data.is_empty() {
            return;
        }
        if data.len() >= self.tail_limit {
            // The new data alone fills the tail: everything before it goes.
            let skip = data.len() - self.tail_limit;
            self.dropped += (self.tail.len() + skip) as u64;
            self.tail.clear();
            self.tail.extend(&data[skip..]);
            return;
        }
        let overflow = (self.tail.len() + data.len()).saturating_sub(self.tail_limit);
        self.tail.drain(..overflow);
        self.dropped += overflow as u64;
        self.tail.extend(data);
    }

    pub fn finish(self) -> CapturedStream {
        CapturedStream {
            head: self.head,
            tail: self.tail.into(),
            dropped: self.dropped,
        }
    }
}

/// A child's stdout or stderr pipe as a plain file, so both streams have
/// one type.
pub fn pipe_file(pipe: impl Into<std::os::fd::OwnedFd>) -> std::fs::File {
    std::fs::File::from(pipe.into())
}

/// A thread draining one pipe into a shared [`BoundedCapture`], so the
/// supervisor can take what was captured even if some process still holds
/// the pipe's write end.
pub struct Reader {
    shared: std::sync::Arc<std::sync::Mutex<BoundedCapture>>,
    done: std::sync::mpsc::Receiver<()>,
}

impl Reader {
    /// Starts draining `pipe`; `on_bytes(n)` is called with the size of
    /// every chunk read (for the output ceiling shared by both streams).
    pub fn spawn<R: Read + Send + 'static>(
        mut pipe: R,
        limit: usize,
        on_bytes: impl Fn(usize) + Send + 'static,
    ) -> Self {
        let shared = std::sync::Arc::new(std::sync::Mutex::new(BoundedCapture::new(limit)));
        let (tx, done) = std::sync::mpsc::channel();
        let sink = shared.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if let Ok(mut c) = sink.lock() {
                            c.push(&buf[..n]);
                        }
                        on_bytes(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        Reader { shared, done }
    }

    /// Waits up to `wait` for the end of the stream, then takes what was
    /// captured (the reader thread, if still blocked, keeps only its buffer).
    pub fn finish(self, wait: std::time::Duration) -> CapturedStream {
        let _ = self.done.recv_timeout(wait);
        let mut guard = match self.shared.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        std::mem::replace(&mut *guard, BoundedCapture::new(0)).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_limit() {
        let mut c = BoundedCapture::new(10);
        c.push(b"abc");
        c.push(b"de");
        let s = c.finish();
        assert_eq!(s.head, b"abcde");
        assert_eq!(s.tail, b"");
        assert_eq!(s.dropped, 0);
        assert_eq!(s.render(), "abcde");
    }

    #[test]
    fn keeps_head_and_tail_and_counts_the_middle() {
        let mut c = BoundedCapture::new(6);
        for chunk in [&b"0123"[..], b"4567", b"89"] {
            c.push(chunk);
        }
        let s = c.finish();
        assert_eq!(s.head, b"012");
        assert_eq!(s.tail, b"789");
        assert_eq!(s.dropped, 4);
        assert_eq!(s.total(), 10);
        assert_eq!(
            s.render(),
            "012\n[... rlm-sandbox: 4 bytes dropped ...]\n789"
        );
    }

    #[test]
    fn one_huge_write_keeps_its_own_tail() {
        let mut c = BoundedCapture::new(4);
        c.push(b"abcdefghij");
        let s = c.finish();
        assert_eq!(
            (s.head.as_slice(), s.tail.as_slice(), s.dropped),
            (&b"ab"[..], &b"ij"[..], 6)
        );
    }

    #[test]
    fn reader_collects_a_pipe_and_counts_bytes() {
        let (r, mut w) = std::io::pipe().expect("pipe");
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        let reader = Reader::spawn(r, 8, move |n| {
            counter.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        });
        std::io::Write::write_all(&mut w, b"hello, bounded world").expect("write");
        drop(w);
        let s = reader.finish(std::time::Duration::from_secs(5));
        assert_eq!(
            (s.head.as_slice(), s.tail.as_slice(), s.dropped),
            (&b"hell"[..], &b"orld"[..], 12)
        );
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 20);
    }
}
