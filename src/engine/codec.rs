//! The chunk encoding: Gorilla-style delta-of-delta times and, for values, either decimal
//! delta-of-delta (when every value of the chunk is exactly a decimal `m x 10^e` with one
//! `e`, as counters and most gauges are) or Gorilla XOR (otherwise: NaN payloads, -0.0,
//! values without a short decimal form). Bit-exact both ways; `migrations/0008_faster_sql_decoder.sql`
//! holds the same decoder in PL/pgSQL, so change both together.
//!
//! Layout, a bit stream, most significant bit first:
//! `count: 32 | mode: 1 | t0: 64 | interval: 64` then, for decimal values,
//! `exponent + 1024: 11 | order: 1 | m0: 64 | step: 64`, for XOR values `v0: 64`; then per
//! further sample a time code and a value code, each of the bucketed form
//! `0` (zero), `10` + b1 bits, `110` + b2, `1110` + b3, `1111` + b4 (two's complement):
//! - time: the gap to the previous sample minus `interval` (the chunk's median gap), so a
//!   regular scrape costs one bit and a few milliseconds of jitter six; buckets 4/8/16/64;
//! - decimal value: `m_i = m0 + step x r_i`; the code is r's first difference (order 0) or
//!   second difference (order 1), whichever is shorter for the chunk; buckets 5/10/20/64;
//! - XOR value: `0` (same bits), `10` + the meaningful bits within the previous window,
//!   `11` + 5 bits leading zeros + 6 bits length (0 = 64) + the bits.

/// Powers of ten a float holds exactly: `m * 10^e` and `m / 10^-e` are then one correctly
/// rounded operation, which gives back the float whose shortest decimal form is `m e`.
const EXACT_POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
    1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
];

/// Largest |m| kept as a decimal: a float holds every integer up to 2^53 exactly.
const MAX_MANTISSA: i64 = 1 << 53;

const TIME_BUCKETS: [u32; 4] = [4, 8, 16, 64];
const DECIMAL_BUCKETS: [u32; 4] = [5, 10, 20, 64];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub &'static str);

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "corrupt chunk: {}", self.0)
    }
}

struct Bits {
    bytes: Vec<u8>,
    used: u32,
}

impl Bits {
    /// Appends the low `n` bits of `value` (n <= 64), a byte at a time.
    fn put(&mut self, value: u64, n: u32) {
        let mut left = n;
        while left > 0 {
            let offset = self.used % 8;
            if offset == 0 {
                self.bytes.push(0);
            }
            let free = 8 - offset;
            let take = free.min(left);
            let part = (value >> (left - take)) & ((1u64 << take) - 1);
            if let Some(last) = self.bytes.last_mut() {
                *last |= (part as u8) << (free - take);
            }
            self.used += take;
            left -= take;
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn get(&mut self, n: u32) -> Result<u64, CodecError> {
        let mut v = 0u64;
        for _ in 0..n {
            let byte = self
                .bytes
                .get(self.pos / 8)
                .ok_or(CodecError("cut short"))?;
            v = (v << 1) | u64::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }

    /// A value written by [`put_bucketed`].
    fn bucketed(&mut self, buckets: &[u32; 4]) -> Result<i64, CodecError> {
        let mut prefix = 0;
        while prefix < 4 && self.get(1)? == 1 {
            prefix += 1;
        }
        if prefix == 0 {
            return Ok(0);
        }
        let n = buckets[prefix - 1];
        let raw = self.get(n)?;
        Ok(sign_extend(raw, n))
    }
}

fn sign_extend(raw: u64, n: u32) -> i64 {
    if n >= 64 {
        raw as i64
    } else {
        let shift = 64 - n;
        ((raw << shift) as i64) >> shift
    }
}

fn fits(x: i64, n: u32) -> bool {
    n >= 64 || (-(1i64 << (n - 1)) <= x && x < (1i64 << (n - 1)))
}

/// `0` for zero, else a prefix of ones ended by a zero (none after the fourth) and the value
/// in the first bucket that holds it.
fn put_bucketed(w: &mut Bits, x: i64, buckets: &[u32; 4]) {
    if x == 0 {
        w.put(0, 1);
        return;
    }
    for (i, &n) in buckets.iter().enumerate() {
        if fits(x, n) {
            let prefix = if i < 3 {
                ((1u64 << (i + 2)) - 2, i as u32 + 2)
            } else {
                (0b1111, 4)
            };
            w.put(prefix.0, prefix.1);
            w.put(
                if n >= 64 {
                    x as u64
                } else {
                    (x as u64) & ((1u64 << n) - 1)
                },
                n,
            );
            return;
        }
    }
}

/// Bits [`put_bucketed`] spends on `x`.
fn bucketed_bits(x: i64, buckets: &[u32; 4]) -> u64 {
    if x == 0 {
        return 1;
    }
    for (i, &n) in buckets.iter().enumerate() {
        if fits(x, n) {
            return u64::from(n) + if i < 3 { i as u64 + 2 } else { 4 };
        }
    }
    68
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The codes of `r` (r[0] = 0) for an order: first differences (0) or second (1).
fn value_codes(r: &[i64], order: u32) -> Vec<i64> {
    let mut out = Vec::with_capacity(r.len().saturating_sub(1));
    let mut prev_delta = 0i64;
    for w in r.windows(2) {
        let delta = w[1].wrapping_sub(w[0]);
        out.push(if order == 0 {
            delta
        } else {
            delta.wrapping_sub(prev_delta)
        });
        prev_delta = delta;
    }
    out
}

/// The float `m x 10^e`: one exact-operand IEEE operation when `|e| <= 22` (so it is the
/// float nearest the decimal), else the decimal parsed.
pub fn decimal_value(m: i64, e: i32) -> f64 {
    let k = e.unsigned_abs() as usize;
    match EXACT_POW10.get(k) {
        Some(p) if e >= 0 => m as f64 * p,
        Some(p) => m as f64 / p,
        None => format!("{m}e{e}").parse().unwrap_or(f64::NAN),
    }
}

/// A decimal form of `v` as (digits, exponent) with the fewest digits after the point, so
/// that `v` is the float nearest `digits x 10^exponent`; None for NaN and infinities.
/// Scaling by powers of ten finds it for the values metrics hold (integers, a few decimals)
/// without formatting; others take the shortest round-trip text.
fn shortest_decimal(v: f64) -> Option<(i64, i32)> {
    if !v.is_finite() {
        return None;
    }
    for (k, p) in EXACT_POW10.iter().enumerate().take(10) {
        let scaled = v * p;
        if scaled.abs() >= MAX_MANTISSA as f64 {
            break;
        }
        let m = scaled.round() as i64;
        let e = -(k as i32);
        if decimal_value(m, e).to_bits() == v.to_bits() {
            return Some((m, e));
        }
    }
    let text = format!("{v:e}");
    let (mantissa, exp) = text.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let (negative, mantissa) = match mantissa.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, mantissa),
    };
    let (int_part, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: i64 = format!("{int_part}{frac}").parse().ok()?;
    let e = exp - frac.len() as i32;
    Some((if negative { -digits } else { digits }, e))
}

/// The common exponent and mantissas when every value is exactly `m_i x 10^e` with
/// `|m_i| < 2^53` and decodes back to the same bits; else None.
fn as_decimals(values: &[f64]) -> Option<(i32, Vec<i64>)> {
    let forms: Vec<(i64, i32)> = values
        .iter()
        .map(|&v| shortest_decimal(v))
        .collect::<Option<_>>()?;
    let e = forms.iter().map(|f| f.1).min()?;
    let mut out = Vec::with_capacity(values.len());
    for (&(m, fe), &v) in forms.iter().zip(values) {
        let scale = 10i64.checked_pow(u32::try_from(fe - e).ok()?)?;
        let scaled = m.checked_mul(scale)?;
        if scaled.abs() >= MAX_MANTISSA || decimal_value(scaled, e).to_bits() != v.to_bits() {
            return None;
        }
        out.push(scaled);
    }
    (-1024..1024).contains(&e).then_some((e, out))
}

/// Encodes time-ordered samples (a window holds far fewer than 2^32).
pub fn encode(samples: &[(i64, f64)]) -> Vec<u8> {
    let mut w = Bits {
        bytes: Vec::with_capacity(samples.len() / 2 + 48),
        used: 0,
    };
    w.put(samples.len() as u64, 32);
    let values: Vec<f64> = samples.iter().map(|s| s.1).collect();
    let decimal = as_decimals(&values);
    w.put(u64::from(decimal.is_some()), 1);
    let mut gaps: Vec<i64> = samples
        .windows(2)
        .map(|p| p[1].0.wrapping_sub(p[0].0))
        .collect();
    let time_codes: Vec<i64> = {
        let mut sorted = gaps.clone();
        sorted.sort_unstable();
        let interval = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
        w.put(samples.first().map_or(0, |s| s.0) as u64, 64);
        w.put(interval as u64, 64);
        gaps.iter_mut().for_each(|g| *g = g.wrapping_sub(interval));
        gaps
    };
    let value_codes: Option<Vec<i64>> = decimal.map(|(e, ms)| {
        let m0 = ms.first().copied().unwrap_or(0);
        let step = ms
            .iter()
            .fold(0u64, |g, &m| gcd(g, m.wrapping_sub(m0).unsigned_abs()))
            .max(1);
        let r: Vec<i64> = ms
            .iter()
            .map(|&m| (m.wrapping_sub(m0) as i128 / i128::from(step)) as i64)
            .collect();
        let by_order: Vec<Vec<i64>> = (0..2).map(|o| value_codes(&r, o)).collect();
        let cost = |codes: &Vec<i64>| -> u64 {
            codes
                .iter()
                .map(|&c| bucketed_bits(c, &DECIMAL_BUCKETS))
                .sum()
        };
        let order = usize::from(cost(&by_order[1]) < cost(&by_order[0]));
        w.put((e + 1024) as u64, 11);
        w.put(order as u64, 1);
        w.put(m0 as u64, 64);
        w.put(step, 64);
        by_order.into_iter().nth(order).unwrap_or_default()
    });
    let (mut v_prev, mut lead, mut trail) = (0u64, 0xffu32, 0u32);
    for (i, &(_, v)) in samples.iter().enumerate() {
        if i > 0 {
            put_bucketed(&mut w, time_codes[i - 1], &TIME_BUCKETS);
        }
        match &value_codes {
            Some(codes) => {
                if i > 0 {
                    put_bucketed(&mut w, codes[i - 1], &DECIMAL_BUCKETS);
                }
            }
            None => {
                let bits = v.to_bits();
                if i == 0 {
                    w.put(bits, 64);
                } else {
                    let x = bits ^ v_prev;
                    if x == 0 {
                        w.put(0, 1);
                    } else {
                        let (l, tz) = (x.leading_zeros().min(31), x.trailing_zeros());
                        if lead != 0xff && l >= lead && tz >= trail {
                            w.put(0b10, 2);
                            w.put(x >> trail, 64 - lead - trail);
                        } else {
                            lead = l;
                            trail = tz;
                            let len = 64 - l - tz;
                            w.put(0b11, 2);
                            w.put(u64::from(l), 5);
                            w.put(u64::from(len % 64), 6);
                            w.put(x >> tz, len);
                        }
                    }
                }
                v_prev = bits;
            }
        }
    }
    w.bytes
}

/// Decodes a chunk; never panics on corrupt input.
pub fn decode(data: &[u8]) -> Result<Vec<(i64, f64)>, CodecError> {
    let mut r = Reader {
        bytes: data,
        pos: 0,
    };
    let n = r.get(32)? as usize;
    if n > 1 + data.len().saturating_mul(4) {
        return Err(CodecError("count larger than the data"));
    }
    let decimal = r.get(1)? == 1;
    let mut t = r.get(64)? as i64;
    let interval = r.get(64)? as i64;
    let (mut e, mut second_order, mut m0, mut step) = (0i32, false, 0i64, 1i64);
    if decimal {
        e = r.get(11)? as i32 - 1024;
        second_order = r.get(1)? == 1;
        m0 = r.get(64)? as i64;
        step = r.get(64)? as i64;
    }
    let mut out = Vec::with_capacity(n);
    let (mut reduced, mut delta) = (0i64, 0i64);
    let (mut bits, mut lead, mut trail) = (0u64, 0u32, 0u32);
    for i in 0..n {
        if i > 0 {
            t = t
                .wrapping_add(interval)
                .wrapping_add(r.bucketed(&TIME_BUCKETS)?);
        }
        let v = if decimal {
            if i > 0 {
                let code = r.bucketed(&DECIMAL_BUCKETS)?;
                if second_order {
                    delta = delta.wrapping_add(code);
                    reduced = reduced.wrapping_add(delta);
                } else {
                    reduced = reduced.wrapping_add(code);
                }
            }
            decimal_value(m0.wrapping_add(step.wrapping_mul(reduced)), e)
        } else {
            if i == 0 {
                bits = r.get(64)?;
            } else if r.get(1)? == 1 {
                if r.get(1)? == 1 {
                    lead = r.get(5)? as u32;
                    let mut len = r.get(6)? as u32;
                    if len == 0 {
                        len = 64;
                    }
                    trail = 64u32
                        .checked_sub(lead + len)
                        .ok_or(CodecError("bad value window"))?;
                }
                let len = 64 - lead - trail;
                if len == 0 {
                    return Err(CodecError("bad value window"));
                }
                bits ^= r.get(len)?.checked_shl(trail).unwrap_or(0);
            }
            f64::from_bits(bits)
        };
        out.push((t, v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(samples: &[(i64, f64)]) -> usize {
        let data = encode(samples);
        let back = decode(&data).expect("decodes");
        assert_eq!(back.len(), samples.len());
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!(a.0, b.0, "time");
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "value {} vs {}", a.1, b.1);
        }
        data.len()
    }

    #[test]
    fn decimal_values_round_trip_and_are_small() {
        let t0 = 1_765_000_000_000i64;
        let counter: Vec<(i64, f64)> = (0..480)
            .map(|k| {
                (
                    t0 + k * 15_000 + (k * 7919 % 5),
                    (123_456 + 37 * k) as f64 / 100.0,
                )
            })
            .collect();
        let size = round_trip(&counter);
        assert!(size < 480 * 3, "{size} bytes");
        let constant: Vec<(i64, f64)> = (0..480).map(|k| (t0 + k * 15_000, 4096.0)).collect();
        assert!(round_trip(&constant) < 170);
        round_trip(&[
            (t0, 0.1 + 0.2),
            (t0 + 1, 1e-300),
            (t0 + 2, 123456789.123),
            (t0 + 3, -5.0),
        ]);
        round_trip(&[(t0, 1e300), (t0 + 15, 2e300), (t0 + 30, 1.5e-7)]);
    }

    #[test]
    fn special_values_fall_back_to_xor_bit_exact() {
        let t0 = -1_000i64;
        round_trip(&[
            (t0, f64::from_bits(0x7ff0_0000_0000_0002)),
            (t0 + 15_000, -0.0),
            (t0 + 30_000, f64::INFINITY),
            (t0 + 45_000, f64::MIN_POSITIVE / 3.0),
            (t0 + 45_001, 0.0),
            (i64::MAX, f64::NEG_INFINITY),
            (i64::MIN, 7.0),
        ]);
        round_trip(&[]);
        round_trip(&[(5, -0.0)]);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let random: Vec<(i64, f64)> = (0..1000)
            .map(|k| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (k * 15_000 + (x % 1000) as i64, f64::from_bits(x))
            })
            .collect();
        round_trip(&random);
    }

    #[test]
    fn a_window_of_more_than_65535_samples_keeps_them_all() {
        let dense: Vec<(i64, f64)> = (0..70_000).map(|k| (k * 100, (k % 17) as f64)).collect();
        round_trip(&dense);
    }

    #[test]
    fn corrupt_input_is_an_error_not_a_panic() {
        let data = encode(&[(1000, 1.5), (2000, 2.5), (3000, 4.0)]);
        for cut in 0..data.len() {
            let _ = decode(&data[..cut]);
        }
        let mut x = 1u64;
        for _ in 0..3000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let junk: Vec<u8> = (0..(x % 48) as usize)
                .map(|i| (x >> (i % 8 * 8)) as u8)
                .collect();
            let _ = decode(&junk);
        }
    }
}
