//! Byte classes for the entropy detector, 16 bytes at a time with SSE2
//! (part of every x86_64 CPU; 32 with AVX2 where the CPU has it), by table
//! elsewhere: which bytes can belong to a base64-like token, and which
//! character classes a token mixes.

/// Base64 (standard and URL-safe) characters, without the `=` padding so
/// that `key=value` splits into two tokens.
const fn token_table() -> [bool; 256] {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric() || c == b'+' || c == b'/' || c == b'_' || c == b'-';
        b += 1;
    }
    t
}
static TOKEN: [bool; 256] = token_table();

/// Whether `b` can be part of a base64-like token.
pub(crate) fn is_token_byte(b: u8) -> bool {
    TOKEN[b as usize]
}

pub(crate) const DIGIT: u8 = 1;
pub(crate) const UPPER: u8 = 2;
pub(crate) const LOWER: u8 = 4;
/// Anything but `0-9a-fA-F`.
pub(crate) const NOT_HEX: u8 = 8;

const fn class_table() -> [u8; 256] {
    let mut t = [NOT_HEX; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_digit() {
            DIGIT
        } else if c.is_ascii_uppercase() {
            UPPER | if c <= b'F' { 0 } else { NOT_HEX }
        } else if c.is_ascii_lowercase() {
            LOWER | if c <= b'f' { 0 } else { NOT_HEX }
        } else {
            NOT_HEX
        };
        b += 1;
    }
    t
}
static CLASS: [u8; 256] = class_table();

/// The classes (`DIGIT | UPPER | LOWER | NOT_HEX`) present in `bytes`.
/// Tokens are checked by the tens of thousands in code and logs (ids,
/// hashes, paths), so those of 16 bytes or more are classified 16 at a
/// time, the last 16 overlapping the previous ones.
pub(crate) fn classes(bytes: &[u8]) -> u8 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= 16 {
        return sse2::classes(bytes);
    }
    classes_by_table(bytes)
}

fn classes_by_table(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0, |seen, &b| seen | CLASS[b as usize])
}

/// Bit `i` set when `chunk[i]` is a token byte.
pub(crate) fn token_mask(chunk: &[u8; 64]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2 (checked just above).
            return unsafe { avx2::token_mask(chunk) };
        }
        sse2::token_mask(chunk)
    }
    #[cfg(not(target_arch = "x86_64"))]
    chunk
        .iter()
        .enumerate()
        .fold(0, |m, (i, &b)| m | (u64::from(TOKEN[b as usize]) << i))
}

/// [`token_mask`] of up to 64 bytes (the end of the text).
pub(crate) fn token_mask_partial(bytes: &[u8]) -> u64 {
    let mut chunk = [b' '; 64];
    chunk[..bytes.len()].copy_from_slice(bytes);
    token_mask(&chunk)
}

#[cfg(target_arch = "x86_64")]
#[allow(unused_unsafe)] // the intrinsics are safe fns on newer compilers
mod sse2 {
    use std::arch::x86_64::{
        __m128i, _mm_add_epi8, _mm_andnot_si128, _mm_cmpeq_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8, _mm_setzero_si128,
    };

    use super::{DIGIT, LOWER, NOT_HEX, UPPER};

    pub(super) fn token_mask(chunk: &[u8; 64]) -> u64 {
        let mut mask = 0u64;
        for (i, part) in chunk.chunks_exact(16).enumerate() {
            // SAFETY: SSE2 is part of the x86_64 baseline, so the
            // intrinsics are available; `part` is 16 readable bytes and
            // `loadu` takes an unaligned pointer.
            let bits = unsafe {
                let v = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
                // `lo <= v <= hi` as one signed compare: shifting `lo` to
                // -128 maps the range onto -128 ..= -128 + (hi - lo).
                let range = |lo: u8, hi: u8| {
                    let shifted = _mm_add_epi8(v, _mm_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
                    _mm_cmplt_epi8(
                        shifted,
                        _mm_set1_epi8(0x80u8.wrapping_add(hi - lo + 1) as i8),
                    )
                };
                let eq = |c: u8| _mm_cmpeq_epi8(v, _mm_set1_epi8(c as i8));
                let classes = _mm_or_si128(
                    _mm_or_si128(range(b'/', b'9'), range(b'A', b'Z')),
                    range(b'a', b'z'),
                );
                let symbols = _mm_or_si128(_mm_or_si128(eq(b'+'), eq(b'-')), eq(b'_'));
                _mm_movemask_epi8(_mm_or_si128(classes, symbols)) as u16
            };
            mask |= u64::from(bits) << (16 * i);
        }
        mask
    }

    /// `bytes.len() >= 16`: 16 bytes at a time, the last 16 overlapping.
    pub(super) fn classes(bytes: &[u8]) -> u8 {
        let parts = bytes.chunks_exact(16);
        let last = match parts.remainder() {
            [] => None,
            _ => bytes.get(bytes.len() - 16..),
        };
        // SAFETY: SSE2 is part of the x86_64 baseline, so the intrinsics
        // are available; every part is 16 readable bytes and `loadu`
        // takes an unaligned pointer.
        let [digit, upper, lower, not_hex] = unsafe {
            let zero = _mm_setzero_si128();
            let mut seen = [zero; 4];
            for part in parts.chain(last) {
                let v = _mm_loadu_si128(part.as_ptr().cast::<__m128i>());
                let range = |lo: u8, hi: u8| {
                    let shifted = _mm_add_epi8(v, _mm_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
                    _mm_cmplt_epi8(
                        shifted,
                        _mm_set1_epi8(0x80u8.wrapping_add(hi - lo + 1) as i8),
                    )
                };
                let d = range(b'0', b'9');
                let hex = _mm_or_si128(d, _mm_or_si128(range(b'A', b'F'), range(b'a', b'f')));
                let all = _mm_cmpeq_epi8(v, v);
                let found = [
                    d,
                    range(b'A', b'Z'),
                    range(b'a', b'z'),
                    _mm_andnot_si128(hex, all),
                ];
                for (acc, f) in seen.iter_mut().zip(found) {
                    *acc = _mm_or_si128(*acc, f);
                }
            }
            seen.map(|v| _mm_movemask_epi8(v) != 0)
        };
        [
            (digit, DIGIT),
            (upper, UPPER),
            (lower, LOWER),
            (not_hex, NOT_HEX),
        ]
        .iter()
        .fold(0, |c, &(on, class)| if on { c | class } else { c })
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256i, _mm256_add_epi8, _mm256_cmpeq_epi8, _mm256_cmpgt_epi8, _mm256_loadu_si256,
        _mm256_movemask_epi8, _mm256_or_si256, _mm256_set1_epi8,
    };

    /// # Safety
    ///
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn token_mask(chunk: &[u8; 64]) -> u64 {
        let mut mask = 0u64;
        for (i, part) in chunk.chunks_exact(32).enumerate() {
            // SAFETY: AVX2 is enabled (the caller's promise); `part` is 32
            // readable bytes and `loadu` takes an unaligned pointer.
            let bits = unsafe {
                let v = _mm256_loadu_si256(part.as_ptr().cast::<__m256i>());
                let range = |lo: u8, hi: u8| {
                    let shifted =
                        _mm256_add_epi8(v, _mm256_set1_epi8(0x80u8.wrapping_sub(lo) as i8));
                    _mm256_cmpgt_epi8(
                        _mm256_set1_epi8(0x80u8.wrapping_add(hi - lo + 1) as i8),
                        shifted,
                    )
                };
                let eq = |c: u8| _mm256_cmpeq_epi8(v, _mm256_set1_epi8(c as i8));
                let classes = _mm256_or_si256(
                    _mm256_or_si256(range(b'/', b'9'), range(b'A', b'Z')),
                    range(b'a', b'z'),
                );
                let symbols = _mm256_or_si256(_mm256_or_si256(eq(b'+'), eq(b'-')), eq(b'_'));
                _mm256_movemask_epi8(_mm256_or_si256(classes, symbols)) as u32
            };
            mask |= u64::from(bits) << (32 * i);
        }
        mask
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chunk_classifier_agrees_with_the_table() {
        for first in (0..=255u8).step_by(64) {
            let mut chunk = [0u8; 64];
            for (i, b) in chunk.iter_mut().enumerate() {
                *b = first.wrapping_add(i as u8);
            }
            let mut masks = vec![("dispatched", token_mask(&chunk))];
            #[cfg(target_arch = "x86_64")]
            {
                masks.push(("sse2", sse2::token_mask(&chunk)));
                if std::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has AVX2 (checked just above).
                    masks.push(("avx2", unsafe { avx2::token_mask(&chunk) }));
                }
            }
            for (path, mask) in masks {
                for (i, byte) in chunk.iter().enumerate() {
                    let flagged = mask >> i & 1 == 1;
                    assert_eq!(flagged, TOKEN[*byte as usize], "{path}: byte {byte:#x}");
                }
            }
        }
    }

    #[test]
    fn classes_agree_with_the_table_at_every_length() {
        let mut state = 5u64;
        let mut byte = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 56) as u8
        };
        // Every byte value alone among hex digits, and random mixes.
        for b in 0..=255u8 {
            for len in [16, 17, 31, 40] {
                let mut token = b"0123456789abcdef0123456789ABCDEF0123456789".to_vec();
                token.truncate(len);
                token[len / 2] = b;
                assert_eq!(
                    classes(&token),
                    classes_by_table(&token),
                    "{b:#x} len {len}"
                );
            }
        }
        for len in 0..200 {
            let token: Vec<u8> = (0..len).map(|_| byte() & 0x7f).collect();
            assert_eq!(classes(&token), classes_by_table(&token), "len {len}");
        }
    }
}
