//! Winnowed fingerprints (Schleimer, Wilkerson & Aiken, 2003) of gear
//! hashes: of every `window` consecutive shingle hashes the smallest
//! (rightmost on ties) is kept, so any common substring of at least
//! `window + SHINGLE - 1` bytes shares a fingerprint.
//!
//! The minimum of a window is almost always small: of `window` random
//! hashes, one falls below `CANDIDATES / window` of the range with
//! probability about 1 - e^-CANDIDATES. So only hashes below that
//! threshold ("candidates", a few per window, picked out without a branch)
//! enter a monotonic queue, and the windows' minima are read off the queue
//! at the few points where it changes. A window holding no candidate (rare
//! in text, common in long runs of one repeated pattern) is winnowed over
//! all its hashes. The output is that of winnowing by definition
//! (`winnowing_matches_its_definition`), at about the cost of hashing.

/// Bytes per shingle: a u64 gear hash holds exactly the last 64 bytes.
pub const SHINGLE: usize = 64;

/// Largest winnowing window.
pub(crate) const MAX_WINDOW: usize = 255;

/// Expected candidates per window: a window without one costs a rescan,
/// each candidate a queue step.
const CANDIDATES: u64 = 3;

/// Shingle hashes computed per block.
const BLOCK: usize = 4096;

/// Random 64-bit values, one per byte, from splitmix64 (fixed seed, so
/// indexes are reproducible).
const fn gear_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut state: u64 = 0x005E_ED0F_EC40;
    let mut i = 0;
    while i < 256 {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        t[i] = z ^ (z >> 31);
        i += 1;
    }
    t
}
static GEAR: [u64; 256] = gear_table();

/// The gear hash after one more byte: one shift, one add, one lookup.
fn roll(h: u64, b: u8) -> u64 {
    (h << 1).wrapping_add(GEAR[b as usize])
}

/// Rolls `h` over `bytes`, writing the hash after each byte to `out` (as
/// long as `bytes`) and the index of each candidate (below `threshold`)
/// to `candidates`; returns the last hash and the number of candidates.
/// Four bytes per step: the serial dependency is one shift and one add per
/// step, the hashes in between are computed beside it. Candidates are
/// kept without a branch: every index is written, and the count advances
/// only past a candidate's.
///
/// Inlined: called once per block, but as a separate function its seventh
/// argument lives on the stack and is reloaded on every step (-20%).
#[inline(always)]
fn hash_into(
    mut h: u64,
    bytes: &[u8],
    out: &mut [u64],
    threshold: u64,
    candidates: &mut [u32; BLOCK],
) -> (u64, usize) {
    let mut found = 0;
    let mut idx = 0usize;
    let mut quads = bytes.chunks_exact(4);
    let mut slots = out.chunks_exact_mut(4);
    for (quad, slot) in (&mut quads).zip(&mut slots) {
        let [g0, g1, g2, g3] = [0, 1, 2, 3].map(|i| GEAR[quad[i] as usize]);
        let h1 = (h << 1).wrapping_add(g0);
        let h2 = (h << 2).wrapping_add((g0 << 1).wrapping_add(g1));
        let t3 = (g0 << 2).wrapping_add(g1 << 1).wrapping_add(g2);
        let h3 = (h << 3).wrapping_add(t3);
        let h4 = (h << 4).wrapping_add((t3 << 1).wrapping_add(g3));
        slot.copy_from_slice(&[h1, h2, h3, h4]);
        for v in [h1, h2, h3, h4] {
            candidates[found & (BLOCK - 1)] = idx as u32;
            found += usize::from(v < threshold);
            idx += 1;
        }
        h = h4;
    }
    for (&b, slot) in quads.remainder().iter().zip(slots.into_remainder()) {
        h = roll(h, b);
        *slot = h;
        candidates[found & (BLOCK - 1)] = idx as u32;
        found += usize::from(h < threshold);
        idx += 1;
    }
    (h, found)
}

/// Calls `emit(end, hash)` for every winnowed fingerprint of `data`, in
/// order, where `end` is the index of the last byte of its shingle: for
/// every window of `window` consecutive shingle hashes its smallest
/// (rightmost on ties), each time that choice moves.
pub(crate) fn winnow(data: &[u8], window: usize, emit: impl FnMut(usize, u64)) {
    let w = window.clamp(1, MAX_WINDOW);
    let Some(total) = (data.len() + 1).checked_sub(SHINGLE) else {
        return;
    };
    let mut h: u64 = 0;
    for &b in &data[..SHINGLE - 1] {
        h = roll(h, b);
    }
    let threshold = (u64::MAX / w as u64).saturating_mul(CANDIDATES);
    let mut state = Winnower {
        w,
        queue: Queue::new(),
        dense: Some(Dense {
            min: (u64::MAX, 0),
            expires: w,
        }),
        next: 0,
        chosen: None,
        emit,
    };
    // `hashes[i]` is the hash of shingle `base + i`; the last w - 1 hashes
    // of a block are kept in front of the next one, so a window is always
    // one slice.
    let mut hashes = vec![0u64; MAX_WINDOW + BLOCK];
    let mut candidates = [0u32; BLOCK];
    let mut len = 0;
    let mut next = 0;
    while next < total {
        let keep = len.min(w - 1);
        hashes.copy_within(len - keep..len, 0);
        let base = next - keep;
        let n = BLOCK.min(total - next);
        let bytes = &data[next + SHINGLE - 1..next + SHINGLE - 1 + n];
        let fresh = &mut hashes[keep..keep + n];
        let (last, found) = hash_into(h, bytes, fresh, threshold, &mut candidates);
        h = last;
        len = keep + n;
        let block = Block {
            hashes: &hashes[..len],
            base,
        };
        for &i in &candidates[..found] {
            let j = next + i as usize;
            state.advance(&block, j);
            state.arrive(j, block.hashes[j - base]);
        }
        state.advance(&block, next + n);
        next += n;
    }
}

/// The hashes of shingles `base ..` (at least the last w - 1 before the
/// current block, then the block).
struct Block<'a> {
    hashes: &'a [u64],
    base: usize,
}

impl Block<'_> {
    fn at(&self, j: usize) -> u64 {
        self.hashes[j - self.base]
    }

    /// The rightmost minimum of the window of `w` hashes ending at `j`.
    fn window_min(&self, j: usize, w: usize) -> (u64, usize) {
        let first = (j + 1).saturating_sub(w);
        let slice = &self.hashes[first - self.base..=j - self.base];
        let at = first + rightmost_min(slice);
        (self.at(at), at)
    }
}

/// The candidates of a window (at most `MAX_WINDOW`): a ring, since they
/// leave at the front (expired) and the back (beaten).
struct Queue {
    items: [(usize, u64); QUEUE],
    head: usize,
    len: usize,
}

const QUEUE: usize = (MAX_WINDOW + 1).next_power_of_two();

impl Queue {
    fn new() -> Self {
        Queue {
            items: [(0, 0); QUEUE],
            head: 0,
            len: 0,
        }
    }

    fn front(&self) -> Option<(usize, u64)> {
        (self.len > 0).then(|| self.items[self.head])
    }

    fn back(&self) -> Option<(usize, u64)> {
        (self.len > 0).then(|| self.items[(self.head + self.len - 1) & (QUEUE - 1)])
    }

    fn pop_front(&mut self) {
        self.head = (self.head + 1) & (QUEUE - 1);
        self.len -= 1;
    }

    fn pop_back(&mut self) {
        self.len -= 1;
    }

    /// Room is certain: a window holds at most `MAX_WINDOW` candidates and
    /// expired ones leave first.
    fn push_back(&mut self, item: (usize, u64)) {
        self.items[(self.head + self.len) & (QUEUE - 1)] = item;
        self.len += 1;
    }
}

/// Winnowing over all hashes, for windows that hold no candidate.
#[derive(Clone, Copy)]
struct Dense {
    /// The current window's rightmost minimum (hash, shingle).
    min: (u64, usize),
    /// The first window that no longer holds `min`.
    expires: usize,
}

struct Winnower<F> {
    w: usize,
    /// Candidates of the current window that may still become its
    /// minimum: positions and hashes both increasing, the minimum first.
    queue: Queue,
    /// Set while the current window holds no candidate (and before the
    /// first candidate).
    dense: Option<Dense>,
    /// The first window (by its last shingle) not yet winnowed.
    next: usize,
    /// The last fingerprint emitted.
    chosen: Option<usize>,
    emit: F,
}

impl<F: FnMut(usize, u64)> Winnower<F> {
    /// Emits the minimum `(h, j)` of a full window unless already emitted.
    fn choose(&mut self, (h, j): (u64, usize)) {
        if self.chosen != Some(j) {
            self.chosen = Some(j);
            (self.emit)(j + SHINGLE - 1, h);
        }
    }

    /// Candidate `(j, h)` enters (windows before `j` are done): it ends
    /// the dense stretch and drops the queued candidates it beats.
    fn arrive(&mut self, j: usize, h: u64) {
        self.dense = None;
        if self.queue.front().is_some_and(|(f, _)| f + self.w <= j) {
            self.queue.pop_front();
        }
        while self.queue.back().is_some_and(|(_, b)| b >= h) {
            self.queue.pop_back();
        }
        self.queue.push_back((j, h));
        if j + 1 >= self.w {
            if let Some((f, fh)) = self.queue.front() {
                self.choose((fh, f));
            }
        }
        self.next = j + 1;
    }

    /// Winnows the windows ending before `end`, where no candidate
    /// arrives.
    fn advance(&mut self, block: &Block, end: usize) {
        while self.next < end {
            if let Some(dense) = self.dense {
                self.dense = Some(self.advance_dense(block, dense, end));
                return;
            }
            let Some((f, fh)) = self.queue.front() else {
                // Not reached (the stretch is dense whenever the queue is
                // empty); winnowing by definition from here stays right.
                self.enter_dense(self.next, block);
                continue;
            };
            // Until the front expires, every window's minimum is the front.
            let expires = f + self.w;
            if end.min(expires) >= self.w {
                self.choose((fh, f));
            }
            if expires >= end {
                self.next = end;
                return;
            }
            self.queue.pop_front();
            match self.queue.front() {
                Some((g, gh)) => {
                    self.choose((gh, g));
                    self.next = expires + 1;
                }
                None => self.enter_dense(expires, block),
            }
        }
    }

    /// Window `j` holds no candidate: its minimum by definition, and dense
    /// winnowing from the next window on.
    fn enter_dense(&mut self, j: usize, block: &Block) {
        let min = block.window_min(j, self.w);
        if j + 1 >= self.w {
            self.choose(min);
        }
        self.dense = Some(Dense {
            min,
            expires: min.1 + self.w,
        });
        self.next = j + 1;
    }

    /// Winnowing by definition over the windows `self.next .. end`, none
    /// of which holds a candidate (or before the first candidate).
    fn advance_dense(&mut self, block: &Block, mut d: Dense, end: usize) -> Dense {
        let w = self.w;
        for j in self.next..end {
            let h = block.at(j);
            if h <= d.min.0 {
                d.min = (h, j);
                d.expires = j + w;
                if j + 1 >= w {
                    self.choose(d.min);
                }
            } else if j == d.expires {
                d.min = block.window_min(j, w);
                d.expires = d.min.1 + w;
                self.choose(d.min);
            } else if j + 1 == w {
                self.choose(d.min);
            }
        }
        self.next = end;
        d
    }
}

/// The index of the last smallest value of `window` (not empty): the
/// minimum with four independent accumulators (no serial compare chain),
/// then its last occurrence.
fn rightmost_min(window: &[u64]) -> usize {
    let mut lows = [u64::MAX; 4];
    let mut quads = window.chunks_exact(4);
    for quad in &mut quads {
        for (low, &v) in lows.iter_mut().zip(quad) {
            *low = (*low).min(v);
        }
    }
    let low = quads
        .remainder()
        .iter()
        .fold(lows.iter().fold(u64::MAX, |a, &b| a.min(b)), |a, &b| {
            a.min(b)
        });
    window.iter().rposition(|&v| v == low).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Winnowing by definition: the rightmost minimum of every window,
    /// emitted when it moves.
    fn winnow_reference(data: &[u8], w: usize) -> Vec<(usize, u64)> {
        let mut hashes = Vec::new();
        let mut h: u64 = 0;
        for (i, &b) in data.iter().enumerate() {
            h = roll(h, b);
            if i + 1 >= SHINGLE {
                hashes.push(h);
            }
        }
        let mut out: Vec<(usize, u64)> = Vec::new();
        for end in w..=hashes.len() {
            let win = &hashes[end - w..end];
            let low = win.iter().copied().min().unwrap_or(u64::MAX);
            let at = end - w + win.iter().rposition(|&v| v == low).unwrap_or(0);
            if out.last().map(|&(e, _)| e) != Some(at + SHINGLE - 1) {
                out.push((at + SHINGLE - 1, low));
            }
        }
        out
    }

    fn random(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (state >> 56) as u8
            })
            .collect()
    }

    #[test]
    fn winnowing_matches_its_definition() {
        let random20k = random(20_000, 7);
        // Repetitive data: equal hashes, where the rightmost rule matters,
        // and long stretches without a candidate.
        let mut repetitive = vec![b' '; 3000];
        repetitive.extend(b"abcabcabc".repeat(400));
        repetitive.extend(random20k[..2000].iter());
        // Stretches of every kind, across block boundaries.
        let mut mixed = Vec::new();
        for (k, chunk) in random(60_000, 9).chunks(5_000).enumerate() {
            match k % 4 {
                0 => mixed.extend(chunk),
                1 => mixed.extend(b"0123456789abcdef".repeat(300)),
                2 => mixed.extend(vec![b'x'; 4_500 + k]),
                _ => mixed.extend(&chunk[..700 + 37 * k]),
            }
        }
        let inputs: [&[u8]; 6] = [
            &random20k,
            &repetitive,
            &mixed,
            &random20k[..100],
            &random20k[..63],
            &random20k[..64],
        ];
        for data in inputs {
            for w in [1, 2, 6, 7, 8, 9, 100, 254, 255] {
                let mut got = Vec::new();
                winnow(data, w, |end, h| got.push((end, h)));
                assert_eq!(got, winnow_reference(data, w), "w {w}, len {}", data.len());
            }
        }
    }

    /// Random mixtures of random bytes and short repeated patterns (where
    /// windows without candidates occur), at random lengths and windows.
    #[test]
    fn winnowing_matches_its_definition_on_random_mixtures() {
        let mut seed = 11u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for round in 0..40 {
            let mut data = Vec::new();
            while data.len() < 12_000 + 500 * round {
                let len = 1 + next(3_000) as usize;
                match next(3) {
                    0 => data.extend(random(len, next(1 << 30))),
                    1 => {
                        let period = random(1 + next(20) as usize, next(1 << 30));
                        data.extend(period.iter().cycle().take(len));
                    }
                    _ => data.extend(std::iter::repeat(next(256) as u8).take(len)),
                }
            }
            let w = 1 + next(MAX_WINDOW as u64) as usize;
            let mut got = Vec::new();
            winnow(&data, w, |end, h| got.push((end, h)));
            assert_eq!(got, winnow_reference(&data, w), "round {round}, w {w}");
        }
    }
}
