//! Kubernetes resource quantities (`100m`, `1.5`, `64Mi`, `1G`, `1e3`) as numbers: CPU in millicores,
//! everything else in whole units (bytes), rounded up as the apiserver rounds.

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("quantity {0:?}: not a Kubernetes quantity")]
pub struct QuantityError(pub String);

/// The value times 1000, rounded up (for CPU: millicores).
pub fn milli(q: &str) -> Result<i64, QuantityError> {
    scaled(q, 3)
}

/// The value, rounded up (for memory and storage: bytes).
pub fn units(q: &str) -> Result<i64, QuantityError> {
    scaled(q, 0)
}

fn scaled(q: &str, extra_decimal: i32) -> Result<i64, QuantityError> {
    let err = || QuantityError(q.to_owned());
    let s = q.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    if num.is_empty() {
        return Err(err());
    }
    let (binary, decimal): (u32, i32) = match suffix {
        "" => (0, 0),
        "Ki" => (10, 0),
        "Mi" => (20, 0),
        "Gi" => (30, 0),
        "Ti" => (40, 0),
        "Pi" => (50, 0),
        "Ei" => (60, 0),
        "n" => (0, -9),
        "u" => (0, -6),
        "m" => (0, -3),
        "k" => (0, 3),
        "M" => (0, 6),
        "G" => (0, 9),
        "T" => (0, 12),
        "P" => (0, 15),
        "E" => (0, 18),
        e if e.starts_with('e') || e.starts_with('E') => {
            (0, e[1..].parse::<i32>().map_err(|_| err())?)
        }
        _ => return Err(err()),
    };
    // Exact decimal arithmetic on the digits: i128 mantissa and a power-of-ten exponent.
    let negative = num.starts_with('-');
    let digits = num.trim_start_matches(['+', '-']);
    let (int, frac) = digits.split_once('.').unwrap_or((digits, ""));
    if int.is_empty() && frac.is_empty() {
        return Err(err());
    }
    let mut mantissa: i128 = format!("{int}{frac}").parse().map_err(|_| err())?;
    let mut exp = decimal + extra_decimal - frac.len() as i32;
    mantissa = mantissa.checked_mul(1i128 << binary).ok_or_else(err)?;
    while exp > 0 {
        mantissa = mantissa.checked_mul(10).ok_or_else(err)?;
        exp -= 1;
    }
    let mut rem = false;
    while exp < 0 {
        rem |= mantissa % 10 != 0;
        mantissa /= 10;
        exp += 1;
    }
    if rem {
        mantissa += 1;
    }
    let v = i64::try_from(mantissa).map_err(|_| err())?;
    Ok(if negative { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(milli("100m").unwrap(), 100);
        assert_eq!(milli("1").unwrap(), 1000);
        assert_eq!(milli("1.5").unwrap(), 1500);
        assert_eq!(milli("0.0001").unwrap(), 1);
        assert_eq!(units("64Mi").unwrap(), 64 << 20);
        assert_eq!(units("1G").unwrap(), 1_000_000_000);
        assert_eq!(units("1e3").unwrap(), 1000);
        assert_eq!(units("128974848").unwrap(), 128974848);
        assert_eq!(units("129e6").unwrap(), 129_000_000);
        assert_eq!(units("1.5Ki").unwrap(), 1536);
        assert!(units("12 apples").is_err());
        assert!(units("").is_err());
        assert!(units("Mi").is_err());
    }
}
