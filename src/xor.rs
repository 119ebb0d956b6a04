//! Prometheus TSDB XOR ("Gorilla") chunks and the framing of streamed remote-read responses,
//! byte-compatible with prometheus/prometheus `tsdb/chunkenc/xor.go` and
//! `storage/remote/chunked.go`.

/// A chunk holds at most this many samples (Prometheus cuts its chunks at 120).
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

struct BitWriter {
    bytes: Vec<u8>,
    /// Bits still free in the last byte.
    free: u8,
}

impl BitWriter {
    fn new() -> Self {
        BitWriter {
            bytes: Vec::new(),
            free: 0,
        }
    }

    fn bit(&mut self, one: bool) {
        if self.free == 0 {
            self.bytes.push(0);
            self.free = 8;
        }
        self.free -= 1;
        if one {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 1 << self.free;
            }
        }
    }

    /// Writes the low `n` bits of `value`, most significant first.
    fn bits(&mut self, value: u64, n: u32) {
        for i in (0..n).rev() {
            self.bit((value >> i) & 1 == 1);
        }
    }

    fn byte(&mut self, b: u8) {
        self.bits(u64::from(b), 8);
    }
}

/// Encodes samples (time-ordered) as one XOR chunk: a big-endian u16 sample count, then the
/// bit stream.
pub fn encode_chunk(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut w = BitWriter::new();
    w.bits(samples.len() as u64, 16);
    let (mut t, mut v, mut t_delta) = (0i64, 0f64, 0u64);
    let (mut leading, mut trailing) = (0xffu8, 0u8);
    for (i, &(ts, value)) in samples.iter().enumerate() {
        match i {
            0 => {
                for b in varint(ts) {
                    w.byte(b);
                }
                w.bits(value.to_bits(), 64);
            }
            1 => {
                t_delta = ts.wrapping_sub(t) as u64;
                for b in uvarint(t_delta) {
                    w.byte(b);
                }
                write_value(&mut w, value, v, &mut leading, &mut trailing);
            }
            _ => {
                let delta = ts.wrapping_sub(t) as u64;
                let dod = delta.wrapping_sub(t_delta) as i64;
                if dod == 0 {
                    w.bit(false);
                } else if bit_range(dod, 14) {
                    w.bits(0b10, 2);
                    w.bits(dod as u64, 14);
                } else if bit_range(dod, 17) {
                    w.bits(0b110, 3);
                    w.bits(dod as u64, 17);
                } else if bit_range(dod, 20) {
                    w.bits(0b1110, 4);
                    w.bits(dod as u64, 20);
                } else {
                    w.bits(0b1111, 4);
                    w.bits(dod as u64, 64);
                }
                t_delta = delta;
                write_value(&mut w, value, v, &mut leading, &mut trailing);
            }
        }
        t = ts;
        v = value;
    }
    w.bytes
}

fn bit_range(x: i64, nbits: u32) -> bool {
    -((1i64 << (nbits - 1)) - 1) <= x && x <= 1i64 << (nbits - 1)
}

fn write_value(w: &mut BitWriter, value: f64, previous: f64, leading: &mut u8, trailing: &mut u8) {
    let delta = value.to_bits() ^ previous.to_bits();
    if delta == 0 {
        w.bit(false);
        return;
    }
    w.bit(true);
    let new_leading = (delta.leading_zeros() as u8).min(31);
    let new_trailing = delta.trailing_zeros() as u8;
    if *leading != 0xff && new_leading >= *leading && new_trailing >= *trailing {
        w.bit(false);
        w.bits(
            delta >> *trailing,
            64 - u32::from(*leading) - u32::from(*trailing),
        );
        return;
    }
    *leading = new_leading;
    *trailing = new_trailing;
    w.bit(true);
    w.bits(u64::from(new_leading), 5);
    let significant = 64 - u32::from(new_leading) - u32::from(new_trailing);
    // 64 significant bits are written as 0 in six bits, as Prometheus does.
    w.bits(u64::from(significant), 6);
    w.bits(delta >> new_trailing, significant);
}

fn uvarint(mut x: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(10);
    while x >= 0x80 {
        out.push((x as u8) | 0x80);
        x >>= 7;
    }
    out.push(x as u8);
    out
}

/// Go's `binary.PutVarint`: zig-zag, then unsigned varint.
fn varint(x: i64) -> Vec<u8> {
    uvarint(((x << 1) ^ (x >> 63)) as u64)
}

/// Why a chunk could not be decoded (it is cut short or claims more than it holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkError(pub &'static str);

impl std::fmt::Display for ChunkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt XOR chunk: {}", self.0)
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl BitReader<'_> {
    fn bit(&mut self) -> Result<bool, ChunkError> {
        let byte = self
            .bytes
            .get(self.pos >> 3)
            .ok_or(ChunkError("cut short"))?;
        let one = (byte >> (7 - (self.pos & 7))) & 1 == 1;
        self.pos += 1;
        Ok(one)
    }

    /// `n` (<= 64) bits, most significant first.
    fn bits(&mut self, n: u32) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = *self
                .bytes
                .get(self.pos >> 3)
                .ok_or(ChunkError("cut short"))?;
            let avail = 8 - (self.pos & 7) as u32;
            let take = avail.min(left);
            let part = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            v = if take == 64 { part } else { (v << take) | part };
            self.pos += take as usize;
            left -= take;
        }
        Ok(v)
    }

    fn uvarint(&mut self) -> Result<u64, ChunkError> {
        let mut x = 0u64;
        for shift in (0..70).step_by(7) {
            let b = self.bits(8)?;
            x |= (b & 0x7f).checked_shl(shift).unwrap_or(0);
            if b < 0x80 {
                return Ok(x);
            }
        }
        Err(ChunkError("varint too long"))
    }
}

/// Decodes a chunk written by [`encode_chunk`] (or by Prometheus) into its samples, in
/// order. Never panics on corrupt input.
pub fn decode_chunk(data: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    let mut r = BitReader {
        bytes: data,
        pos: 0,
    };
    let total = r.bits(16)? as usize;
    // Each sample after the first takes at least 2 bits: a count beyond that is corrupt.
    if total > 1 + data.len().saturating_mul(4) {
        return Err(ChunkError("count larger than the data"));
    }
    let mut out = Vec::with_capacity(total);
    let (mut t, mut delta, mut bits) = (0i64, 0i64, 0u64);
    let (mut leading, mut trailing) = (0u32, 0u32);
    for i in 0..total {
        match i {
            0 => {
                let z = r.uvarint()?;
                t = ((z >> 1) as i64) ^ -((z & 1) as i64);
                bits = r.bits(64)?;
            }
            _ => {
                if i == 1 {
                    delta = r.uvarint()? as i64;
                } else {
                    let mut size = 0u32;
                    if r.bit()? {
                        size = if !r.bit()? {
                            14
                        } else if !r.bit()? {
                            17
                        } else if !r.bit()? {
                            20
                        } else {
                            64
                        };
                    }
                    if size > 0 {
                        let mut dod = r.bits(size)? as i64;
                        if size < 64 && dod > 1i64 << (size - 1) {
                            dod -= 1i64 << size;
                        }
                        delta = delta.wrapping_add(dod);
                    }
                }
                t = t.wrapping_add(delta);
                if r.bit()? {
                    if r.bit()? {
                        leading = r.bits(5)? as u32;
                        let mut significant = r.bits(6)? as u32;
                        if significant == 0 {
                            significant = 64;
                        }
                        trailing = 64u32
                            .checked_sub(leading + significant)
                            .ok_or(ChunkError("bad value window"))?;
                    }
                    let significant = 64 - leading - trailing;
                    if significant == 0 {
                        return Err(ChunkError("bad value window"));
                    }
                    bits ^= r.bits(significant)?.checked_shl(trailing).unwrap_or(0);
                }
            }
        }
        out.push((t, f64::from_bits(bits)));
    }
    Ok(out)
}

/// One frame of a streamed response: uvarint length, big-endian CRC-32C of the payload, the
/// payload.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = uvarint(payload.len() as u64);
    out.extend_from_slice(&crc32c(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// CRC-32C (Castagnoli), as Go's `crc32.MakeTable(crc32.Castagnoli)`.
pub fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut crc = !0u32;
    for &b in data {
        crc = table[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_answer() {
        // RFC 3720 test vector: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn chunks_round_trip_bit_exact() {
        let stale = f64::from_bits(0x7ff0_0000_0000_0002);
        let mut samples = vec![
            (1_700_000_000_000, 1.0),
            (1_700_000_015_000, -0.0),
            (1_700_000_030_000, stale),
            (1_700_000_045_001, f64::INFINITY),
            (1_700_000_059_000, f64::MIN_POSITIVE / 3.0),
            (1_700_000_075_000, 12345.678),
            (1_700_000_075_001, 12345.679),
            (1_700_000_900_000, f64::NEG_INFINITY),
            (1_700_900_000_000, 0.0),
            (-5, 1e300),
        ];
        for k in 0..300 {
            samples.push((1_701_000_000_000 + k * 15_000, (k as f64 * 0.37).sin()));
        }
        let data = encode_chunk(&samples);
        let back = decode_chunk(&data).expect("decodes");
        assert_eq!(back.len(), samples.len());
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits());
        }
    }

    #[test]
    fn corrupt_chunks_are_errors_not_panics() {
        let data = encode_chunk(&[(1000, 1.0), (2000, 2.0), (3000, 4.0)]);
        for cut in 0..data.len() {
            let _ = decode_chunk(&data[..cut]);
        }
        assert!(decode_chunk(&[0xff, 0xff, 1, 2, 3]).is_err());
        let mut x = 1u64;
        for _ in 0..2000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let junk: Vec<u8> = (0..(x % 40) as usize)
                .map(|i| (x >> (i % 8 * 8)) as u8)
                .collect();
            let _ = decode_chunk(&junk);
        }
    }

    #[test]
    fn chunk_header_and_first_sample() {
        let c = encode_chunk(&[(1000, 1.0)]);
        assert_eq!(&c[..2], &[0, 1]);
        // zig-zag varint of 1000 = 2000 -> d0 0f
        assert_eq!(&c[2..4], &[0xd0, 0x0f]);
        assert_eq!(&c[4..12], &1.0f64.to_bits().to_be_bytes());
    }
}
