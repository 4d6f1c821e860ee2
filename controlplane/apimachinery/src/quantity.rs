//! Resource quantities (`500m`, `128Mi`, `1.5`, `1e3`): parsing, exact arithmetic in nano-units, and the
//! canonical text upstream writes back.

use std::fmt;

/// A quantity as an exact count of 10^-9 units (enough for every suffix upstream accepts, `n` included),
/// remembering whether it was written with a binary suffix so that it prints back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Quantity {
    nanos: i128,
    format: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Format {
    #[default]
    DecimalSI,
    BinarySI,
    DecimalExponent,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)]
pub struct ParseError;

const NANO: i128 = 1_000_000_000;

impl Quantity {
    pub fn parse(text: &str) -> Result<Quantity, ParseError> {
        let s = text.trim();
        if s.is_empty() {
            return Err(ParseError);
        }
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(ParseError);
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        // digits as an integer and a power of ten
        let digits = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 30 {
            return Err(ParseError);
        }
        let mantissa: i128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| ParseError)?
        };
        let mut exp10: i32 = -(frac_part.len() as i32);
        let mut binary: u32 = 0;
        let format = match suffix {
            "" => Format::DecimalSI,
            "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
                binary = 10 * (1 + "KMGTPE".find(&suffix[..1]).expect("listed") as u32);
                Format::BinarySI
            }
            "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => {
                exp10 += match suffix {
                    "n" => -9,
                    "u" => -6,
                    "m" => -3,
                    "k" => 3,
                    "M" => 6,
                    "G" => 9,
                    "T" => 12,
                    "P" => 15,
                    _ => 18,
                };
                Format::DecimalSI
            }
            s if s.starts_with(['e', 'E']) => {
                let e: i32 = s[1..].parse().map_err(|_| ParseError)?;
                if e.abs() > 40 {
                    return Err(ParseError);
                }
                exp10 += e;
                Format::DecimalExponent
            }
            _ => return Err(ParseError),
        };
        // nanos = mantissa * 10^(exp10 + 9) * 2^binary, rounded up (as upstream rounds up sub-nano values)
        let mut value = mantissa.checked_mul(1i128 << binary).ok_or(ParseError)?;
        let shift = exp10 + 9;
        if shift >= 0 {
            value = value
                .checked_mul(10i128.checked_pow(shift as u32).ok_or(ParseError)?)
                .ok_or(ParseError)?;
        } else {
            let div = 10i128.checked_pow((-shift) as u32).ok_or(ParseError)?;
            value = (value + div - 1) / div;
        }
        if value > (i64::MAX as i128) * NANO {
            return Err(ParseError);
        }
        Ok(Quantity {
            nanos: if negative { -value } else { value },
            format,
        })
    }

    pub fn from_milli(milli: i128) -> Quantity {
        Quantity {
            nanos: milli * 1_000_000,
            format: Format::DecimalSI,
        }
    }

    pub fn from_value(value: i128, format: Format) -> Quantity {
        Quantity {
            nanos: value * NANO,
            format,
        }
    }

    /// The value in thousandths, rounded up (CPU is counted this way).
    pub fn milli(&self) -> i128 {
        div_ceil(self.nanos, 1_000_000)
    }

    /// The value in whole units, rounded up (memory, storage and counts are counted this way).
    pub fn value(&self) -> i128 {
        div_ceil(self.nanos, NANO)
    }

    pub fn is_zero(&self) -> bool {
        self.nanos == 0
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn add(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos + other.nanos,
            format: self.format,
        }
    }

    pub fn sub(&self, other: &Quantity) -> Quantity {
        Quantity {
            nanos: self.nanos - other.nanos,
            format: self.format,
        }
    }

    pub fn cmp_value(&self, other: &Quantity) -> std::cmp::Ordering {
        self.nanos.cmp(&other.nanos)
    }
}

fn div_ceil(a: i128, b: i128) -> i128 {
    let q = a / b;
    if a % b != 0 && a > 0 {
        q + 1
    } else {
        q
    }
}

impl fmt::Display for Quantity {
    /// Upstream's canonical form: the largest suffix that keeps the value whole, in the format it was written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            return f.write_str("0");
        }
        let sign = if self.nanos < 0 { "-" } else { "" };
        let n = self.nanos.abs();
        if self.format == Format::BinarySI && n % NANO == 0 {
            let mut v = n / NANO;
            let mut i = 0;
            while i < 6 && v % 1024 == 0 {
                v /= 1024;
                i += 1;
            }
            if i > 0 {
                return write!(f, "{sign}{v}{}i", &"KMGTPE"[i - 1..i]);
            }
            // Not a whole number of Ki: falls back to decimal, as upstream does.
        }
        // Decimal: n nanos = v * 10^e with e a multiple of 3 between -9 and 18.
        let suffixes = ["n", "u", "m", "", "k", "M", "G", "T", "P", "E"];
        let mut v = n;
        let mut i = 0;
        while i + 1 < suffixes.len() && v % 1000 == 0 {
            v /= 1000;
            i += 1;
        }
        if self.format == Format::DecimalExponent && i != 3 {
            return write!(f, "{sign}{v}e{}", 3 * i as i32 - 9);
        }
        write!(f, "{sign}{v}{}", suffixes[i])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Quantity {
        Quantity::parse(s).unwrap()
    }

    #[test]
    fn parses_every_suffix_exactly() {
        assert_eq!(q("500m").milli(), 500);
        assert_eq!(q("1.5").milli(), 1500);
        assert_eq!(q("2").value(), 2);
        assert_eq!(q("128Mi").value(), 128 << 20);
        assert_eq!(q("1Gi").value(), 1 << 30);
        assert_eq!(q("1k").value(), 1000);
        assert_eq!(q("1e3").value(), 1000);
        assert_eq!(q("1E-3").milli(), 1);
        assert_eq!(q("100n").milli(), 1, "rounds up");
        assert_eq!(q("-2").value(), -2);
        assert_eq!(q("0.1m").milli(), 1);
        for bad in ["", "m", "1x", "1..0", "abc", "1Ki5", "--1"] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prints_the_canonical_form() {
        assert_eq!(q("1.5").to_string(), "1500m");
        assert_eq!(q("1536Mi").to_string(), "1536Mi");
        assert_eq!(q("1024Mi").to_string(), "1Gi");
        assert_eq!(q("1000m").to_string(), "1");
        assert_eq!(q("2000").to_string(), "2k");
        assert_eq!(q("0").to_string(), "0");
        assert_eq!(q("500m").add(&q("1")).to_string(), "1500m");
    }
}
