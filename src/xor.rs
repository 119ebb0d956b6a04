//! Prometheus TSDB XOR ("Gorilla") chunks and the framing of streamed remote-read responses,
//! byte-compatible with prometheus/prometheus `tsdb/chunkenc/xor.go` and
//! `storage/remote/chunked.go`.

/// A chunk holds at most this many samples (Prometheus cuts its chunks at 120).
pub const MAX_SAMPLES_PER_CHUNK: usize = 120;

/// chunkenc `bstream` for writing: bits most significant first. Shared with the histogram
/// chunk encodings (`histogram_chunk`), which write the same stream.
pub(crate) struct BitWriter {
    pub(crate) bytes: Vec<u8>,
    /// Bits still free in the last byte.
    free: u32,
}

impl BitWriter {
    pub(crate) fn new() -> Self {
        BitWriter {
            bytes: Vec::new(),
            free: 0,
        }
    }

    pub(crate) fn bit(&mut self, one: bool) {
        self.bits(u64::from(one), 1);
    }

    pub(crate) fn byte(&mut self, b: u8) {
        self.bits(u64::from(b), 8);
    }

    /// Writes the low `n` (at most 64) bits of `value`, most significant first.
    pub(crate) fn bits(&mut self, value: u64, mut n: u32) {
        while n > 0 {
            if self.free == 0 {
                self.bytes.push(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            let part = ((value >> (n - take)) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.bytes.last_mut() {
                *last |= part << (self.free - take);
            }
            self.free -= take;
            n -= take;
        }
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

/// chunkenc `bitRange`: whether `x` fits the `nbits` two's-complement range the time and
/// varbit encodings use.
pub(crate) fn bit_range(x: i64, nbits: u32) -> bool {
    -((1i64 << (nbits - 1)) - 1) <= x && x <= 1i64 << (nbits - 1)
}

/// chunkenc `xorWrite`: the Gorilla float encoding of XOR chunks, also used for the values of
/// float histogram chunks.
pub(crate) fn write_value(
    w: &mut BitWriter,
    value: f64,
    previous: f64,
    leading: &mut u8,
    trailing: &mut u8,
) {
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
    fn chunk_header_and_first_sample() {
        let c = encode_chunk(&[(1000, 1.0)]);
        assert_eq!(&c[..2], &[0, 1]);
        // zig-zag varint of 1000 = 2000 -> d0 0f
        assert_eq!(&c[2..4], &[0xd0, 0x0f]);
        assert_eq!(&c[4..12], &1.0f64.to_bits().to_be_bytes());
    }
}
